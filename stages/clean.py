"""Clean stage: repair text the way SlimPajama did (ftfy, NFC), then normalise layout: line
endings, control characters other than newline and tab, trailing spaces, runs of blank lines.

ftfy is the slow part (about 4 MB/s per core), and most web text is lines it provably leaves
alone. `fix_text` below reproduces `ftfy.fix_text` segment by segment and hands ftfy only the
segments that contain something ftfy can act on; a test shows the two agree.
"""
from __future__ import annotations

import re

import ftfy
import pyarrow as pa
import pyarrow.compute as pc

# Characters no ftfy fixer touches when a segment consists of nothing else: printable ASCII
# without "&" (HTML entities), plus tab and newline. Everything else (non-ASCII, "&", CR, ESC and
# other control characters) sends the segment through ftfy.
_FTFY_MAY_CHANGE = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")

_CR = re.compile(r"\r\n?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TRAILING_SPACE = re.compile(r"[^\S\n]+(?=\n|\Z)")
_NEEDS_LAYOUT = re.compile(r"[\r\x00-\x08\x0b-\x1f\x7f-\x9f]|[^\S\n]\n|[^\S\n]\Z|\n\n\n|\A\n|\n\Z")


def fix_text(text: str, config: ftfy.TextFixerConfig) -> str:
    """Exactly `ftfy.fix_text(text, config)`, without running ftfy where it would change nothing."""
    if not _FTFY_MAY_CHANGE.search(text):
        return text
    out = []
    pos = 0
    n = len(text)
    while pos < n:
        brk = text.find("\n", pos) + 1 or n
        if brk - pos > config.max_decode_length:
            brk = pos + config.max_decode_length
        segment = text[pos:brk]
        # ftfy stops unescaping HTML for the rest of the text at the first segment with a "<".
        if config.unescape_html == "auto" and "<" in segment:
            config = config._replace(unescape_html=False)
        if _FTFY_MAY_CHANGE.search(segment):
            segment = ftfy.fix_and_explain(segment, config)[0]
        out.append(segment)
        pos = brk
    return "".join(out)


def normalize_layout(text: str, max_blank_lines: int) -> str:
    if not _NEEDS_LAYOUT.search(text) and "\n" * (max_blank_lines + 2) not in text:
        return text
    text = _CR.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    text = re.sub("\n{%d,}" % (max_blank_lines + 2), "\n" * (max_blank_lines + 1), text)
    return text.strip("\n")


class Cleaner:
    """Applies the clean config to the `text` column of rows not yet rejected."""

    def __init__(self, clean_cfg: dict):
        self.use_ftfy = clean_cfg["ftfy"]
        self.ftfy_config = ftfy.TextFixerConfig(
            normalization=clean_cfg["normalization"], explain=False
        )
        self.max_blank_lines = clean_cfg["max_blank_lines"]

    def clean(self, text: str) -> str:
        if self.use_ftfy:
            text = fix_text(text, self.ftfy_config)
        return normalize_layout(text, self.max_blank_lines)

    def __call__(self, table: pa.Table) -> pa.Table:
        texts = table.column("text").to_pylist()
        live = pc.is_null(table.column("reject_stage")).to_pylist()
        cleaned, changed = [], []
        for text, ok in zip(texts, live):
            if ok:
                new = self.clean(text)
                cleaned.append(new)
                changed.append(new != text)
            else:
                cleaned.append(text)
                changed.append(None)
        out = pa.array(cleaned, pa.large_string())
        table = table.set_column(table.schema.get_field_index("text"), "text", out)
        table = table.set_column(
            table.schema.get_field_index("changed_by_clean"), "changed_by_clean",
            pa.array(changed, pa.bool_()),
        )
        nbytes = pc.if_else(pa.array(live), pc.binary_length(out), None)
        return table.set_column(table.schema.get_field_index("bytes_clean"), "bytes_clean", nbytes)
