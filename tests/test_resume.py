"""A killed run resumes and ends with output identical to an uninterrupted run."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import kill_run, write_jsonl

from slimpipe.config import resolve
from slimpipe.runner import run

SETS = ["input.split_bytes=65536", "output.shard_bytes=400000"]


def outputs(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "documents" / "_manifest.json").read_text())
    return {
        "documents": [s["sha256"] for s in manifest["shards"]],
        "duplicates": pq.read_table(run_dir / "duplicates").sort_by("id").to_pylist(),
        "rejected": sorted(
            (r["file"], r["line"], r["reason"])
            for r in pq.read_table(run_dir / "rejected", columns=["file", "line", "reason"]).to_pylist()
        ),
        "conservation": json.loads((run_dir / "stats.json").read_text())["conservation"],
    }


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory, c4_docs):
    """About 8 MB of web text in 4 files, so a run has ~130 chunks to be killed in the middle of."""
    root = tmp_path_factory.mktemp("big")
    for f in range(4):
        docs = [dict(d, id=f"f{f}-{i}-{r}") for r in range(2) for i, d in enumerate(c4_docs)]
        if f == 3:
            docs += [dict(d, id=f"copy-{i}") for i, d in enumerate(c4_docs[:100])]  # exact duplicates
        write_jsonl(root / "cc" / f"shard-{f}.jsonl", docs)
    return root


@pytest.fixture(scope="module")
def uninterrupted(ray_session, big_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    run(resolve("slimpajama", None, SETS, [str(big_corpus)], str(out)))
    return outputs(out)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_identical_output(ray_session, big_corpus, uninterrupted, tmp_path):
    out = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="sp-kill-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""}
    cmd = [
        sys.executable,
        "-m",
        "slimpipe.cli",
        "run",
        "--preset",
        "slimpajama",
        "--input",
        str(big_corpus),
        "--output",
        str(out),
        *[a for s in SETS for a in ("--set", s)],
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            done = list((out / "_work" / "chunks").glob("*.json")) if (out / "_work" / "chunks").exists() else []
            if len(done) >= 10:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        kill_run(proc, ray_tmp)
    plan = json.loads((out / "_work" / "plan.json").read_text())
    finished = len(list((out / "_work" / "chunks").glob("*.json")))
    assert 10 <= finished < len(plan["chunks"])
    assert not (out / "stats.json").exists()

    stats = run(resolve("slimpajama", None, SETS, [str(big_corpus)], str(out)))
    assert stats["resumed"]
    stage = json.loads((out / "run.json").read_text())["stages"]["read_clean_filter"]
    assert stage["reused"] >= 1
    assert outputs(out) == uninterrupted


def finished_run_with_stages_undone(corpus: Path, out: Path, stages: tuple[str, ...]):
    """A finished run whose run.json says `stages` did not finish, as after a crash in them."""
    config = resolve("slimpajama", None, SETS, [str(corpus)], str(out))
    run(config)
    state = json.loads((out / "run.json").read_text())
    for name in stages:
        state["stages"][name].pop("status")
    (out / "run.json").write_text(json.dumps(state))
    return config, state


def test_crash_while_writing_shards_redoes_only_the_missing_ones(ray_session, big_corpus, uninterrupted, tmp_path):
    out = tmp_path / "run"
    config, state = finished_run_with_stages_undone(big_corpus, out, ("write",))
    assert state["stages"]["write"]["shards"] > 2
    # Shard 1 as a crash leaves it: no marker, a stray temporary file, no manifest.
    (out / "_work" / "shards" / "00001.json").unlink()
    (out / "documents" / "part-00001.parquet").rename(out / "documents" / "part-00001.parquet.tmp-dead")
    (out / "documents" / "_manifest.json").unlink()
    kept = (out / "documents" / "part-00000.parquet").stat().st_mtime_ns
    run(config)
    assert (out / "documents" / "part-00000.parquet").stat().st_mtime_ns == kept
    assert (
        json.loads((out / "run.json").read_text())["stages"]["write"]["reused"]
        == state["stages"]["write"]["shards"] - 1
    )
    assert outputs(out) == uninterrupted


def test_crash_inside_dedup_redoes_the_stage(ray_session, big_corpus, uninterrupted, tmp_path):
    out = tmp_path / "run"
    config, _ = finished_run_with_stages_undone(big_corpus, out, ("write", "exact_dedup"))
    for f in list((out / "_work" / "dupsets").glob("*.parquet"))[:2] + list((out / "_work" / "shards").glob("*.json")):
        f.unlink()
    (out / "duplicates" / "part-00000.parquet").write_bytes(b"half a file")
    run(config)
    assert outputs(out) == uninterrupted
