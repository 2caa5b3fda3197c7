"""Language ID with fastText's lid.176 model: the .ftz bundled with slimpipe (nothing is
downloaded), or a model file of the user's own. Every document gets its predicted language and
score as columns, kept or not, so thresholds can be changed without a re-run."""

from __future__ import annotations

import os
from importlib.resources import files

from slimpipe.errors import ConfigError
from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc

_MODELS: dict[str, object] = {}  # loaded once per worker process, whatever the batches


BUNDLED_MODEL = str(files("slimpipe") / "models" / "lid.176.ftz")


def load_model(path: str):
    """A fastText model, loaded once per worker process."""
    if path not in _MODELS:
        import fasttext

        _MODELS[path] = fasttext.load_model(path)
    return _MODELS[path]


class LanguageFilter(Filter):
    name = "language"
    annotations = ("language", "language_score")

    def __init__(self, languages: list[str], min_score: float, model: str | None):
        self.languages = frozenset(languages)
        self.min_score = min_score
        self.model_path = model or BUNDLED_MODEL
        if not os.path.isfile(self.model_path):
            raise ConfigError(f"language ID model not found: {self.model_path}")

    def annotate(self, texts: list[str]) -> dict[str, list]:
        if not texts:
            return {"language": [], "language_score": []}
        # fastText predicts per line; a document is one line to it.
        labels, scores = load_model(self.model_path).predict([t.replace("\n", " ") for t in texts], k=1)
        return {
            "language": [label[0].removeprefix("__label__") for label in labels],
            "language_score": [min(float(score[0]), 1.0) for score in scores],
        }

    def check(self, doc: Doc) -> Rejection | None:
        lang, score = doc.annotations["language"], doc.annotations["language_score"]
        if lang not in self.languages:
            return self.reject(
                "not_allowed", score, f"predicted {lang} ({score:.2f}), not one of {sorted(self.languages)}"
            )
        if score < self.min_score:
            return self.reject("low_score", score, f"{lang} with score {score:.2f}, under {self.min_score}")
        return None
