"""`slimpipe train-quality` and the quality filter: trained on real web text against
generated spam, it tells the two apart on held-out pages."""

import json
import random

import pytest
from conftest import filter_settings, make_filter, write_jsonl

from slimpipe import cli
from slimpipe.errors import ConfigError
from slimpipe.stages.filters import FilterStage
from slimpipe.stages.filters.doc import Doc

SPAM_WORDS = (
    "buy cheap best price click here free shipping casino bonus win now discount viagra "
    "login register home contact menu cart checkout subscribe follow share tweet like "
    "download crack keygen torrent hot deals offer limited sale"
).split()


def spam(rng: random.Random) -> str:
    lines = [" ".join(rng.choice(SPAM_WORDS) for _ in range(rng.randint(2, 7))) for _ in range(rng.randint(5, 25))]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def model(tmp_path_factory, c4_docs):
    root = tmp_path_factory.mktemp("quality")
    rng = random.Random(1)
    write_jsonl(root / "good.jsonl", [{"text": d["text"]} for d in c4_docs[:500]])
    write_jsonl(root / "bad.jsonl.gz", [{"text": spam(rng)} for _ in range(500)], "gzip")
    out = root / "model" / "quality.bin"
    code = cli.main(
        [
            "train-quality",
            "--positive",
            str(root / "good.jsonl"),
            "--negative",
            str(root / "bad.jsonl.gz"),
            "--output",
            str(out),
            "--epoch",
            "10",
        ]
    )
    assert code == 0 and out.exists()
    return out


def test_trained_classifier_separates_held_out_pages(model, c4_docs, capsys):
    rng = random.Random(99)
    flt = make_filter("quality", model=str(model))
    good = [d["text"] for d in c4_docs[500:600]]
    bad = [spam(rng) for _ in range(100)]
    scores = flt.annotate(good + bad)["quality_score"]
    assert sum(s >= 0.5 for s in scores[:100]) >= 95
    assert sum(s < 0.5 for s in scores[100:]) >= 95
    assert flt.check(Doc(bad[0], annotations={"quality_score": scores[100]})).reason == "quality.low_score"


def test_training_reports_holdout_figures(tmp_path, c4_docs, capsys):
    rng = random.Random(2)
    write_jsonl(tmp_path / "g.jsonl", [{"body": d["text"]} for d in c4_docs[:300]])
    write_jsonl(tmp_path / "b.jsonl", [{"body": spam(rng)} for _ in range(300)])
    assert (
        cli.main(
            [
                "train-quality",
                "--positive",
                str(tmp_path / "g.jsonl"),
                "--negative",
                str(tmp_path / "b.jsonl"),
                "--output",
                str(tmp_path / "m.bin"),
                "--text-field",
                "body",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["holdout_examples"] > 20 and result["holdout_accuracy"] >= 0.9
    assert result["train_examples"]["hq"] + result["train_examples"]["lq"] + result["holdout_examples"] == 600


def test_missing_model_and_missing_examples_are_clear(tmp_path, capsys):
    with pytest.raises(ConfigError, match="quality classifier model not found"):
        FilterStage({"quality": filter_settings("quality", model=str(tmp_path / "nope.bin"))})
    write_jsonl(tmp_path / "g.jsonl", [{"text": "only good examples here"}])
    assert (
        cli.main(
            [
                "train-quality",
                "--positive",
                str(tmp_path / "g.jsonl"),
                "--negative",
                str(tmp_path / "missing.jsonl"),
                "--output",
                str(tmp_path / "m.bin"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
