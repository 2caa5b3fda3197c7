"""Tokenize, pack and export: throughput against plain SentencePiece in the same script.

    python bench/tokens_bench.py --mb 100 --model PATH/tokenizer.model [--repeat 2]

1. A finished run over a web-text corpus of --mb (built once under bench/out).
2. Tokenize: plain SentencePiece (`encode` of every document's text, already in memory, with
   one thread per core) against the whole `tokenize` stage on the same cores (Ray actors
   reading the documents Parquet, encoding, writing Arrow), alternated --repeat times.
3. Packing on the CPU, on the run's real token lengths: plan and materialise (numpy, and the
   torch path the GPU runs, here on the CPU) for best-fit decreasing and concatenation at
   2048 and 8192, with the share of documents each method cuts.
4. The whole Arrow export (read tokens, pack, write) on all cores.
Results print as a table and land in bench/out/tokens_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from make_corpus import build  # noqa: E402

OUT = Path(__file__).parent / "out"


def prepare_run(mb: float) -> Path:
    corpus = OUT / f"corpus-{mb:g}"
    if not corpus.exists():
        build(mb, corpus, [])
    run_dir = OUT / f"tokrun-{mb:g}"
    if not (run_dir / "stats.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "slimpipe.cli",
                "run",
                "--preset",
                "slimpajama",
                "--input",
                str(corpus),
                "--output",
                str(run_dir),
                "--set",
                "dedup.near.enabled=false",
                "--set",
                "split.holdout_ratio=0.01",
                "--set",
                "ray.progress_bars=false",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return run_dir


def plain_sentencepiece(model: str, texts: list[str], threads: int) -> float:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model)
    t = time.perf_counter()
    sp.encode(texts, add_bos=True, add_eos=True, num_threads=threads)
    return time.perf_counter() - t


def slimpipe_tokenize(run_dir: Path, model: str) -> float:
    from slimpipe.rundir import RunDir
    from slimpipe.tokens import tokenize

    for sub in ("tokens", "_work/tokens"):
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    rd = RunDir(str(run_dir))
    rd.load_finished()
    rd.state["stages"].pop("tokenize", None)
    rd.save()
    t = time.perf_counter()
    tokenize(str(run_dir), model_path=model, overrides=["ray.progress_bars=false"])
    return time.perf_counter() - t


def packing(run_dir: Path) -> list[dict]:
    from slimpipe.stages.pack import materialize_numpy, materialize_torch, plan

    tables = []
    for f in sorted((run_dir / "tokens").glob("*.arrow")):
        with open(f, "rb") as fh:
            tables.append(pa.ipc.open_stream(fh).read_all())
    ids = pa.concat_tables(tables)["input_ids"].combine_chunks()
    lengths = np.diff(ids.offsets.to_numpy())
    tokens = ids.values.to_numpy()
    nonempty = lengths > 0
    starts = ids.offsets.to_numpy()[:-1][nonempty]
    lengths = lengths[nonempty]
    rows = []
    for seq_len in (2048, 8192):
        for method in ("bfd", "concat"):
            t = time.perf_counter()
            p = plan(lengths, seq_len, method)
            t_plan = time.perf_counter() - t
            t = time.perf_counter()
            materialize_numpy(tokens, starts, p, 0)
            t_np = time.perf_counter() - t
            t = time.perf_counter()
            materialize_torch(tokens, starts, p, 0, "cpu")
            t_torch = time.perf_counter() - t
            n = int(lengths.sum())
            rows.append(
                {
                    "seq_len": seq_len,
                    "method": method,
                    "documents": len(lengths),
                    "tokens": n,
                    "split_share": p.split_documents() / len(lengths),
                    "padding_share": 1 - n / (p.num_sequences * seq_len),
                    "plan_Mtok_s": n / t_plan / 1e6,
                    "numpy_Mtok_s": n / (t_plan + t_np) / 1e6,
                    "torch_cpu_Mtok_s": n / (t_plan + t_torch) / 1e6,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--model", required=True, help="a SentencePiece .model")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    cpus = os.cpu_count() or 1
    run_dir = prepare_run(args.mb)
    docs = pq.read_table(run_dir / "documents", columns=["text"])
    text_mb = pc.sum(pc.binary_length(docs["text"])).as_py() / 1e6
    texts = docs["text"].to_pylist()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    plain, ours = [], []
    for _ in range(args.repeat):
        plain.append(plain_sentencepiece(args.model, texts, cpus))
        ours.append(slimpipe_tokenize(run_dir, args.model))
    del texts
    tok = {
        "text_MB": text_mb,
        "cores": cpus,
        "plain_MB_s_per_core": text_mb / statistics.median(plain) / cpus,
        "stage_MB_s_per_core": text_mb / statistics.median(ours) / cpus,
        "plain_s": plain,
        "stage_s": ours,
    }
    tok["ratio"] = tok["stage_MB_s_per_core"] / tok["plain_MB_s_per_core"]
    pack_rows = packing(run_dir)

    from slimpipe.export import export

    out = OUT / f"export-{args.mb:g}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    manifest = export(str(run_dir), "arrow", str(out), ["pack.seq_len=2048", "ray.progress_bars=false"])
    t_export = time.perf_counter() - t
    tokens = manifest["splits"]["train"]["tokens"] + manifest["splits"]["holdout"]["tokens"]
    exp = {"tokens": tokens, "seconds": t_export, "Mtok_s_per_core": tokens / t_export / 1e6 / cpus}
    ray.shutdown()

    results = {"tokenize": tok, "packing": pack_rows, "export_arrow_2048_bfd": exp}
    (OUT / "tokens_results.json").write_text(json.dumps(results, indent=2))
    print(
        f"tokenize {text_mb:.1f} MB on {cpus} cores: plain sentencepiece {tok['plain_MB_s_per_core']:.2f} MB/s/core, "
        f"tokenize stage {tok['stage_MB_s_per_core']:.2f} MB/s/core, ratio {tok['ratio']:.2f}"
    )
    print(
        f"{'seq_len':>7} {'method':>6} {'split %':>8} {'pad %':>6} {'plan':>8} {'+numpy':>8} {'+torch':>8}"
        "  Mtok/s, 1 core"
    )
    for r in pack_rows:
        print(
            f"{r['seq_len']:>7} {r['method']:>6} {100 * r['split_share']:>8.2f} {100 * r['padding_share']:>6.2f} "
            f"{r['plan_Mtok_s']:>8.1f} {r['numpy_Mtok_s']:>8.1f} {r['torch_cpu_Mtok_s']:>8.1f}"
        )
    print(
        f"export arrow (bfd, 2048): {tokens / 1e6:.1f} M tokens in {t_export:.1f} s, "
        f"{exp['Mtok_s_per_core']:.1f} M tokens/s/core"
    )


if __name__ == "__main__":
    main()
