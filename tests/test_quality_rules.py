"""The Gopher and FineWeb rules: the shared statistics against plain reference code, and each
rule's edges on real-looking text."""

from collections import Counter

import pytest
from conftest import filter_settings, make_filter
from hypothesis import given, settings
from hypothesis import strategies as st

from slimpipe.stages.filters import FilterStage
from slimpipe.stages.filters.doc import Doc

PROSE = (
    "The committee met on Tuesday to discuss the budget for the coming year, and most of the "
    "members agreed that the library should have more money for books. "
)
STORY = (
    "In the spring the river rose and the farmers moved their animals to higher ground. "
    "By summer the fields had dried, and the village held its market in the old square. "
    "Children ran between the stalls while their parents argued about the price of wool. "
    "Later that year a teacher arrived from the city with a crate of books and a map of the world."
)


def grams(words, n):
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def reference_top(words, n):
    found = grams(words, n)
    if not found:
        return 0
    gram, count = Counter(found).most_common(1)[0]
    return len(gram) * count


def reference_dup(words, n):
    """Gopher's repeated n-gram characters as the reference counts them: without spaces."""
    found, seen, total, i = ["".join(words[i : i + n]) for i in range(len(words) - n + 1)], set(), 0, 0
    while i < len(found):
        if found[i] in seen:
            total += len(found[i])
            i += n
        else:
            seen.add(found[i])
            i += 1
    return total


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "bb", "the", "cat", "sat", "on", "mat", "ünï", "日本"]), max_size=80)
    | st.lists(st.sampled_from(["x", "y"]), max_size=40)
)
def test_ngram_statistics_match_plain_code(words):
    doc = Doc(" ".join(words))
    for n in range(2, 11):
        top, dup = doc.ngram_repetition((n,), (n,))
        assert top == [reference_top(words, n)] and dup == [reference_dup(words, n)]


def test_real_prose_passes_every_rule(c4_docs):
    stage = FilterStage({name: filter_settings(name) for name in ("gopher_quality", "gopher_repetition", "fineweb")})
    kept = sum(stage.decide(Doc(d["text"])) is None for d in c4_docs)
    assert 0.6 * len(c4_docs) < kept < len(c4_docs)  # most of C4 passes; some does not
    assert stage.decide(Doc(STORY)) is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "too_few_words"),
        ("   \n\t  ", "too_few_words"),
        ("!!! ??? ... ### @@@ " * 30, "too_few_words"),
        ("word " * 49, "too_few_words"),
        ("a an I " * 30, "short_words"),
        ("incomprehensibilities extraordinarily " * 30, "long_words"),
        (PROSE + "#tag #news #today " * 20, "hash_ratio"),
        ("\n".join(f"• item number {i} of the list with the words" for i in range(30)), "bullet_lines"),
        (
            "\n".join("the story goes on and on for a long while in the old town and then..." for _ in range(30)),
            "ellipsis_lines",
        ),
        ("1234 5678 9012 3456 7890 " * 40 + PROSE, "few_alpha_words"),
        ("Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod " * 8, "few_stop_words"),
    ],
)
def test_gopher_quality_edges(text, reason):
    rejection = make_filter("gopher_quality").check(Doc(text))
    assert rejection is not None and rejection.reason == f"gopher_quality.{reason}"


def test_gopher_quality_boundaries_and_odd_text():
    assert make_filter("gopher_quality").check(Doc(PROSE * 2)) is None  # 56 words
    assert make_filter("gopher_quality", min_words=57).check(Doc(PROSE * 2)).value == 56
    assert make_filter("gopher_quality", min_words=56).check(Doc(PROSE * 2)) is None
    huge_line = ("word " * 200_000).strip()
    assert make_filter("gopher_quality").check(Doc(huge_line)).reason == "gopher_quality.too_many_words"
    mixed = "Das Wetter ist gut and the sun is shining over Москва и 東京 with the people. " * 10
    assert make_filter("gopher_quality").check(Doc(mixed)) is None


def test_gopher_repetition_rules():
    rep = make_filter("gopher_repetition")
    assert rep.check(Doc(PROSE * 3)).reason == "gopher_repetition.dup_5grams"  # one sentence thrice
    lines = "\n".join(["Click here to subscribe to our newsletter today"] * 5 + [PROSE] * 1)
    assert rep.check(Doc(lines)).reason.startswith("gopher_repetition.dup_")
    paragraphs = "\n\n".join([PROSE, "Share this article.", "Share this article.", "Share this article."])
    assert rep.check(Doc(paragraphs)).reason == "gopher_repetition.dup_paragraphs"
    assert rep.check(Doc("")).reason == "gopher_repetition.empty"
    assert rep.check(Doc(STORY)) is None


def test_fineweb_rules():
    fw = make_filter("fineweb")
    no_punct = "\n".join(f"Menu entry number {i} for the site navigation bar" for i in range(10))
    assert fw.check(Doc(no_punct)).reason == "fineweb.line_punct_ratio"
    short = "\n".join(["Home.", "About us.", "Contact.", PROSE])
    assert fw.check(Doc(short)).reason == "fineweb.short_line_ratio"
    dup = "\n".join(
        [
            PROSE,
            "This line repeats itself in the page body.",
            "This line repeats itself in the page body.",
            PROSE + "x.",
        ]
    )
    assert fw.check(Doc(dup)).reason == "fineweb.char_dup_ratio"
    listy = "\n".join(f"Internationalisationandlocalisationchecklist{i}." for i in range(40))  # 2 words a line
    assert fw.check(Doc(listy)).reason == "fineweb.list_ratio"
    assert fw.check(Doc(STORY)) is None
    assert fw.check(Doc("")).reason == "fineweb.empty"


def test_first_objecting_filter_decides():
    stage = FilterStage(
        {"length": filter_settings("length", min_chars=10), "gopher_quality": filter_settings("gopher_quality")}
    )
    assert stage.decide(Doc("short", norm_chars=5)).reason == "length.too_short"
    assert stage.decide(Doc("word " * 20, norm_chars=99)).reason == "gopher_quality.too_few_words"
    assert FilterStage({"gopher_quality": filter_settings("gopher_quality", enabled=False)}).filters == []


def test_c4_rules():
    c4 = make_filter("c4")
    assert c4.check(Doc(STORY)).value == 4  # four sentences
    assert c4.check(Doc(STORY + " Then the long winter came.")) is None
    assert c4.check(Doc(STORY + " Lorem ipsum dolor sit amet.")).reason == "c4.lorem_ipsum"
    # page rules look only at lines that passed the line rules before them, as the reference does
    assert c4.check(Doc(STORY + " Call f() { return 1; } to see.")).reason == "c4.curly_bracket"
    assert c4.check(Doc(STORY + "\nfunction f() { return 1; }")).reason == "c4.too_few_sentences"
    assert c4.check(Doc(STORY + " The end.\nfunction f() { return 1; }")) is None
    menu = "\n".join(
        [
            "Home",
            "About us",
            "Contact",
            "Please enable JavaScript to view this page.",
            "This site uses cookies to improve your experience.",
            "Read more...",
        ]
    )
    rejection = c4.check(Doc(menu))
    assert rejection.reason == "c4.too_few_sentences" and rejection.value == 0
    cited = "\n".join(f"Paris is the capital of France and its largest city.[{i}]" for i in range(5))
    assert c4.check(Doc(cited)) is None  # citation marks do not hide the terminal punctuation
    assert make_filter("c4", min_sentences=6).check(Doc(cited)).value == 5
    unpunctuated = "\n".join(["Home | About us | Contact", STORY + " Then the long winter came", "Share this page now"])
    assert c4.check(Doc(unpunctuated)).reason == "c4.too_few_sentences"
    assert make_filter("c4", require_terminal_punct=False).check(Doc(unpunctuated)) is None


PAGE = "\n".join(
    [
        "Home | About us | Contact",
        STORY + " Then the long winter came.",
        "Please enable JavaScript to view this page.",
        "  Paris is the capital of France and its largest city.[3]  ",
        "Share",
        "Read more...",
        "This site uses cookies to improve your experience.",
    ]
)


def test_c4_line_removal_keeps_only_good_lines():
    assert make_filter("c4").edit(Doc(PAGE)) is None  # off in the presets: the rules only count
    c4 = make_filter("c4", remove_bad_lines=True)
    assert c4.check(Doc(PAGE)) is None
    assert c4.edit(Doc(PAGE)) == (
        STORY + " Then the long winter came.\nParis is the capital of France and its largest city."
    )
    good = STORY + " Then the long winter came."
    assert c4.edit(Doc(good)) is None  # nothing to cut: no edit


def test_filter_stage_applies_a_cut_to_kept_rows_and_renormalises():
    """A kept page takes the cut text, its bytes and its normalised hash again; a page a later
    filter rejects keeps its text as it came, so the rejected row shows what was judged."""
    import pyarrow as pa

    from slimpipe.schemas import RECORD
    from slimpipe.stages.normalize import Normalizer, normalize_text, text_hash

    short_page = "The cat sat down.\n" * 5 + "Share"  # C4 keeps it, cut; then too few words
    texts = [PAGE, "Home\nAbout\nShare", short_page]
    rows = {f.name: [None] * len(texts) for f in RECORD}
    rows.update(id=["a", "b", "c"], text=texts, bytes_clean=[len(t.encode()) for t in texts])
    table = Normalizer(True, True)(pa.table(rows, schema=RECORD))
    out = FilterStage(
        {
            "c4": filter_settings("c4", remove_bad_lines=True),
            "gopher_quality": filter_settings("gopher_quality", min_words=30),
        },
        Normalizer(True, True),
    )(table).to_pylist()
    cut = make_filter("c4", remove_bad_lines=True).edit(Doc(PAGE))
    assert out[0]["reject_stage"] is None and out[0]["text"] == cut
    assert out[0]["bytes_clean"] == len(cut.encode()) and out[0]["bytes_cut"] == len(PAGE.encode()) - len(cut.encode())
    assert out[0]["text_hash"] == text_hash(normalize_text(cut)) and out[0]["norm_text"] == normalize_text(cut)
    assert out[0]["norm_chars"] == len(normalize_text(cut))
    assert out[1]["reject_reason"] == "c4.too_few_sentences" and out[1]["text"] == texts[1]
    assert out[2]["reject_reason"] == "gopher_quality.too_few_words" and out[2]["text"] == short_page
    assert out[2]["reject_value"] == 20 and out[1]["bytes_cut"] is None and out[2]["bytes_cut"] is None


def test_run_with_c4_line_removal_writes_cut_pages_and_counts_them(ray_session, c4_docs, tmp_path):
    import json

    import pyarrow.parquet as pq
    from conftest import write_jsonl

    from slimpipe.config import resolve
    from slimpipe.runner import run

    # C4's pages already lost their bad lines to C4: give some of them a menu and a footer again
    pages = [
        dict(d, id=f"p{i}", text=f"Home | News | Contact\n{d['text']}\nShare this:" if i % 2 else d["text"])
        for i, d in enumerate(c4_docs[:150])
    ]
    write_jsonl(tmp_path / "in" / "web.jsonl", pages)
    config = resolve(
        "web",
        None,
        [
            "filters.c4.remove_bad_lines=true",
            "filters.c4.require_terminal_punct=true",
            "dedup.near.enabled=false",
            "ray.progress_bars=false",
        ],
        [str(tmp_path / "in")],
        str(tmp_path / "run"),
    )
    stats = run(config)
    assert stats["conservation"]["holds"]
    docs = pq.read_table(tmp_path / "run" / "documents").to_pylist()
    c4 = make_filter("c4", remove_bad_lines=True)
    assert docs and all(c4.edit(Doc(d["text"])) is None for d in docs)  # only good lines are left
    f = stats["totals"]["filter"]
    assert f["documents_edited"] > 30 and f["bytes_cut"] > 30 * len("Home | News | Contact\n\nShare this:")
    assert f["bytes_in"] == stats["totals"]["clean"]["bytes_out"]
    written = sum(len(d["text"].encode()) for d in docs)
    removed = stats["totals"]["exact_dedup"]["bytes_removed"] + stats["totals"]["decontaminate"]["bytes_removed"]
    assert f["bytes_out"] == written + removed  # what went on is what the cut pages weigh
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["totals"]["filter"]["bytes_cut"] == f["bytes_cut"]
