"""FineWeb's own quality rules (Penedo et al. 2024), with their published thresholds."""
from __future__ import annotations

from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc, count_duplicates

STOP_CHARS = (".", "'", '"', "!", "?")


class FineWebQuality(Filter):
    name = "fineweb"

    def __init__(self, line_punct_thr: float = 0.12, line_punct_exclude_zero: bool = False,
                 short_line_thr: float = 0.67, short_line_length: int = 30,
                 char_dup_ratio: float = 0.01, new_line_ratio: float = 0.3):
        self.line_punct_thr, self.line_punct_exclude_zero = line_punct_thr, line_punct_exclude_zero
        self.short_line_thr, self.short_line_length = short_line_thr, short_line_length
        self.char_dup_ratio, self.new_line_ratio = char_dup_ratio, new_line_ratio

    def check(self, doc: Doc) -> Rejection | None:
        lines = doc.lines
        ratio = sum(1 for line in lines if line.endswith(STOP_CHARS)) / len(lines)
        if ratio <= self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return self.reject("line_punct_ratio", ratio, f"{ratio:.0%} of lines end in punctuation")
        ratio = sum(1 for line in lines if len(line) <= self.short_line_length) / len(lines)
        if ratio >= self.short_line_thr:
            return self.reject("short_line_ratio", ratio,
                               f"{ratio:.0%} of lines have at most {self.short_line_length} characters")
        chars = len(doc.text) - doc.text.count("\n")
        dup_chars = count_duplicates([line for line in lines if line.strip()])[1]
        ratio = dup_chars / chars if chars else 0.0
        if ratio >= self.char_dup_ratio:
            return self.reject("char_dup_ratio", ratio, f"{ratio:.1%} of characters in repeated lines")
        words = len(doc.words)
        ratio = doc.text.count("\n") / words if words else float(doc.text.count("\n") > 0)
        if ratio > self.new_line_ratio:
            return self.reject("list_ratio", ratio, f"{ratio:.2f} line breaks per word")
        return None
