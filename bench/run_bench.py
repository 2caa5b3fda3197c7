"""Throughput and memory of the foundation pipeline (read, clean, length filter, exact dedup,
write), with a SlimPajama-style single-process baseline measured in the same script.

    python bench/run_bench.py --mb 100 --scale 4 [--from ../shared/data/c4-en-1k/c4_sample.jsonl ...]

1. Per stage, in this process on one core: MB/s of input text through read, clean, normalise +
   length filter, exact dedup and shard writing.
2. The baseline on the same corpus and core: the loop SlimPajama's scripts run (json.loads,
   ftfy.fix_text with NFC, regex normalisation, a hash set, a Parquet writer), for the ratio.
3. The whole `slimpipe run` as a separate process on all cores, on the corpus and on a corpus
   `--scale` times larger: wall time, MB/s per core, and peak memory (PSS, summed over the
   driver and every Ray process it started; PSS counts shared object-store pages once).
Results print as a table and land in bench/out/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from baseline import run as baseline_run  # noqa: E402
from make_corpus import build  # noqa: E402

from slimpipe.config import load_preset  # noqa: E402
from slimpipe.io.discover import discover  # noqa: E402
from slimpipe.io.inputs import plan_chunks  # noqa: E402
from slimpipe.rundir import RunDir  # noqa: E402
from slimpipe.stages.clean import Cleaner  # noqa: E402
from slimpipe.stages.exact_dedup import INDEX_COLUMNS, find_duplicates  # noqa: E402
from slimpipe.stages.filters import FilterStage  # noqa: E402
from slimpipe.stages.normalize import Normalizer  # noqa: E402
from slimpipe.stages.read import read_chunk  # noqa: E402
from slimpipe.stages.write import PartWriter, plan_shards, write_document_shard  # noqa: E402

OUT = Path(__file__).parent / "out"


def stage_throughput(corpus: Path, text_mb: float) -> dict:
    cfg = load_preset("slimpajama")
    files = discover([str(corpus)], cfg["input"]).files
    chunks = plan_chunks(files, cfg["input"]["split_bytes"], lambda jobs: [])
    times = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t
        return out

    tables = timed("read", lambda: [t for c in chunks for t in read_chunk(c, cfg["input"])])
    cleaner, normalizer, filters = Cleaner(cfg["clean"]), Normalizer(), FilterStage(cfg["filters"])
    tables = timed("clean", lambda: [cleaner(t) for t in tables])
    tables = timed("normalise+length filter", lambda: [filters(normalizer(t)) for t in tables])
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = f"{tmp}/_work"
        writer = PartWriter(f"{work}/filtered", f"{tmp}/rejected", 3)
        timed("write parts", lambda: [writer(t) for t in tables])
        rd = RunDir(tmp)

        def dedup():
            index = pa.concat_tables(pq.read_table(p, columns=INDEX_COLUMNS) for p in rd.kept_parts())
            dups = find_duplicates(index)
            for chunk in pc.unique(dups["chunk"]).to_pylist():
                lines = dups.filter(pc.equal(dups["chunk"], chunk)).select(["line"])
                Path(f"{work}/dupsets").mkdir(exist_ok=True)
                pq.write_table(lines, f"{work}/dupsets/{chunk}.parquet")

        timed("exact dedup", dedup)
        shards = plan_shards(rd.in_input_order(rd.kept_parts(), chunks), 128 << 20)
        timed(
            "write shards",
            lambda: [
                write_document_shard(
                    s, f"{tmp}/documents", [f"{work}/dupsets"], f"{work}/ids", 3, {"holdout_ratio": 0, "seed": 0}
                )
                for s in shards
            ],
        )
    result = {k: {"seconds": round(v, 3), "mb_s_per_core": round(text_mb / v, 2)} for k, v in times.items()}
    total = sum(times.values())
    result["all stages, one core"] = {"seconds": round(total, 3), "mb_s_per_core": round(text_mb / total, 2)}
    return result


def baseline(corpus: Path, text_mb: float) -> dict:
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        t = time.perf_counter()
        kept = baseline_run(corpus, Path(tmp) / "out.parquet")
        secs = time.perf_counter() - t
    return {"seconds": round(secs, 3), "mb_s_per_core": round(text_mb / secs, 2), "kept": kept}


def _tree_pss(root: psutil.Process) -> int:
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run a command; (wall seconds, peak PSS of its process tree in bytes, output). Raises on failure."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = [0]

    def sample():
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], _tree_pss(root))
            except psutil.Error:
                pass
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0].decode(errors="replace")
    secs = time.perf_counter() - t
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(output[-3000:])
    return secs, peak[0], output


def slimpipe_env() -> dict:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return env


def whole_run(corpus: Path, text_mb: float, cores: int) -> dict:
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "slimpipe.cli",
            "run",
            "--preset",
            "slimpajama",
            "--input",
            str(corpus),
            "--output",
            f"{tmp}/run",
            "--set",
            "ray.progress_bars=false",
        ]
        secs, peak, _ = run_measured(cmd, slimpipe_env())
        stats = json.loads(Path(f"{tmp}/run/stats.json").read_text())
    timings = stats["timings_s"]
    return {
        "seconds": round(secs, 2),
        "mb_s_per_core": round(text_mb / secs / cores, 2),
        "pipeline_seconds": round(timings["total"], 2),
        "pipeline_mb_s_per_core": round(text_mb / timings["total"] / cores, 2),
        "stages_mb_s_per_core": {
            k: round(text_mb / v / cores, 2) for k, v in timings.items() if k != "total" and v > 0
        },
        "peak_pss_mb": round(peak / 2**20, 1),
        "conservation": stats["conservation"],
        "duplication_pct": stats["totals"]["dedup"]["byte_duplication_pct"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=100.0)
    p.add_argument("--scale", type=int, default=4, help="also run on a corpus this many times larger")
    p.add_argument("--from", dest="extra", type=Path, nargs="*", default=[])
    p.add_argument("--skip-baseline", action="store_true")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    results = {"cores": cores, "runs": {}}
    for scale in sorted({1, args.scale}):
        corpus = OUT / f"corpus-{int(args.mb * scale)}"
        meta = corpus.with_name(corpus.name + ".corpus.json")
        info = json.loads(meta.read_text()) if meta.exists() else build(args.mb * scale, corpus, args.extra)
        text_mb = info["bytes"] / 1e6
        entry = {"text_mb": round(text_mb, 1), "documents": info["documents"]}
        if scale == 1:
            entry["stages_one_core"] = stage_throughput(corpus, text_mb)
            if not args.skip_baseline:
                entry["baseline_one_core"] = baseline(corpus, text_mb)
                ours = entry["stages_one_core"]["all stages, one core"]["mb_s_per_core"]
                entry["ratio_vs_baseline_one_core"] = round(ours / entry["baseline_one_core"]["mb_s_per_core"], 2)
        entry["whole_run"] = whole_run(corpus, text_mb, cores)
        results["runs"][f"{scale}x"] = entry
        print(json.dumps({f"{scale}x": entry}, indent=2), flush=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
