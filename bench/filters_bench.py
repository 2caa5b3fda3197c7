"""Throughput of the filter stage, filter by filter and whole, on real web text; with datatrove
installed (`pip install "datatrove[processing]"`), its Gopher, C4 and FineWeb filters run on
the same documents in the same process, for the ratio and for how often the decisions agree.

    python bench/filters_bench.py [--mb 20] [--corpus bench/out/corpus-100]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_corpus import build, corpus_records  # noqa: E402

from slimpipe.config import load_preset  # noqa: E402
from slimpipe.stages.filters import FILTERS, FilterStage  # noqa: E402
from slimpipe.stages.filters.doc import Doc  # noqa: E402
from slimpipe.stages.normalize import normalize_text  # noqa: E402

OUT = Path(__file__).parent / "out"


def load_texts(corpus: Path, mb: float) -> list[str]:
    texts, size = [], 0
    for record in corpus_records(corpus):
        texts.append(record["text"])
        size += len(texts[-1].encode())
        if size >= mb * 1e6:
            break
    return texts


def ours(texts: list[str], text_mb: float) -> tuple[dict, dict]:
    """MB/s per core of each filter alone over every document, and of the stage as configured."""
    cfg = load_preset("web")["filters"]
    norms = [len(normalize_text(t)) for t in texts]
    results, decisions = {}, {}
    for name, options in cfg.items():
        if not options.get("enabled", True):
            continue  # off in the preset (quality: it needs a trained model)
        flt = FILTERS[name](**{k: v for k, v in options.items() if k != "enabled"})
        t = time.perf_counter()
        notes = flt.annotate(texts)
        verdicts = [flt.check(Doc(text, norms[i], {k: v[i] for k, v in notes.items()})) for i, text in enumerate(texts)]
        results[name] = round(text_mb / (time.perf_counter() - t), 2)
        decisions[name] = [v is None for v in verdicts]
    stage = FilterStage(cfg)
    t = time.perf_counter()
    notes = stage.annotate(texts)
    for i, text in enumerate(texts):
        stage.decide(Doc(text, norms[i], {k: v[i] for k, v in notes.items()}))
    results["whole stage (web preset)"] = round(text_mb / (time.perf_counter() - t), 2)
    return results, decisions


def datatrove(texts: list[str], text_mb: float) -> tuple[dict, dict] | None:
    try:
        from datatrove.data import Document
        from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                                GopherRepetitionFilter)
    except ImportError:
        return None
    filters = {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
               "c4": C4QualityFilter(), "fineweb": FineWebQualityFilter()}
    results, decisions = {}, {}
    for name, flt in filters.items():
        docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
        t = time.perf_counter()
        verdicts = [flt.filter(d) for d in docs]
        results[name] = round(text_mb / (time.perf_counter() - t), 2)
        decisions[name] = [v is True for v in verdicts]
    t = time.perf_counter()
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        all(flt.filter(doc) is True for flt in filters.values())
    results["four rule filters chained"] = round(text_mb / (time.perf_counter() - t), 2)
    return results, decisions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=20.0)
    p.add_argument("--corpus", type=Path, default=OUT / "corpus-100")
    args = p.parse_args()
    if not args.corpus.exists():
        build(100, args.corpus, [])
    texts = load_texts(args.corpus, args.mb)
    text_mb = sum(len(t.encode()) for t in texts) / 1e6
    report = {"documents": len(texts), "text_mb": round(text_mb, 2)}
    report["slimpipe_mb_s_per_core"], mine = ours(texts, text_mb)
    theirs = datatrove(texts, text_mb)
    if theirs:
        report["datatrove_mb_s_per_core"], their_decisions = theirs
        report["agreement"] = {name: round(sum(a == b for a, b in zip(mine[name], their_decisions[name])) / len(texts), 4)
                               for name in their_decisions}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
