"""Clean stage: repair text the way SlimPajama did (ftfy, NFC), then normalise layout: line
endings, control characters other than newline and tab, trailing spaces, runs of blank lines.

ftfy is the slow part (about 3 MB/s per core). It fixes text line by line, looping over its
fixers until nothing changes, and each fixer acts only where its gate is open: the mojibake
decoder where the heuristic `is_bad` fires, the others on characters of their own (C1 and other
controls, ligatures, width forms, line breaks, escapes, surrogates, curly quotes, "&"), the
normaliser on text not yet normalised. `fix_text` runs that same loop with ftfy's own fixers,
but checks each gate first with a cheap test, and skips the whole loop for text where every
gate but uncurling is shut. Tests show it equals `ftfy.fix_text`.
"""

from __future__ import annotations

import re
import re._constants as _sre  # the regex parser, to read ftfy's mojibake regex (see below)
import re._parser as _sre_parse
import unicodedata

import ftfy
import pyarrow as pa
import pyarrow.compute as pc
from ftfy.badness import BADNESS_RE
from ftfy.chardata import CONTROL_CHARS, LIGATURES, WIDTH_MAP
from ftfy.fixes import (
    fix_c1_controls,
    fix_character_width,
    fix_latin_ligatures,
    fix_line_breaks,
    fix_surrogates,
    remove_control_chars,
    remove_terminal_escapes,
    unescape_html,
)

from slimpipe.stages.charclass import char_class

# Printable ASCII without "&", plus tab and newline: no ftfy fixer touches a line of these.
_FTFY_MAY_CHANGE = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")
# Curly quotes, dashes and the ellipsis: ftfy's mojibake heuristic cannot fire on a line of
# these and ASCII alone (checked exhaustively up to length 3, and to length 5 over a
# representative alphabet, in tests/test_clean.py).
_QUOTES_DASHES = "\u2018\u2019\u201c\u201d\u2013\u2014\u2026"


def _chars(codepoints) -> re.Pattern:
    return re.compile(char_class(codepoints))


def _mojibake_suspects() -> re.Pattern:
    """The non-ASCII characters that some element of ftfy's mojibake regex (BADNESS_RE) names,
    less the quotes and dashes above. Every alternative of that regex needs one of them (a test
    checks), so text without any cannot look like mojibake."""
    named: set[int] = set()

    def walk(items):
        for op, av in items:
            if op is _sre.LITERAL:
                named.add(av)
            elif op is _sre.IN and not any(o is _sre.NEGATE for o, _ in av):
                for o, a in av:
                    if o is _sre.LITERAL:
                        named.add(a)
                    elif o is _sre.RANGE:
                        named.update(range(a[0], a[1] + 1))
            elif op is _sre.BRANCH:
                for alternative in av[1]:
                    walk(alternative)
            elif op is _sre.SUBPATTERN:
                walk(av[3])
            elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
                walk(av[2])

    walk(_sre_parse.parse(BADNESS_RE.pattern, BADNESS_RE.flags))
    return _chars(c for c in named if c > 0x7F and chr(c) not in _QUOTES_DASHES)


_MOJIBAKE_SUSPECTS = _mojibake_suspects()
# The longest text a BADNESS_RE match can span (it has no unbounded repeats or lookarounds).
_MOJIBAKE_WIDTH = _sre_parse.parse(BADNESS_RE.pattern, BADNESS_RE.flags).getwidth()[1]

# The gates of ftfy's simple fixers: the characters each one acts on.
_C1 = re.compile("[\x80-\x9f]")
_LIGATURE_CHARS = _chars(LIGATURES)
_WIDTH_CHARS = _chars(WIDTH_MAP)
_LINE_BREAK_CHARS = re.compile("[\r\u2028\u2029\x85]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROL_CHARS = _chars(CONTROL_CHARS)
_ANY_FIXER_CHAR = _chars(
    set(CONTROL_CHARS)
    | set(LIGATURES)
    | set(WIDTH_MAP)
    | set(range(0x80, 0xA0))
    | {0x0D, 0x1B, 0x2028, 0x2029}
    | set(range(0xD800, 0xE000))
)
# ftfy's uncurl_quotes (SINGLE_QUOTE_RE, DOUBLE_QUOTE_RE) as plain replacements, which run at
# memory speed; a test checks them against ftfy.
_CURLY = (
    ("\u02bc", "'"),
    ("\u2018", "'"),
    ("\u2019", "'"),
    ("\u201a", "'"),
    ("\u201b", "'"),
    ("\u201c", '"'),
    ("\u201d", '"'),
    ("\u201e", '"'),
    ("\u201f", '"'),
)
_FIXERS = (
    "remove_terminal_escapes",
    "fix_encoding",
    "restore_byte_a0",
    "replace_lossy_sequences",
    "decode_inconsistent_utf8",
    "fix_c1_controls",
    "fix_latin_ligatures",
    "fix_character_width",
    "uncurl_quotes",
    "fix_line_breaks",
    "fix_surrogates",
    "remove_control_chars",
)

_CR = re.compile(r"\r\n?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_CR = re.compile(r"[\r\x00-\x08\x0b-\x1f\x7f-\x9f]")


def uncurl(text: str) -> str:
    for curly, straight in _CURLY:
        if curly in text:
            text = text.replace(curly, straight)
    return text


def looks_bad(text: str) -> bool:
    """ftfy's `is_bad(text)`, searching only windows around suspect characters: every match
    holds one, and spans at most _MOJIBAKE_WIDTH characters. (A window's end can only add false
    alarms, and ftfy's own decoder, called then, checks again.)"""
    start = end = -1
    for m in _MOJIBAKE_SUSPECTS.finditer(text):
        lo, hi = max(0, m.start() - _MOJIBAKE_WIDTH + 1), m.start() + _MOJIBAKE_WIDTH
        if lo > end:  # a new window: search the one before it
            if end > 0 and BADNESS_RE.search(text, start, end):
                return True
            start = lo
        end = hi
    return end > 0 and BADNESS_RE.search(text, start, end) is not None


def _gates_apply(config: ftfy.TextFixerConfig) -> bool:
    """The gates are those of ftfy's default fixers (with any normalisation)."""
    return not config.explain and all(getattr(config, name) for name in _FIXERS)


def _fix_segment(text: str, config: ftfy.TextFixerConfig) -> str:
    """ftfy.fix_and_explain(text, config)[0] for the default fixers: the same loop, the same
    fixers in the same order, each called only where its gate is open."""
    if config.unescape_html == "auto" and "<" in text:
        config = config._replace(unescape_html=False)
    form = config.normalization
    while True:
        original = text
        if config.unescape_html and "&" in text:
            text = unescape_html(text)
        if looks_bad(text):
            text = ftfy.fix_encoding(text)
        if _C1.search(text):
            text = fix_c1_controls(text)
        if _LIGATURE_CHARS.search(text):
            text = fix_latin_ligatures(text)
        if _WIDTH_CHARS.search(text):
            text = fix_character_width(text)
        text = uncurl(text)
        if _LINE_BREAK_CHARS.search(text):
            text = fix_line_breaks(text)
        if _SURROGATES.search(text):
            text = fix_surrogates(text)
        if "\x1b" in text:
            text = remove_terminal_escapes(text)
        if _CONTROL_CHARS.search(text):
            text = remove_control_chars(text)
        if form and not unicodedata.is_normalized(form, text):
            text = unicodedata.normalize(form, text)
        if text == original:
            return text


def _only_uncurls(text: str, config: ftfy.TextFixerConfig, line: bool) -> bool:
    """True when every gate but uncurling is shut for this line (or, with line=False, for every
    line of this text), so ftfy would only uncurl its quotes."""
    if _ANY_FIXER_CHAR.search(text):
        return False
    if "&" in text and (
        not line
        or config.unescape_html
        and not (config.unescape_html == "auto" and "<" in text)
        and unescape_html(text) != text
    ):
        return False
    if config.normalization and not unicodedata.is_normalized(config.normalization, text):
        return False
    if not _MOJIBAKE_SUSPECTS.search(text):
        return True
    # The heuristic's patterns may match across lines and "^" means a line's start: only a line,
    # never a whole text, may be judged by it.
    return line and not looks_bad(text)


def _fix_line(segment: str, config: ftfy.TextFixerConfig) -> str:
    if not _FTFY_MAY_CHANGE.search(segment):
        return segment
    if _only_uncurls(segment, config, line=True):
        return uncurl(segment)
    return _fix_segment(segment, config)


def fix_text(text: str, config: ftfy.TextFixerConfig, gated: bool | None = None) -> str:
    """Exactly `ftfy.fix_text(text, config)`. `gated` (whether the gates are those of this
    config) may be passed in precomputed."""
    if not _FTFY_MAY_CHANGE.search(text):
        return text
    gated = _gates_apply(config) if gated is None else gated
    if gated and _only_uncurls(text, config, line=False):
        return uncurl(text)  # the common case: no line needs more
    fix = _fix_line if gated else (lambda seg, cfg: ftfy.fix_and_explain(seg, cfg)[0])
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
        out.append(fix(segment, config))
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
        self.ftfy_config = ftfy.TextFixerConfig(normalization=clean_cfg["normalization"], explain=False)
        self.gated = _gates_apply(self.ftfy_config)
        self.max_blank_lines = clean_cfg["max_blank_lines"]

    def clean(self, text: str) -> str:
        if self.use_ftfy:
            text = fix_text(text, self.ftfy_config, self.gated)
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
            table.schema.get_field_index("changed_by_clean"),
            "changed_by_clean",
            pa.array(changed, pa.bool_()),
        )
        nbytes = pc.if_else(pa.array(live), pc.binary_length(out), None)
        return table.set_column(table.schema.get_field_index("bytes_clean"), "bytes_clean", nbytes)


def _clean_batch(table: pa.Table, clean_cfg: dict) -> pa.Table:
    return Cleaner(clean_cfg)(table)


def clean(ds, clean_cfg: dict):
    """The clean stage over a Ray dataset of records (fused with its neighbours, one task a chunk)."""
    return ds.map_batches(
        _clean_batch, fn_kwargs={"clean_cfg": clean_cfg}, batch_format="pyarrow", batch_size=None, zero_copy_batch=True
    )
