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

With --graded N, instead: graded pairs. A corpus of --mb of shaped real text plus N pairs (page,
edited copy) in each bin of true Jaccard of GRADED_BINS, computed exactly as the web preset's
verification computes it; the web preset run with its banding before the recall search (9 x 13,
datasketch's balanced choice) and as it is now, the filters but the length rule off so that
every pair reaches dedup: pairs merged per bin, and the cost (candidate pairs, verified pairs,
seconds of the LSH and verify steps, of near-dedup and of the run) of each.

    python bench/near_bench.py --mb 100 [--dt-python /path/to/venv-with-datatrove/bin/python]
    python bench/near_bench.py --mb 20 --graded 1000 [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from itertools import islice
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from make_corpus import (  # noqa: E402
    NEAR_MIN_CHARS,
    Writer,
    build,
    corpus_records,
    near_base_mix,
    replace_words,
    shaped_documents,
    without_broken,
)
from run_bench import OUT, run_measured, slimpipe_env  # noqa: E402

from slimpipe.config import resolve  # noqa: E402
from slimpipe.stages.clean import Cleaner  # noqa: E402
from slimpipe.stages.minhash import MinHashParams, Signer, jaccard, shingle_set, shingles  # noqa: E402
from slimpipe.stages.normalize import normalize_text  # noqa: E402

SIGNATURE_CONFIGS = {
    "word 5-grams, xxh32 (web preset)": MinHashParams(shingle="word", ngram=5, hash="xxh32", scheme="affine32"),
    "char 13-grams, xxh32": MinHashParams(shingle="char", ngram=13, hash="xxh32", scheme="affine32"),
    "char 13-grams, SHA-1 legacy (slimpajama preset)": MinHashParams(),
}
BINS = [(0.0, 0.4), (0.4, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.01)]
GRADED_BINS = [(0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]  # the last one holds 1.0
# the web preset's banding before bands and rows were chosen for recall (datasketch's balanced search)
BANDING_BEFORE = ["dedup.near.bands=9", "dedup.near.rows=13"]


def load_texts(corpus: Path, mb: float) -> list[dict]:
    out, size = [], 0
    for rec in corpus_records(corpus):
        out.append(rec)
        size += len(rec["text"].encode())
        if size >= mb * 1e6:
            break
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
    for name, params in (
        ("word 5-grams", SIGNATURE_CONFIGS["word 5-grams, xxh32 (web preset)"]),
        ("char 13-grams", SIGNATURE_CONFIGS["char 13-grams, xxh32"]),
    ):
        t = time.perf_counter()
        for text in subset:
            m = MinHash(num_perm=128, seed=1)
            m.update_batch(shingles(text, params))
        results[f"datasketch update_batch, {name}, SHA-1"] = round(subset_mb / (time.perf_counter() - t), 2)
    if dt_python:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            for text in subset:
                f.write(json.dumps({"text": text}) + "\n")
        secs, _, output = run_measured(
            [dt_python, str(Path(__file__).with_name("datatrove_minhash.py")), "--time-signatures", f.name]
        )
        results["datatrove MinhashDedupSignature, word 5-grams"] = round(
            subset_mb / json.loads(output.strip().splitlines()[-1])["seconds"], 2
        )
        os.unlink(f.name)
    return {"text_mb": round(text_mb, 2), "mb_s_per_core": results}


def slimpipe_run(corpus: Path, out: Path, sets: list[str], preset: str = "slimpajama") -> dict:
    cmd = [
        sys.executable,
        "-m",
        "slimpipe.cli",
        "run",
        "--preset",
        preset,
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--set",
        "ray.progress_bars=false",
        *sum((["--set", s] for s in sets), []),
    ]
    secs, peak, _ = run_measured(cmd, slimpipe_env())
    stats = json.loads((out / "stats.json").read_text())
    return {
        "seconds": round(secs, 2),
        "peak_pss_mb": round(peak / 2**20),
        "timings_s": stats["timings_s"],
        "near_removed": stats["totals"]["near_dedup"]["duplicates"],
        "exact_removed": stats["totals"]["exact_dedup"]["duplicates"],
        "conservation_holds": stats["conservation"]["holds"],
    }


def survivor_of(out: Path):
    """id -> the document that stands for it in the run (itself, if kept), through exact and near removals."""
    dups = pq.read_table(out / "duplicates", columns=["id", "kept_id"])
    kept_for = dict(zip(dups["id"].to_pylist(), dups["kept_id"].to_pylist()))

    def root(x):
        while x in kept_for:
            x = kept_for[x]
        return x

    return root


def quality(out: Path, corpus: Path, params: MinHashParams) -> dict:
    """Recall and false merges against the planted pairs, by true Jaccard bin."""
    root = survivor_of(out)
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
    return {
        "pairs_merged_by_true_jaccard": {
            b: {"pairs": n, "merged": m, "share": round(m / n, 4)} for b, (n, m) in sorted(bins.items())
        }
    }


def removals_below(out: Path, params: MinHashParams, cutoff: float = 0.6) -> dict:
    """Of every near removal in the run, the share whose true Jaccard to its survivor < cutoff."""
    dups = [d for d in pq.read_table(out / "duplicates").to_pylist() if d["kind"] == "near"]
    parts = pq.read_table(out / "_work" / "filtered", columns=["id", "text"])
    text = dict(zip(parts["id"].to_pylist(), parts["text"].to_pylist()))
    low = sum(
        jaccard(
            shingle_set(normalize_text(text[d["id"]]), params), shingle_set(normalize_text(text[d["kept_id"]]), params)
        )
        < cutoff
        for d in dups
    )
    return {"near_removals": len(dups), f"below_{cutoff}": low, "share": round(low / len(dups), 4) if dups else 0.0}


# --- graded pairs ---------------------------------------------------------------------------


def web_jaccard():
    """True Jaccard of two raw texts as the web preset's verification computes it: cleaned as a
    run cleans, normalised, shingled."""
    config = resolve("web")
    cleaner, params = Cleaner(config["clean"]), MinHashParams.from_config(config["dedup"]["near"])
    return lambda a, b: jaccard(*(shingle_set(normalize_text(cleaner.clean(t)), params) for t in (a, b)))


def graded_bin(similarity: float) -> int | None:
    return next((i for i, (lo, hi) in enumerate(GRADED_BINS) if lo <= similarity < hi or similarity == hi == 1.0), None)


def bin_name(index: int) -> str:
    lo, hi = GRADED_BINS[index]
    return f"[{lo:.1f}, {hi:.1f}{']' if hi == 1.0 else ')'}"


def edited_copy(text: str, target: float, rng: random.Random, vocab: list[str], other: str) -> tuple[str, str]:
    """(copy, kind of edit): words replaced all over at the rate expected to give Jaccard `target`
    on word 5-grams, or, one time in three, one to three lines replaced by lines of `other` (an
    edited section)."""
    lines, others = text.split("\n"), other.split("\n")
    if rng.random() < 1 / 3 and len(lines) > 3:
        k = rng.randint(1, min(3, len(others)))
        i = rng.randrange(len(lines) - k + 1)
        return "\n".join(lines[:i] + rng.sample(others, k) + lines[i + k :]), "lines"
    rate = 1 - (2 * target / (1 + target)) ** (1 / 5)  # a copy keeps about (1 - rate)^5 of its 5-grams
    return replace_words(text, rate, rng, vocab), "words"


def write_graded_pairs(corpus: Path, per_bin: int, seed: int = 0) -> dict:
    """`per_bin` pairs (page, edited copy) in every bin of GRADED_BINS under corpus/graded/, the
    truth in corpus.graded.jsonl: a target drawn in a bin still short of pairs, a copy edited
    towards it, the pair kept if its measured Jaccard lands in a bin still short of pairs."""
    rng = random.Random(f"{seed}-graded-edits")
    similarity = web_jaccard()
    pages = (
        d
        for d in shaped_documents(seed=f"{seed}-graded", shapes=near_base_mix(None))
        if len(d["text"]) >= NEAR_MIN_CHARS
    )
    vocab = sorted({w for d in islice(pages, 300) for w in d["text"].split()})
    counts = [0] * len(GRADED_BINS)
    writer = Writer(corpus / "graded", 2, {})  # the two pages of a pair go to different files
    with corpus.with_name(corpus.name + ".graded.jsonl").open("w") as truth:
        while min(counts) < per_bin:
            lo, hi = GRADED_BINS[rng.choice([i for i, c in enumerate(counts) if c < per_bin])]
            page, other = next(pages), next(pages)
            text, edit = edited_copy(page["text"], rng.uniform(lo, hi), rng, vocab, other["text"])
            j = similarity(page["text"], text)
            b = graded_bin(j)
            if b is None or counts[b] >= per_bin:
                continue
            a, c = f"graded-{writer.count}", f"graded-{writer.count + 1}"
            writer.write({**page, "id": a})
            writer.write({**page, "id": c, "text": text, "url": page["url"] + "?copy"})
            truth.write(json.dumps({"a": a, "b": c, "jaccard": j, "edit": edit}) + "\n")
            counts[b] += 1
    writer.close()
    return {"graded_pairs": sum(counts), "graded_bytes": writer.bytes}


def filters_off() -> list[str]:
    """--set items that turn off every filter of the web preset but the length rule, so that every
    graded pair reaches dedup."""
    return [
        f"filters.{name}.enabled=false"
        for name, f in resolve("web")["filters"].items()
        if name != "length" and f.get("enabled")
    ]


def merged_by_bin(out: Path, truth: list[dict]) -> dict:
    root = survivor_of(out)
    bins = defaultdict(lambda: [0, 0])
    for p in truth:
        cell = bins[bin_name(graded_bin(p["jaccard"]))]
        cell[0] += 1
        cell[1] += root(p["a"]) == root(p["b"])
    return {b: {"pairs": n, "merged": m, "share": round(m / n, 4)} for b, (n, m) in sorted(bins.items())}


def near_cost(out: Path, runs: list[dict]) -> dict:
    """Banding, candidate pairs and seconds of one banding (seconds: the median over its runs)."""
    near = json.loads((out / "stats.json").read_text())["near_dedup"]

    def median(seconds) -> float:
        return round(statistics.median(seconds(r) for r in runs), 2)

    return {
        "banding": {k: near["banding"][k] for k in ("bands", "rows", "chosen_by", "recall_at_threshold")},
        "candidate_pairs": near["lsh"]["candidate_edges"],
        "verified_pairs": near["verify"]["verified"],
        "seconds": {
            "lsh": median(lambda r: r["near"]["lsh"]["seconds"]),
            "verify": median(lambda r: r["near"]["verify"]["seconds"]),
            "near_dedup": median(lambda r: r["timings_s"]["near_dedup"]),
            "run": median(lambda r: r["seconds"]),
        },
    }


def graded_pairs(mb: float, per_bin: int, repeat: int) -> dict:
    corpus = OUT / f"graded-{mb:g}-{per_bin}"
    if not corpus.exists():
        build(mb, corpus, [])
        write_graded_pairs(corpus, per_bin)
    truth = [json.loads(line) for line in corpus.with_name(corpus.name + ".graded.jsonl").read_text().splitlines()]
    bandings = {
        "before (9 x 13)": BANDING_BEFORE,
        f"after (target_recall {resolve('web')['dedup']['near']['target_recall']})": [],
    }
    runs = defaultdict(list)
    results = {"corpus_mb": mb, "pairs_per_bin": per_bin, "filters": "off but the length rule"}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for i in range(repeat):  # alternated, so that a busy machine weighs on both alike
            for name, sets in bandings.items():
                out = Path(tmp) / f"{name.split()[0]}-{i}"
                r = slimpipe_run(corpus, out, [*filters_off(), *sets], preset="web")
                r["near"] = json.loads((out / "stats.json").read_text())["near_dedup"]
                runs[name].append(r)
                if i == repeat - 1:
                    results[name] = {"merged_by_true_jaccard": merged_by_bin(out, truth), **near_cost(out, runs[name])}
                    print(json.dumps({name: results[name]}, indent=2), flush=True)
    return results


def graded_table(results: dict) -> str:
    names = [k for k in results if k.startswith(("before", "after"))]
    merged = {n: results[n]["merged_by_true_jaccard"] for n in names}
    rows = [["true Jaccard", "pairs", *names]]
    for b, cell in merged[names[0]].items():
        rows.append(
            [b, str(cell["pairs"]), *(f"{merged[n][b]['merged']} ({100 * merged[n][b]['share']:.1f}%)" for n in names)]
        )
    rows.append(["recall at threshold", "", *(str(results[n]["banding"]["recall_at_threshold"]) for n in names)])
    rows += [
        [key.replace("_", " "), "", *(str(results[n][key]) for n in names)]
        for key in ("candidate_pairs", "verified_pairs")
    ]
    rows += [
        [f"seconds, {key}", "", *(str(results[n]["seconds"][key]) for n in names)]
        for key in ("lsh", "verify", "near_dedup", "run")
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def datasketch_loop(corpus: Path) -> dict:
    secs, peak, output = run_measured(
        [sys.executable, str(Path(__file__).with_name("datasketch_loop.py")), str(corpus)]
    )
    return {
        "seconds": round(secs, 2),
        "peak_pss_mb": round(peak / 2**20),
        **json.loads(output.strip().splitlines()[-1]),
    }


def datatrove_run(corpus: Path, dt_python: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        secs, peak, output = run_measured(
            [
                dt_python,
                str(Path(__file__).with_name("datatrove_minhash.py")),
                str(corpus),
                tmp,
                "--workers",
                str(workers),
            ]
        )
        removed = sum(len(gzip.decompress(p.read_bytes()).splitlines()) for p in Path(tmp, "removed").rglob("*.gz"))
    return {
        "seconds": round(secs, 2),
        "peak_pss_mb": round(peak / 2**20),
        "removed": removed,
        **json.loads(output.strip().splitlines()[-1]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=100.0)
    p.add_argument("--sig-mb", type=float, default=10.0, help="megabytes for the signature timings")
    p.add_argument("--dt-python", help="a Python with datatrove installed, to run it side by side")
    p.add_argument("--skip", nargs="*", default=[], choices=["signatures", "runs", "datasketch", "datatrove", "xxh32"])
    p.add_argument("--graded", type=int, metavar="N", help="graded-pair mode: N pairs per bin of true Jaccard")
    p.add_argument("--repeat", type=int, default=1, help="graded-pair mode: runs of each banding (median seconds)")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.graded:
        results = graded_pairs(args.mb, args.graded, args.repeat)
        (OUT / "near_graded_results.json").write_text(json.dumps(results, indent=2))
        print(graded_table(results))
        return
    corpus = OUT / f"near-{int(args.mb)}"
    if not corpus.exists():
        # no broken records: datatrove reads text strictly as UTF-8 and stops at the first invalid byte
        build(args.mb, corpus, [], near_share=0.1, shapes=without_broken())
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
            runs["slimpipe slimpajama preset, xxh32"] = slimpipe_run(
                corpus, Path(tmp) / "x", ["dedup.near.hash=xxh32", "dedup.near.scheme=affine32"]
            )
            params = SIGNATURE_CONFIGS["word 5-grams, xxh32 (web preset)"]
            runs["slimpipe web near-dedup (verified), length filter only"] = r = slimpipe_run(
                corpus,
                Path(tmp) / "v",
                [
                    "dedup.near.shingle=word",
                    "dedup.near.ngram=5",
                    "dedup.near.hash=xxh32",
                    "dedup.near.scheme=affine32",
                    "dedup.near.bands=null",
                    "dedup.near.rows=null",
                    "dedup.near.verify=true",
                ],
            )
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
