"""What every filter is: a small class with one rule set, a name, and per document either no
objection or a Rejection that says which rule, the value it measured and why."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from slimpipe.stages.filters.doc import Doc


@dataclass(frozen=True)
class Rejection:
    reason: str  # "<filter>.<rule>", e.g. "gopher_quality.too_few_words"
    value: float  # what the rule measured
    detail: str  # a sentence for people


class Filter(ABC):
    name: str = ""
    # Columns the filter computes for a whole batch at once (see `annotate`) and keeps.
    annotations: tuple[str, ...] = ()

    def annotate(self, texts: list[str]) -> dict[str, list]:
        """Per-batch work (a model's predictions): a list per name in `annotations`."""
        return {}

    @abstractmethod
    def check(self, doc: Doc) -> Rejection | None:
        """None keeps the document; a Rejection drops it."""

    def edit(self, doc: Doc) -> str | None:
        """The new text of a document this filter keeps but rewrites (C4's line removal), or
        None to leave it as it is."""
        return None

    def reject(self, rule: str, value: float, detail: str) -> Rejection:
        return Rejection(f"{self.name}.{rule}", float(value), detail)
