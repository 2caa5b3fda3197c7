"""A fastText quality classifier: `fit` trains one on positive and negative example texts
(fastText supervised training), and the `quality` filter applies it with a threshold, keeping
its score as a column."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable

from slimpipe.errors import ConfigError
from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc
from slimpipe.stages.filters.language import load_model

POSITIVE, NEGATIVE = "hq", "lq"


class QualityFilter(Filter):
    name = "quality"
    annotations = ("quality_score",)

    def __init__(self, model: str | None, min_score: float, label: str):
        if not model or not os.path.isfile(model):
            raise ConfigError(
                f"quality classifier model not found: {model!r} (train one with `slimpipe train-quality`)"
            )
        self.model_path, self.min_score, self.label = model, min_score, f"__label__{label}"

    def annotate(self, texts: list[str]) -> dict[str, list]:
        if not texts:
            return {"quality_score": []}
        labels, probs = load_model(self.model_path).predict([t.replace("\n", " ") for t in texts], k=-1)
        return {"quality_score": [float(dict(zip(ls, ps)).get(self.label, 0.0)) for ls, ps in zip(labels, probs)]}

    def check(self, doc: Doc) -> Rejection | None:
        score = doc.annotations["quality_score"]
        if score < self.min_score:
            return self.reject("low_score", score, f"quality score {score:.3f}, under {self.min_score}")
        return None


def _is_holdout(text: str, share: float) -> bool:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64 < share


def fit(
    positive: Iterable[str],
    negative: Iterable[str],
    output: str,
    holdout: float = 0.1,
    epoch: int = 5,
    lr: float = 0.5,
    word_ngrams: int = 2,
    dim: int = 64,
    min_count: int = 2,
    seed: int = 0,
) -> dict:
    """Fit a classifier on good and bad example texts and save it to `output`; returns its precision
    and recall on a held-out share of the examples (chosen by text hash, so the same texts give the
    same split)."""
    import fasttext

    held: list[tuple[str, str]] = []
    counts = {POSITIVE: 0, NEGATIVE: 0}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as train_file:
        for label, texts in ((POSITIVE, positive), (NEGATIVE, negative)):
            for text in texts:
                line = " ".join(text.split())
                if _is_holdout(line, holdout):
                    held.append((label, line))
                else:
                    train_file.write(f"__label__{label} {line}\n")
                    counts[label] += 1
    try:
        if not counts[POSITIVE] or not counts[NEGATIVE]:
            raise ConfigError(f"need positive and negative examples, got {counts}")
        model = fasttext.train_supervised(
            input=train_file.name,
            epoch=epoch,
            lr=lr,
            wordNgrams=word_ngrams,
            dim=dim,
            minCount=min_count,
            thread=1,
            seed=seed,
            verbose=0,
        )
    finally:
        os.unlink(train_file.name)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    model.save_model(output)
    result = {"model": output, "train_examples": counts, "holdout_examples": len(held)}
    if held:
        labels, _ = model.predict([text for _, text in held], k=1)
        predicted = [ls[0].removeprefix("__label__") for ls in labels]
        tp = sum(p == POSITIVE and t == POSITIVE for (t, _), p in zip(held, predicted))
        result["holdout_accuracy"] = sum(p == t for (t, _), p in zip(held, predicted)) / len(held)
        result["holdout_precision"] = tp / max(1, predicted.count(POSITIVE))
        result["holdout_recall"] = tp / max(1, sum(t == POSITIVE for t, _ in held))
    return result
