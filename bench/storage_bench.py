"""The same `slimpipe run` with input and run directory on local disk and on S3 (moto's
S3-compatible server on 127.0.0.1), in turns, on one web-like corpus: wall seconds, MB/s per
core and the ratio S3 / local per pair, and the pipeline's own stage timings.

    python bench/storage_bench.py --mb 40 --runs 3

moto runs on the same cores as the pipeline (its CPU is part of the S3 figure) and answers over
loopback (none of a real store's per-request latency): read the ratio as the cost of the
object-store code paths, not as a forecast for a real bucket.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
from make_corpus import main as make_corpus_main
from run_bench import OUT, run_measured, slimpipe_env


def start_s3() -> tuple[subprocess.Popen, dict]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return proc, env


def s3_filesystem(env: dict) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=env["AWS_ENDPOINT_URL"],
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_DEFAULT_REGION"],
        allow_bucket_creation=True,
    )


def upload(fs: pafs.FileSystem, local: Path, dest: str) -> None:
    for path in sorted(local.rglob("*.jsonl.zst")):
        with fs.open_output_stream(f"{dest}/{path.relative_to(local).as_posix()}", compression=None) as out:
            out.write(path.read_bytes())


def one_run(corpus: str, output: str, preset: str, env: dict) -> dict:
    cmd = [sys.executable, "-m", "slimpipe.cli", "run", "--preset", preset, "--input", corpus, "--output", output]
    secs, peak, out = run_measured([*cmd, "--set", "ray.progress_bars=false"], env)
    assert "conservation holds" in out, out[-2000:]
    return {"seconds": secs, "peak_pss_mb": peak / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=40.0, help="text megabytes of the corpus")
    p.add_argument("--runs", type=int, default=3, help="pairs of runs (local, S3)")
    p.add_argument("--preset", default="slimpajama")
    args = p.parse_args()

    corpus = OUT / f"corpus-{args.mb:g}"
    if not corpus.exists():
        sys.argv = ["make_corpus", "--mb", str(args.mb), "--out", str(corpus)]
        make_corpus_main()
    text_mb = json.loads(Path(f"{corpus}.corpus.json").read_text())["bytes"] / 1e6
    cores = len(os.sched_getaffinity(0))
    server, s3_env = start_s3()
    try:
        fs = s3_filesystem(s3_env)
        fs.create_dir("bench")
        upload(fs, corpus, "bench/corpus")
        env = {**slimpipe_env(), **s3_env}
        pairs = []
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            for i in range(args.runs + 1):  # the first pair warms the caches and is not counted
                local = one_run(str(corpus), f"{tmp}/local-{i}", args.preset, env)
                s3 = one_run("s3://bench/corpus", f"s3://bench/runs/{i}", args.preset, env)
                if i:
                    pairs.append((local, s3))
                fs.delete_dir_contents(f"bench/runs/{i}", missing_dir_ok=True)
    finally:
        server.terminate()
        server.wait(timeout=30)

    def med(side: int, key: str) -> float:
        return statistics.median(pair[side][key] for pair in pairs)

    result = {
        "corpus": str(corpus),
        "text_mb": round(text_mb, 2),
        "cores": cores,
        "preset": args.preset,
        "pairs": len(pairs),
        "local": {
            "seconds": round(med(0, "seconds"), 2),
            "mb_s_per_core": round(text_mb / med(0, "seconds") / cores, 2),
            "peak_pss_mb": round(med(0, "peak_pss_mb")),
        },
        "s3": {
            "seconds": round(med(1, "seconds"), 2),
            "mb_s_per_core": round(text_mb / med(1, "seconds") / cores, 2),
            "peak_pss_mb": round(med(1, "peak_pss_mb")),
        },
        "ratio_s3_over_local": sorted(round(s["seconds"] / loc["seconds"], 3) for loc, s in pairs),
    }
    print(json.dumps(result, indent=2))
    (OUT / "storage_bench.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
