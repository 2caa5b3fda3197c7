"""Scale benchmark of dedup: does the largest process stay the same size as the corpus grows?

Synthetic corpora of short near-duplicate documents at 1x, 2x, 4x and 8x --docs: pages of real
sentences (the bundled C4 sample) in blank-line paragraphs, 70% of them in families of 50 (a
page and 49 copies with 1% of words replaced), 1% copies of one page with one word changed
(a giant cluster that grows with the corpus), the rest unique. Each is run by `slimpipe run`
(web preset's near-dedup: word 5-grams, xxh32, every candidate verified; filters but the length
rule off, so that every document reaches dedup) as a separate process on every core; /proc is
sampled every 0.2 s for the RSS and the USS (private memory: RSS without the shared pages of Ray's
object store a worker has mapped) of every process of the run (driver, raylet, workers), and each
sample is charged to the step run.json says is running. A Ray worker runs many tasks in turn, so
its memory at a step can be what an earlier task left. Reported per size: documents, candidate
and verified edges, wall time, microseconds per document, and per step the peak RSS of the
largest single process; then the 8x/1x ratios.

    python bench/scale_bench.py --docs 250000 [--scales 1 2 4 8] [--set ray.partition_rows=...]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import zstandard

sys.path.insert(0, str(Path(__file__).parent))
from run_bench import OUT, slimpipe_env  # noqa: E402

from slimpipe.cli import SAMPLE_DIR  # noqa: E402
from slimpipe.near import STEPS  # noqa: E402

STAGES = ["read_clean_filter", "exact_dedup", "unique_ids", "near_dedup", "split", "write"]
FAMILY = 50
SETS = [
    "ray.progress_bars=false",
    *(f"filters.{f}.enabled=false" for f in ("language", "gopher_quality", "gopher_repetition", "fineweb", "c4")),
]


def sentences() -> list[list[str]]:
    """The sample's sentences, as word lists."""
    out = []
    path = next(Path(SAMPLE_DIR).rglob("*.jsonl.zst"))
    with path.open("rb") as f:
        text = zstandard.ZstdDecompressor().stream_reader(f).read().decode()
    for line in text.splitlines():
        for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]):
            if 6 <= len(s.split()) <= 40:
                out.append(s.split())
    return out


def page(pool: list[list[str]], rng: random.Random) -> list[list[str]]:
    """Paragraphs (of sentences' words) of a short page: 60-120 words."""
    paras, words = [], 0
    while words < rng.randint(60, 120):
        para = [w for s in rng.sample(pool, rng.randint(1, 3)) for w in s]
        paras.append(para)
        words += len(para)
    return paras


def edited(paras: list[list[str]], rate: float, vocab: list[str], rng: random.Random) -> list[list[str]]:
    return [[rng.choice(vocab) if rng.random() < rate else w for w in p] for p in paras]


def text_of(paras: list[list[str]]) -> str:
    return "\n\n".join(" ".join(p) for p in paras)


def write_corpus(folder: Path, docs: int, seed: int) -> dict:
    """`docs` short pages as JSONL.gz files of 50,000 records; returns what it wrote."""
    rng = random.Random(seed)
    pool = sentences()
    vocab = sorted({w for s in pool for w in s})
    folder.mkdir(parents=True)
    giant = page(pool, rng)
    giant_docs, family_docs = docs // 100, int(docs * 0.7) // FAMILY * FAMILY
    kinds = ["giant"] * giant_docs + ["family"] * (family_docs // FAMILY) + ["unique"]
    kinds += ["unique"] * (docs - giant_docs - family_docs - 1)
    rng.shuffle(kinds)
    written = {"docs": 0, "bytes": 0}
    out, n = None, 0

    def emit(text: str) -> None:
        nonlocal out, n
        if n % 50_000 == 0:
            if out:
                out.close()
            out = gzip.open(folder / f"part-{n // 50_000:05d}.jsonl.gz", "wt", compresslevel=1)
        out.write(json.dumps({"id": f"d{n:08d}", "text": text}) + "\n")
        written["docs"] += 1
        written["bytes"] += len(text.encode())
        n += 1

    for kind in kinds:
        if kind == "giant":
            copy = [list(p) for p in giant]
            i = rng.randrange(len(copy))
            copy[i][rng.randrange(len(copy[i]))] = rng.choice(vocab)
            emit(text_of(copy))
        elif kind == "family":
            base = page(pool, rng)
            emit(text_of(base))
            for _ in range(FAMILY - 1):
                emit(text_of(edited(base, 0.01, vocab, rng)))
        else:
            emit(text_of(page(pool, rng)))
    out.close()
    return written


def current_step(run_json: Path) -> str:
    try:
        stages = json.loads(run_json.read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return "start"
    for stage in STAGES:
        info = stages.get(stage, {})
        if info.get("status") != "done":
            if stage == "near_dedup":
                done = set(info.get("steps_done", []))
                return "near_dedup." + next((s for s in STEPS if s not in done), "survivors")
            return stage
    return "stats"


def measured_run(corpus: Path, run_dir: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "slimpipe.cli", "run", "--preset", "web", "--input", str(corpus)]
    cmd += ["--output", str(run_dir), *(a for s in SETS + sets for a in ("--set", s))]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=slimpipe_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peaks: dict[str, tuple[int, str]] = {}
    private: dict[str, tuple[int, str]] = {}
    driver: dict[str, int] = {}

    def sample():
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            step = current_step(run_dir / "run.json")
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        mem, name = p.memory_full_info(), " ".join(p.cmdline()[:1])[:60]
                    except psutil.Error:
                        continue
                    if mem.rss > peaks.get(step, (0, ""))[0]:
                        peaks[step] = (mem.rss, name)
                    if p.pid == proc.pid:
                        driver[step] = max(driver.get(step, 0), mem.uss)
                    if mem.uss > private.get(step, (0, ""))[0]:
                        private[step] = (mem.uss, f"{p.pid} {name}")
            except psutil.Error:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0].decode(errors="replace")
    wall = time.perf_counter() - t
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(output[-3000:])
    near = json.loads((run_dir / "run.json").read_text())["stages"]["near_dedup"]
    return {
        "wall_s": round(wall, 2),
        "candidate_edges": near["lsh"]["candidate_edges"],
        "verified_edges": near["verify"]["verified"],
        "rounds": near["components"]["rounds"],
        "step_seconds": {s: near[s]["seconds"] for s in STEPS if s in near},
        "peak_rss_mb": {k: round(v[0] / 2**20) for k, v in peaks.items()},
        "peak_uss_mb": {k: round(v[0] / 2**20) for k, v in private.items()},
        "peak_uss_process": {k: v[1] for k, v in private.items()},
        "driver_uss_mb": {k: round(v / 2**20) for k, v in driver.items()},
        "peak_process": {k: v[1] for k, v in peaks.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=250_000, help="documents at 1x")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--set", action="append", default=[], help="config overrides for every run")
    ap.add_argument("--out", type=Path, default=OUT / "scale.json")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    results = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            corpus = write_corpus(Path(tmp) / "in", args.docs * scale, seed=scale)
            r = {"scale": scale, **corpus, **measured_run(Path(tmp) / "in", Path(tmp) / "run", args.set)}
        r["us_per_doc"] = round(r["wall_s"] / r["docs"] * 1e6, 1)
        r["largest_process_mb"] = max(r["peak_rss_mb"].values())
        r["largest_private_mb"] = max(r["peak_uss_mb"].values())
        results.append(r)
        print(json.dumps(r), flush=True)
        args.out.write_text(json.dumps(results, indent=1))
    first, last = results[0], results[-1]
    head = f"{'scale':>5} {'docs':>9} {'MB':>6} {'cand':>9} {'verified':>9} {'wall s':>7} {'us/doc':>7}"
    print(f"\n{head} {'max RSS':>7} {'max USS':>7}")
    for r in results:
        print(
            f"{r['scale']:>5} {r['docs']:>9} {r['bytes'] / 1e6:>6.0f} {r['candidate_edges']:>9} "
            f"{r['verified_edges']:>9} {r['wall_s']:>7.1f} {r['us_per_doc']:>7.1f} "
            f"{r['largest_process_mb']:>7} {r['largest_private_mb']:>7}"
        )
    for key, what in (("peak_rss_mb", "RSS"), ("peak_uss_mb", "USS (private: no shared object-store pages)")):
        print(f"\npeak {what} of the largest process per step (MB):")
        for s in sorted({s for r in results for s in r[key]}):
            print(f"  {s:<24}" + " ".join(f"{r[key].get(s, 0):>7}" for r in results))
    print(
        f"\n{last['scale']}x / {first['scale']}x: documents {last['docs'] / first['docs']:.2f}, "
        f"edges {last['verified_edges'] / max(1, first['verified_edges']):.2f}, "
        f"largest process RSS {last['largest_process_mb'] / first['largest_process_mb']:.2f}, "
        f"USS {last['largest_private_mb'] / first['largest_private_mb']:.2f}, "
        f"time per document {last['us_per_doc'] / first['us_per_doc']:.2f}"
    )


if __name__ == "__main__":
    main()
