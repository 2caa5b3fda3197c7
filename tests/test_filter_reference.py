"""The rule filters decide as their reference (datatrove's Gopher, C4 and FineWeb filters) does, on
3,761 real documents of eight shapes whose reference decisions bench/filters_reference.py wrote
to tests/data (datatrove is not needed here); and the layout of a page changes no decision."""

import sys
from pathlib import Path

import pytest
from conftest import make_filter
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from filters_reference import RULES, agreement, load_fixture  # noqa: E402

from slimpipe.stages.filters.doc import Doc  # noqa: E402

PRESET_RULES = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


@pytest.fixture(scope="module")
def compared():
    rows = load_fixture()
    return rows, *agreement(rows)


def test_fixture_covers_the_shapes(compared):
    rows, _, _ = compared
    shapes = {r["shape"] for r in rows}
    assert len(rows) >= 3000
    assert {"c4", "c4_blank_lines", "dolma_oscar_en", "book_paragraphs", "code", "lists"} <= shapes
    kept = sum(r["reference"]["gopher_quality"] is None for r in rows if r["shape"] == "c4") / 1000
    assert 0.6 < kept < 0.9  # real decisions both ways, not a fixture of one answer


def test_every_rule_agrees_with_the_reference_on_every_shape(compared):
    _, table, _ = compared
    for rule, by_shape in table.items():
        for shape, share in by_shape.items():
            if rule.endswith("_preset") and shape == "lists_blank_lines":
                continue
            assert share >= 0.99, (rule, shape, share)


def test_preset_disagrees_only_where_the_reference_counts_blank_lines(compared):
    """With the presets' layout-free lines, the one class of disagreement left is a list whose
    items stand between blank lines: the reference's bullet ratio counts the blank lines."""
    _, table, differ = compared
    exact = {(rule, i) for rule, _, _, _, i in differ if not rule.endswith("_preset")}
    preset_only = [
        (rule, shape, ours)
        for rule, shape, _, ours, i in differ
        if rule.endswith("_preset") and (rule.removesuffix("_preset"), i) not in exact
    ]
    assert preset_only, "the presets' layout rule should matter on lists with blank lines"
    assert {shape for _, shape, _ in preset_only} == {"lists_blank_lines"}
    # bullets over non-blank lines; repetition over the characters without the blank lines
    assert all(
        ours == "gopher_quality.bullet_lines" or (ours or "").startswith("gopher_repetition.")
        for _, _, ours in preset_only
    ), preset_only
    assert set(RULES) == {*table}


_LINE_BREAKS = ["\n", "\n\n", "\r\n", "  \n", "\n\n\n", "\r\n\r\n", "\t\n \n"]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_layout_changes_no_decision(c4_docs, data):
    """Blank lines between paragraphs, CRLF, trailing spaces and runs of blank lines leave every
    filter's decision (with the presets' settings) as it was on the page with single newlines."""
    text = data.draw(st.sampled_from(c4_docs))["text"]
    lines = text.split("\n")
    breaks = data.draw(st.lists(st.sampled_from(_LINE_BREAKS), min_size=len(lines) - 1, max_size=len(lines) - 1))
    laid_out = lines[0] + "".join(b + line for b, line in zip(breaks, lines[1:]))
    for name in PRESET_RULES:
        flt = make_filter(name)
        assert (flt.check(Doc(text)) is None) == (flt.check(Doc(laid_out)) is None), name
