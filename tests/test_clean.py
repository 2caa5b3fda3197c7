import itertools

import ftfy
import pyarrow as pa
import pytest
from ftfy.badness import is_bad
from hypothesis import given, settings
from hypothesis import strategies as st

from slimpipe.stages.clean import Cleaner, fix_text, normalize_layout

NFC = ftfy.TextFixerConfig(normalization="NFC", explain=False)
QUOTES = "\u2018\u2019\u201c\u201d\u2013\u2014\u2026"

# Text that exercises every branch: plain ASCII, curly quotes, entities, "<", mojibake, C1 and
# other control characters, CR, ligatures, full-width forms, combining marks, astral symbols.
ALPHABET = st.sampled_from(
    list("ab Z09.,;!?'\"-\t\n\r&<>#;")
    + list(QUOTES)
    + [
        "&amp;",
        "&lt;",
        "&eacute;",
        "&#39;",
        "Ã©",
        "â€™",
        "Ã",
        "\x92",
        "\x1b[31m",
        "\x00",
        "\x7f",
        "\ufb01",
        "\uff21",
        "e\u0301",
        "é",
        "ß",
        "\u2028",
        "\x85",
        "😀",
        "Â ",
        "\xa0",
        "\nÃ ",
        "Ð‘",
        "Ð",
        "€",
        "£",
        "°",
        "·",
        "©",
        "¿",
        "«",
        "»",
        "Ø",
        "×²",
        "Œ1",
        "ĳ",
        "\u3000",
        "\ufeff",
        "\u206a",
        "привет",
        "мир",
        "ВЂ",
        "日本語",
        "ｶﾀｶﾅ",
        "مرحبا",
        "\u0301",
        "Å",
        "Å",
        "ǅ",
        "ﬀ",
        "²",
        "Ω",
        "Ω",
        "\u02bc",
        "\u201a",
        "\u201e",
    ]
)
TEXTS = st.lists(ALPHABET, max_size=60).map("".join)


@settings(max_examples=3000, deadline=None)
@given(TEXTS)
def test_fix_text_equals_ftfy(text):
    assert fix_text(text, NFC) == ftfy.fix_text(text, normalization="NFC")


@settings(max_examples=1000, deadline=None)
@given(TEXTS, st.sampled_from(["NFKC", "NFD", "NFKD", None]))
def test_fix_text_equals_ftfy_for_other_normalisations(text, form):
    config = ftfy.TextFixerConfig(normalization=form, explain=False)
    assert fix_text(text, config) == ftfy.fix_text(text, normalization=form)


def test_fix_text_equals_ftfy_on_real_web_text(c4_docs):
    texts = [d["text"] for d in c4_docs]
    # and the same pages turned into mojibake, the way mis-decoded crawls look
    texts += [t.encode("utf-8").decode(codec, "replace") for t in texts[:150] for codec in ("latin-1", "cp1252")]
    assert [fix_text(t, NFC) for t in texts] == [ftfy.fix_text(t, normalization="NFC") for t in texts]


def test_quote_only_alphabet_never_looks_like_mojibake():
    """The uncurl-only fast path rests on this: no string over printable ASCII, curly quotes,
    dashes and the ellipsis matches ftfy's mojibake heuristic."""
    full = [chr(c) for c in range(0x20, 0x7F)] + ["\t", "\n"] + list(QUOTES)
    for n in (1, 2):
        assert not any(is_bad("".join(t)) for t in itertools.product(full, repeat=n))
    reduced = list(QUOTES) + list("aZ0 .,?!\"'-(&;")
    for n in (3, 4):
        assert not any(is_bad("".join(t)) for t in itertools.product(reduced, repeat=n))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a\r\nb\rc", "a\nb\nc"),
        ("tab\tkept\x00\x07gone\x1b\x9f", "tab\tkeptgone"),
        ("trailing   \nspaces\t \n", "trailing\nspaces"),
        ("a\n\n\n\n\nb", "a\n\nb"),
        ("\n\n  lead\n", "  lead"),
        ("line \u3000\nnbsp\xa0", "line\nnbsp"),
        ("keep\u2028inside", "keep\u2028inside"),
    ],
)
def test_normalize_layout(raw, expected):
    assert normalize_layout(raw, max_blank_lines=1) == expected


def test_max_blank_lines_is_configurable():
    assert normalize_layout("a\n\n\n\n\nb", max_blank_lines=0) == "a\nb"
    assert normalize_layout("a\n\n\n\n\nb", max_blank_lines=2) == "a\n\n\nb"


def test_cleaner_leaves_rejected_rows_alone_and_counts_changes():
    from slimpipe.schemas import RECORD

    n = 3
    table = pa.table({f.name: pa.nulls(n, f.type) for f in RECORD}, schema=RECORD)
    table = table.set_column(
        1, "text", pa.array(["fine text", "smart \u2019quote\u2019  \r\n", None], pa.large_string())
    )
    table = table.set_column(
        RECORD.get_field_index("reject_stage"), "reject_stage", pa.array([None, None, "read"], pa.string())
    )
    out = Cleaner({"ftfy": True, "normalization": "NFC", "max_blank_lines": 1})(table).to_pylist()
    assert out[0]["text"] == "fine text" and out[0]["changed_by_clean"] is False
    assert out[1]["text"] == "smart 'quote'" and out[1]["changed_by_clean"] is True
    assert out[1]["bytes_clean"] == len("smart 'quote'")
    assert out[2]["text"] is None and out[2]["bytes_clean"] is None


def test_every_mojibake_pattern_needs_a_suspect_character():
    """The skip of `is_bad` on lines without suspect characters rests on this: each alternative
    of ftfy's BADNESS_RE has a required element that only non-ASCII characters it names can
    match, and those are the suspects (or the quotes and dashes shown safe above)."""
    import re._constants as sre
    import re._parser as sre_parse

    from ftfy.badness import BADNESS_RE

    from slimpipe.stages.clean import _MOJIBAKE_SUSPECTS

    def chars_of(op, av):
        if op is sre.LITERAL:
            return {av}
        if op is sre.IN and not any(o is sre.NEGATE for o, _ in av):
            out = set()
            for o, a in av:
                if o is sre.LITERAL:
                    out.add(a)
                elif o is sre.RANGE:
                    out.update(range(a[0], a[1] + 1))
                else:
                    return None  # a category such as \w: matches ASCII too
            return out
        return None

    ((branch, (_, alternatives)),) = sre_parse.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    assert branch is sre.BRANCH
    for alternative in alternatives:
        required = [chars_of(op, av) for op, av in alternative]
        named = [c for c in required if c and all(ch > 0x7F for ch in c)]
        assert named, f"an alternative of BADNESS_RE matches without a named non-ASCII char: {alternative}"
        assert any(all(_MOJIBAKE_SUSPECTS.match(chr(ch)) or chr(ch) in QUOTES for ch in c) for c in named)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab '\"" + QUOTES + "\u02bc\u201a\u201b\u201e\u201f«»"), max_size=30))
def test_uncurl_equals_ftfy(text):
    from ftfy.fixes import uncurl_quotes

    from slimpipe.stages.clean import uncurl

    assert uncurl(text) == uncurl_quotes(text)
