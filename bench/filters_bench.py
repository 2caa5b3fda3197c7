"""Throughput of the filter stage, filter by filter and whole (language ID included), on the shaped
bench corpus, side by side with datatrove's Gopher, C4 and FineWeb filters on the same cleaned
documents; and how often each rule's decisions agree with datatrove's, per shape.

datatrove runs in its own interpreter (`--reference-python`, a virtual environment with
`pip install "datatrove[processing]" spacy`), one core each, one after the other:

    python bench/filters_bench.py [--mb 20] [--corpus bench/out/corpus-100] \
        [--reference-python ../dtvenv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_corpus import build, corpus_records  # noqa: E402

OUT = Path(__file__).parent / "out"
RULES = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


def load_documents(corpus: Path, mb: float) -> tuple[list[str], list[str]]:
    """(texts as the clean stage leaves them, their shapes), about `mb` MB of text."""
    from slimpipe.config import load_preset
    from slimpipe.stages.clean import Cleaner

    cleaner = Cleaner(load_preset("web")["clean"])
    texts, shapes, size = [], [], 0
    for record in corpus_records(corpus):
        texts.append(cleaner.clean(record["text"]))
        shapes.append((record.get("meta") or {}).get("shape", "unknown"))
        size += len(texts[-1].encode())
        if size >= mb * 1e6:
            break
    return texts, shapes


def ours(texts: list[str], text_mb: float) -> tuple[dict, dict]:
    """MB/s per core of each filter alone, of the four rule filters chained, and of the stage as
    the web preset configures it; each rule's keep/reject per document."""
    from slimpipe.config import load_preset
    from slimpipe.stages.filters import FilterStage, build_filter
    from slimpipe.stages.filters.doc import Doc
    from slimpipe.stages.normalize import normalize_text

    cfg = {name: options for name, options in load_preset("web")["filters"].items() if options["enabled"]}
    norms = [len(normalize_text(t)) for t in texts]
    results, decisions = {}, {}
    for name, options in cfg.items():
        flt = build_filter(name, options)
        t = time.perf_counter()
        notes = flt.annotate(texts)
        verdicts = [flt.check(Doc(text, norms[i], {k: v[i] for k, v in notes.items()})) for i, text in enumerate(texts)]
        results[name] = round(text_mb / (time.perf_counter() - t), 2)
        decisions[name] = [v is None for v in verdicts]
    for label, names in (("four rule filters chained", RULES), ("whole stage (web preset)", tuple(cfg))):
        stage = FilterStage({name: cfg[name] for name in names})
        t = time.perf_counter()
        notes = stage.annotate(texts)
        for i, text in enumerate(texts):
            stage.decide(Doc(text, norms[i], {k: v[i] for k, v in notes.items()}))
        results[label] = round(text_mb / (time.perf_counter() - t), 2)
    return results, decisions


def reference_worker(texts_path: Path, out_path: Path) -> None:
    """In datatrove's interpreter: the same timings and decisions with its filters, C4 set as the
    web preset sets it (as FineWeb ran it: no terminal punctuation rule)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    texts = json.loads(texts_path.read_text())
    text_mb = sum(len(t.encode()) for t in texts) / 1e6
    filters = {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb": FineWebQualityFilter(),
    }
    results, decisions = {}, {}
    for name, flt in filters.items():
        docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
        t = time.perf_counter()
        decisions[name] = [flt.filter(d) is True for d in docs]
        results[name] = round(text_mb / (time.perf_counter() - t), 2)
    t = time.perf_counter()
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        all(flt.filter(doc) is True for flt in filters.values())
    results["four rule filters chained"] = round(text_mb / (time.perf_counter() - t), 2)
    out_path.write_text(json.dumps({"results": results, "decisions": decisions}))


def reference(python: str, texts: list[str]) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    texts_path, out_path = OUT / "filters-bench-texts.json", OUT / "filters-bench-reference.json"
    texts_path.write_text(json.dumps(texts))
    subprocess.run([python, __file__, "--reference-worker", str(texts_path), str(out_path)], check=True)
    return json.loads(out_path.read_text())


def agreement_by_shape(mine: dict, theirs: dict, shapes: list[str]) -> dict:
    out = {}
    for rule in RULES:
        same, total = Counter(), Counter(shapes)
        for shape, a, b in zip(shapes, mine[rule], theirs[rule]):
            same[shape] += a == b
        out[rule] = {shape: round(same[shape] / total[shape], 4) for shape in sorted(total)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=20.0)
    p.add_argument("--corpus", type=Path, default=OUT / "corpus-100")
    p.add_argument("--reference-python", help="an interpreter with datatrove and spacy installed")
    p.add_argument("--reference-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reference_worker:
        return reference_worker(*args.reference_worker)
    if not args.corpus.exists():
        build(100, args.corpus, [])
    texts, shapes = load_documents(args.corpus, args.mb)
    text_mb = sum(len(t.encode()) for t in texts) / 1e6
    report = {"documents": len(texts), "text_mb": round(text_mb, 2), "shapes": dict(Counter(shapes))}
    report["slimpipe_mb_s_per_core"], mine = ours(texts, text_mb)
    if args.reference_python:
        theirs = reference(args.reference_python, texts)
        report["datatrove_mb_s_per_core"] = theirs["results"]
        report["ratio"] = {
            k: round(v / theirs["results"][k], 1)
            for k, v in report["slimpipe_mb_s_per_core"].items()
            if k in theirs["results"]
        }
        report["agreement_by_shape"] = agreement_by_shape(mine, theirs["decisions"], shapes)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
