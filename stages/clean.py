"""Clean stage: repair text the way SlimPajama did (ftfy, NFC), then normalise layout: line
endings, control characters other than newline and tab, trailing spaces, runs of blank lines.

ftfy is the slow part (about 4 MB/s per core), and most web text is lines it provably leaves
alone or only uncurls quotes in. `fix_text` below reproduces `ftfy.fix_text` segment by segment
and hands ftfy only the segments that contain something else; tests show the two agree.
"""
from __future__ import annotations

import re

import ftfy
from ftfy.fixes import unescape_html
import pyarrow as pa
import pyarrow.compute as pc

# Characters no ftfy fixer touches when a segment consists of nothing else: printable ASCII
# without "&" (HTML entities), plus tab and newline.
_FTFY_MAY_CHANGE = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")
# Add "&" that starts no entity, curly quotes, dashes and the ellipsis, and ftfy's only change is
# uncurling the quotes: none of ftfy's mojibake patterns can match a string made of these
# characters alone (checked exhaustively up to length 3, and to length 5 over a representative
# alphabet, in tests/test_clean.py), and NFC and NFD leave them as they are (NFKC would not:
# it expands "…").
_FTFY_ONLY_UNCURLS = re.compile(r"[^\t\n\x20-\x7e\u2018\u2019\u201c\u201d\u2013\u2014\u2026]")


def _uncurl(text: str) -> str:
    # str.replace runs at memory speed; str.translate with a mapping does not (~15 MB/s).
    for curly, straight in (("\u2018", "'"), ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"')):
        if curly in text:
            text = text.replace(curly, straight)
    return text


def _fix_segment(segment: str, config: ftfy.TextFixerConfig, uncurl_only: bool) -> str:
    if not _FTFY_MAY_CHANGE.search(segment):
        return segment
    if uncurl_only and not _FTFY_ONLY_UNCURLS.search(segment):
        unescapes = "&" in segment and config.unescape_html and not (
            config.unescape_html == "auto" and "<" in segment)
        if not unescapes or unescape_html(segment) == segment:
            return _uncurl(segment)
    return ftfy.fix_and_explain(segment, config)[0]


_CR = re.compile(r"\r\n?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_CR = re.compile(r"[\r\x00-\x08\x0b-\x1f\x7f-\x9f]")


def fix_text(text: str, config: ftfy.TextFixerConfig) -> str:
    """Exactly `ftfy.fix_text(text, config)`, running ftfy only on segments (lines) where it may
    do more than uncurl quotes."""
    if not _FTFY_MAY_CHANGE.search(text):
        return text
    uncurl_only = config.uncurl_quotes and config.normalization in ("NFC", "NFD", None)
    if uncurl_only and "&" not in text and not _FTFY_ONLY_UNCURLS.search(text):
        return _uncurl(text)
    out = []
    pos = 0
    n = len(text)
    while pos < n:  # ftfy.fix_text's own segmentation
        brk = text.find("\n", pos) + 1 or n
        if brk - pos > config.max_decode_length:
            brk = pos + config.max_decode_length
        segment = text[pos:brk]
        # ftfy stops unescaping HTML for the rest of the text at the first segment with a "<".
        if config.unescape_html == "auto" and "<" in segment:
            config = config._replace(unescape_html=False)
        out.append(_fix_segment(segment, config, uncurl_only))
        pos = brk
    return "".join(out)


def normalize_layout(text: str, max_blank_lines: int) -> str:
    """CR and CRLF to LF; control characters other than LF and tab removed; trailing whitespace
    removed from every line; runs of blank lines cut to `max_blank_lines`; no blank lines at the
    start or end."""
    if _CONTROL_OR_CR.search(text):
        text = _CONTROL.sub("", _CR.sub("\n", text))
    out: list[str] = []
    blank = 0
    for line in text.split("\n"):
        line = line.rstrip()
        if line:
            if blank and out:
                out.extend([""] * min(blank, max_blank_lines))
            out.append(line)
            blank = 0
        else:
            blank += 1
    return "\n".join(out)


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
