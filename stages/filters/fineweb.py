"""FineWeb's own quality rules (Penedo et al. 2024), decided as its reference implementation
(datatrove's FineWebQualityFilter) decides them, with the published thresholds: too few lines
ending in terminal punctuation, too many short lines, too many characters in repeated lines, too
many line breaks per word. Lines are the non-blank lines and line breaks are counted between
them, so blank lines between paragraphs change nothing (see `Doc`)."""

from __future__ import annotations

from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc, count_duplicates
from slimpipe.stages.filters.words import TERMINAL_PUNCTUATION


class FineWebQuality(Filter):
    name = "fineweb"

    def __init__(
        self,
        line_punct_thr: float,
        line_punct_exclude_zero: bool,
        short_line_thr: float,
        short_line_length: int,
        char_dup_ratio: float,
        new_line_ratio: float,
    ):
        self.line_punct_thr, self.line_punct_exclude_zero = line_punct_thr, line_punct_exclude_zero
        self.short_line_thr, self.short_line_length = short_line_thr, short_line_length
        self.char_dup_ratio, self.new_line_ratio = char_dup_ratio, new_line_ratio
        self.stop_chars = tuple(TERMINAL_PUNCTUATION)

    def check(self, doc: Doc) -> Rejection | None:
        lines = doc.lines
        if not lines:
            return self.reject("empty", 0, "the text has no visible characters")
        ratio = sum(1 for line in lines if line.endswith(self.stop_chars)) / len(lines)
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return self.reject(
                "line_punct_ratio",
                ratio,
                f"{ratio:.0%} of lines end in terminal punctuation, under {self.line_punct_thr:.0%}",
            )
        ratio = sum(1 for line in lines if len(line) <= self.short_line_length) / len(lines)
        if ratio > self.short_line_thr:
            return self.reject(
                "short_line_ratio", ratio, f"{ratio:.0%} of lines have at most {self.short_line_length} characters"
            )
        ratio = count_duplicates(lines)[1] / (doc.size - len(lines) + 1)
        if ratio > self.char_dup_ratio:
            return self.reject("char_dup_ratio", ratio, f"{ratio:.1%} of characters in repeated lines")
        ratio = (len(lines) - 1) / len(doc.words)
        if ratio > self.new_line_ratio:
            return self.reject("list_ratio", ratio, f"{ratio:.2f} line breaks per word")
        return None
