"""Near-dedup benchmark, in one script, on a corpus with planted near-duplicate families
(bench/make_corpus.py --near-share):

1. signature MB/s on one core, in this process, on the same documents: ours (word 5-grams with
   xxh32, character 13-grams with xxh32 and with SHA-1 as the slimpajama preset), datasketch
   (`MinHash.update_batch` per document, its default SHA-1, shingling included) and, with
   --dt-python, datatrove's signature step (its own shingling and hashing);
2. whole runs as separate processes on every core, wall time and peak memory (PSS of the
   process tree): `slimpipe run --preset slimpajama`, the same with xxh32, a one-process
   datasketch loop (MinHashLSH, 9 bands x 13 rows, query then insert), and datatrove's four
   MinHash stages with its defaults;
3. recall and false merges of the slimpipe runs against the planted pairs, by true Jaccard
   (of the preset's own shingles) in bins; and the share of all near removals whose true
   Jaccard to their survivor is below 0.6.

    python bench/near_bench.py --mb 100 [--dt-python /path/to/venv-with-datatrove/bin/python]
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

sys.path.insert(0, str(Path(__file__).parent))
from make_corpus import build  # noqa: E402
from run_bench import OUT, run_measured, slimpipe_env  # noqa: E402

from slimpipe.stages.minhash import MinHashParams, Signer, jaccard, shingle_set, shingles  # noqa: E402
from slimpipe.stages.normalize import normalize_text  # noqa: E402

SIGNATURE_CONFIGS = {
    "word 5-grams, xxh32 (web preset)": MinHashParams(shingle="word", ngram=5, hash="xxh32", scheme="affine32"),
    "char 13-grams, xxh32": MinHashParams(shingle="char", ngram=13, hash="xxh32", scheme="affine32"),
    "char 13-grams, SHA-1 legacy (slimpajama preset)": MinHashParams(),
}
BINS = [(0.0, 0.4), (0.4, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.01)]


def load_texts(corpus: Path, mb: float) -> list[dict]:
    out, size = [], 0
    for path in sorted(corpus.rglob("*.jsonl.zst")):
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
        for line in raw.split(b"\n"):
            if line.strip():
                rec = json.loads(line)
                out.append(rec)
                size += len(rec["text"].encode())
                if size >= mb * 1e6:
                    return out
    return out


def signature_speed(corpus: Path, mb: float, dt_python: str | None) -> dict:
    records = load_texts(corpus, mb)
    texts = [r["text"] for r in records]
    text_mb = sum(len(t.encode()) for t in texts) / 1e6
    results = {}
    for name, params in SIGNATURE_CONFIGS.items():
        signer = Signer(params)
        signer.sign(texts[:10])  # compile (or load the compiled kernels) outside the timing
        t = time.perf_counter()
        norm = signer.normalized(texts)
        t_norm = time.perf_counter()
        signer.sign_normalized(norm)
        done = time.perf_counter()
        results[f"slimpipe, {name}"] = round(text_mb / (done - t), 2)
        # in a run the normalised text is shared with the length rule and exact dedup
        results[f"slimpipe, {name}, on normalised text"] = round(text_mb / (done - t_norm), 2)
    from datasketch import MinHash

    subset = texts[: max(1, len(texts) // 5)]
    subset_mb = sum(len(t.encode()) for t in subset) / 1e6
    for name, params in (("word 5-grams", SIGNATURE_CONFIGS["word 5-grams, xxh32 (web preset)"]),
                         ("char 13-grams", SIGNATURE_CONFIGS["char 13-grams, xxh32"])):
        t = time.perf_counter()
        for text in subset:
            m = MinHash(num_perm=128, seed=1)
            m.update_batch(shingles(text, params))
        results[f"datasketch update_batch, {name}, SHA-1"] = round(subset_mb / (time.perf_counter() - t), 2)
    if dt_python:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            for text in subset:
                f.write(json.dumps({"text": text}) + "\n")
        secs, _, output = run_measured([dt_python, str(Path(__file__).with_name("datatrove_minhash.py")),
                                        "--time-signatures", f.name])
        results["datatrove MinhashDedupSignature, word 5-grams"] = round(
            subset_mb / json.loads(output.strip().splitlines()[-1])["seconds"], 2)
        os.unlink(f.name)
    return {"text_mb": round(text_mb, 2), "mb_s_per_core": results}


def slimpipe_run(corpus: Path, out: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "slimpipe.cli", "run", "--preset", "slimpajama", "--input", str(corpus),
           "--output", str(out), "--set", "ray.progress_bars=false", *sum((["--set", s] for s in sets), [])]
    secs, peak, _ = run_measured(cmd, slimpipe_env())
    stats = json.loads((out / "stats.json").read_text())
    return {"seconds": round(secs, 2), "peak_pss_mb": round(peak / 2**20), "timings_s": stats["timings_s"],
            "near_removed": stats["totals"]["near_dedup"]["duplicates"],
            "exact_removed": stats["totals"]["exact_dedup"]["duplicates"],
            "conservation_holds": stats["conservation"]["holds"]}


def quality(out: Path, corpus: Path, params: MinHashParams) -> dict:
    """Recall and false merges against the planted pairs, by true Jaccard bin."""
    dups = pq.read_table(out / "duplicates", columns=["id", "kept_id", "kind", "file", "line"]).to_pylist()
    kept_for = {d["id"]: d["kept_id"] for d in dups}

    def root(x):
        while x in kept_for:
            x = kept_for[x]
        return x

    pairs = [json.loads(line) for line in corpus.with_name(corpus.name + ".pairs.jsonl").read_text().splitlines()]
    wanted = {p["a"] for p in pairs} | {p["b"] for p in pairs}
    text = {r["id"]: r["text"] for r in load_texts(corpus / "near", 1e9) if r["id"] in wanted}
    sets = {i: shingle_set(normalize_text(t), params) for i, t in text.items()}
    bins = defaultdict(lambda: [0, 0])
    for p in pairs:
        j = jaccard(sets[p["a"]], sets[p["b"]])
        b = next(f"{lo:.2f}-{min(hi, 1):.2f}" for lo, hi in BINS if lo <= j < hi)
        bins[b][0] += 1
        bins[b][1] += root(p["a"]) == root(p["b"])
    return {"pairs_merged_by_true_jaccard": {b: {"pairs": n, "merged": m, "share": round(m / n, 4)}
                                             for b, (n, m) in sorted(bins.items())}}


def removals_below(out: Path, params: MinHashParams, cutoff: float = 0.6) -> dict:
    """Of every near removal in the run, the share whose true Jaccard to its survivor < cutoff."""
    dups = [d for d in pq.read_table(out / "duplicates").to_pylist() if d["kind"] == "near"]
    parts = pq.read_table(out / "_work" / "filtered", columns=["id", "text"])
    text = dict(zip(parts["id"].to_pylist(), parts["text"].to_pylist()))
    low = sum(jaccard(shingle_set(normalize_text(text[d["id"]]), params),
                      shingle_set(normalize_text(text[d["kept_id"]]), params)) < cutoff for d in dups)
    return {"near_removals": len(dups), f"below_{cutoff}": low, "share": round(low / len(dups), 4) if dups else 0.0}


def datasketch_loop(corpus: Path) -> dict:
    secs, peak, output = run_measured([sys.executable, str(Path(__file__).with_name("datasketch_loop.py")), str(corpus)])
    return {"seconds": round(secs, 2), "peak_pss_mb": round(peak / 2**20), **json.loads(output.strip().splitlines()[-1])}


def datatrove_run(corpus: Path, dt_python: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        secs, peak, output = run_measured([dt_python, str(Path(__file__).with_name("datatrove_minhash.py")),
                                           str(corpus), tmp, "--workers", str(workers)])
        removed = sum(len(gzip.decompress(p.read_bytes()).splitlines()) for p in Path(tmp, "removed").rglob("*.gz"))
    return {"seconds": round(secs, 2), "peak_pss_mb": round(peak / 2**20), "removed": removed,
            **json.loads(output.strip().splitlines()[-1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=100.0)
    p.add_argument("--sig-mb", type=float, default=10.0, help="megabytes for the signature timings")
    p.add_argument("--dt-python", help="a Python with datatrove installed, to run it side by side")
    p.add_argument("--skip", nargs="*", default=[], choices=["signatures", "runs", "datasketch", "datatrove", "xxh32"])
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    corpus = OUT / f"near-{int(args.mb)}"
    if not corpus.exists():
        build(args.mb, corpus, [], near_share=0.1)
    cores = len(os.sched_getaffinity(0))
    results = {"cores": cores, "corpus_mb": args.mb}
    if "signatures" not in args.skip:
        results["signatures"] = signature_speed(corpus, args.sig_mb, args.dt_python)
        print(json.dumps(results["signatures"], indent=2), flush=True)
    runs = {}
    if "runs" in args.skip:
        print(json.dumps(results, indent=2))
        return
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        runs["slimpipe slimpajama preset"] = r = slimpipe_run(corpus, Path(tmp) / "sp", [])
        r.update(quality(Path(tmp) / "sp", corpus, MinHashParams()))
        print(json.dumps(r, indent=2), flush=True)
        if "xxh32" not in args.skip:
            params = SIGNATURE_CONFIGS["char 13-grams, xxh32"]
            runs["slimpipe slimpajama preset, xxh32"] = slimpipe_run(corpus, Path(tmp) / "x", [
                "dedup.near.hash=xxh32", "dedup.near.scheme=affine32"])
            params = SIGNATURE_CONFIGS["word 5-grams, xxh32 (web preset)"]
            runs["slimpipe web near-dedup (verified), length filter only"] = r = slimpipe_run(
                corpus, Path(tmp) / "v", ["dedup.near.shingle=word", "dedup.near.ngram=5", "dedup.near.hash=xxh32",
                                          "dedup.near.scheme=affine32", "dedup.near.bands=null",
                                          "dedup.near.rows=null", "dedup.near.verify=true"])
            r.update(quality(Path(tmp) / "v", corpus, params))
            r["removals_below_0.6"] = removals_below(Path(tmp) / "v", params)
            print(json.dumps(r, indent=2), flush=True)
    if "datasketch" not in args.skip:
        runs["datasketch one-process loop"] = datasketch_loop(corpus)
    if args.dt_python and "datatrove" not in args.skip:
        runs["datatrove MinHash, defaults"] = datatrove_run(corpus, args.dt_python, cores)
    results["runs"] = runs
    base = runs.get("datatrove MinHash, defaults", {}).get("seconds")
    if base:
        results["speedup_vs_datatrove"] = {k: round(base / v["seconds"], 2) for k, v in runs.items()}
    (OUT / "near_results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
