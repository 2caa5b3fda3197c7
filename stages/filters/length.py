"""SlimPajama's length rule."""

from __future__ import annotations

from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc


class LengthFilter(Filter):
    """Drop documents under `min_chars` characters once lower-cased, stripped of punctuation and
    with whitespace collapsed (the normalise stage's `norm_chars`)."""

    name = "length"

    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def check(self, doc: Doc) -> Rejection | None:
        if doc.norm_chars < self.min_chars:
            return self.reject(
                "too_short",
                doc.norm_chars,
                f"{doc.norm_chars} normalised characters, under the minimum of {self.min_chars}",
            )
        return None
