"""Object storage end to end: every command with its input and run directory on s3:// (moto's
S3 server on 127.0.0.1), as a user runs them, gives what the same commands give on local disk;
a run killed mid-write on S3 resumes to the same output."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import kill_run, make_corpus, outputs, upload, write_jsonl

from slimpipe.config import resolve
from slimpipe.errors import ConfigError
from slimpipe.export import export
from slimpipe.io.fs import (
    list_files,
    read_json,
    read_json_many,
    remove_stale_tmp,
    write_json_atomic,
    write_parquet_atomic,
)
from slimpipe.io.fs import resolve as resolve_fs
from slimpipe.runner import run
from slimpipe.tokens import tokenize, train_tokenizer

TOKENIZER = ["tokenizer.vocab_size=800"]


def slimpipe(s3, *args: str, ray_tmp: str | None = None) -> subprocess.CompletedProcess:
    """One slimpipe command in its own process, as a user runs it, with the storage settings."""
    env = {**os.environ, **s3.env, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp or tempfile.mkdtemp(dir="/tmp")}
    proc = subprocess.run([sys.executable, "-m", "slimpipe.cli", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"slimpipe {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def test_atomic_writes_on_s3_leave_whole_objects_and_clear_temporaries(s3_server, monkeypatch):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    s3_server.bucket("atomic")
    fs, root = resolve_fs("s3://atomic/run")

    def requests_of(write) -> list[str]:
        time.sleep(0.3)  # the server logs a request after answering it: let earlier ones land
        seen = len(s3_server.requests())
        write()
        time.sleep(0.3)
        writes = [r.split("?")[0] for r in s3_server.requests(seen) if not r.startswith(("HEAD", "GET"))]
        return [r for r in writes if not r.endswith("/")]  # folder markers pyarrow keeps after a delete

    # a small file is one PUT to its name: an S3 object lands whole or not at all
    small = requests_of(lambda: write_json_atomic(fs, f"{root}/state.json", {"a": 1}))
    assert small == ["PUT /atomic/run/state.json"]
    # a large one goes to a temporary key in parts, then is copied to its name: a stream closed
    # after an error can only ever complete the temporary object
    big = pa.table({"x": np.random.default_rng(0).integers(0, 2**62, 1_500_000)})
    large = requests_of(lambda: write_parquet_atomic(fs, f"{root}/part.parquet", big))
    assert [r for r in large if ".tmp-" not in r] == ["PUT /atomic/run/part.parquet"]  # the server-side copy
    assert large[-1].startswith("DELETE /atomic/run/part.parquet.tmp-")
    assert read_json(fs, f"{root}/state.json") == {"a": 1}
    assert pq.read_table(f"{root}/part.parquet", filesystem=fs)["x"].equals(big["x"])
    assert sorted(i.base_name for i in list_files(fs, root)) == ["part.parquet", "state.json"]

    # completion records are read in bulk, in the order asked
    names = [f"{root}/markers/{i:03d}.json" for i in range(70)]
    for i, name in enumerate(names):
        write_json_atomic(fs, name, {"records": i})
    assert [r["records"] for r in read_json_many(fs, names[::-1])] == list(range(69, -1, -1))
    fs.delete_dir(f"{root}/markers")

    # a write killed before its copy leaves only a temporary object, which resume clears
    with fs.open_output_stream(f"{root}/documents/part-00001.parquet.tmp-dead") as out:
        out.write(b"half a file")
    remove_stale_tmp(fs, root)
    assert sorted(i.base_name for i in list_files(fs, root, recursive=True)) == ["part.parquet", "state.json"]


def _local_reference(corpus: Path, out: Path) -> Path:
    """The run, tokenizer, tokens and both exports on local disk, in this process."""
    run(resolve(None, None, [], [str(corpus)], str(out)))
    train_tokenizer(str(out), TOKENIZER)
    tokenize(str(out))
    export(str(out), "megatron")
    export(str(out), "arrow", str(out / "export" / "packed"), ["pack.seq_len=256"])
    return out


def _batches(export_dir: str, rank: int) -> list[np.ndarray]:
    from slimpipe.loader import PackedLoader

    loader = PackedLoader(export_dir, batch_size=4, rank=rank, world_size=2, seed=3)
    return [b["input_ids"].numpy() for b in loader]


@pytest.mark.slow
def test_every_command_on_s3_gives_what_it_gives_on_local_disk(s3_server, ray_session, c4_docs, tmp_path):
    fs = s3_server.filesystem()
    bucket = s3_server.bucket("corpora")
    make_corpus(tmp_path / "corpus", c4_docs)
    upload(fs, tmp_path / "corpus", "corpora/corpus")
    local = _local_reference(tmp_path / "corpus", tmp_path / "local")

    run_uri = f"{bucket}/runs/r1"
    summary = slimpipe(s3_server, "run", "--input", f"{bucket}/corpus", "--output", run_uri).stdout
    assert "conservation holds" in summary
    stats = json.loads(slimpipe(s3_server, "stats", run_uri, "--json").stdout)
    assert stats["conservation"] == json.loads((local / "stats.json").read_text())["conservation"]
    assert "removed" in slimpipe(s3_server, "dups", run_uri, "--sample", "2").stdout
    slimpipe(s3_server, "train-tokenizer", run_uri, "--vocab-size", "800")
    slimpipe(s3_server, "tokenize", run_uri)
    slimpipe(s3_server, "export", run_uri, "--format", "megatron")
    slimpipe(s3_server, "export", run_uri, "--format", "arrow", "--seq-len", "256", "--out", f"{run_uri}/export/packed")

    lfs = pafs.LocalFileSystem()
    remote = run_uri.removeprefix("s3://")
    assert outputs(fs, remote, f"{bucket}/corpus/") == outputs(lfs, str(local), f"{tmp_path / 'corpus'}/")
    for sub in ("tokenizer", "tokens", "export/megatron/train", "export/packed/train"):
        local_files = {i.base_name: i.path for i in list_files(lfs, str(local / sub))}
        remote_files = {i.base_name: i.path for i in list_files(fs, f"{remote}/{sub}")}
        assert local_files.keys() == remote_files.keys() and local_files, sub
        for name, path in local_files.items():
            if name == "tokenizer.json":  # names the run it was trained in
                continue
            with lfs.open_input_stream(path) as a, fs.open_input_stream(remote_files[name]) as b:
                assert a.read() == b.read(), f"{sub}/{name} differs"
    assert read_json(fs, f"{remote}/export/megatron/manifest.json")["splits"]["train"]["documents"] > 0

    # the loader reads the export from S3 as from disk, each rank its own half
    env = dict(s3_server.env)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for rank in (0, 1):
            got, want = _batches(f"{run_uri}/export/packed", rank), _batches(str(local / "export" / "packed"), rank)
            assert len(got) == len(want) > 0
            assert all((a == b).all() for a, b in zip(got, want))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.slow
def test_sigkill_mid_write_on_s3_then_resume_gives_identical_output(s3_server, ray_session, c4_docs, tmp_path):
    fs = s3_server.filesystem()
    bucket = s3_server.bucket("killed")
    corpus = tmp_path / "corpus"
    for f in range(2):
        write_jsonl(corpus / "cc" / f"shard-{f}.jsonl", [dict(d, id=f"f{f}-{i}") for i, d in enumerate(c4_docs)])
    upload(fs, corpus, "killed/corpus")
    sets = ["input.split_bytes=65536", "output.shard_bytes=300000"]
    local = tmp_path / "local"
    run(resolve("slimpajama", None, sets, [str(corpus)], str(local)))

    run_uri = f"{bucket}/runs/r1"
    chunks = "killed/runs/r1/_work/chunks"
    args = ["run", "--preset", "slimpajama", "--input", f"{bucket}/corpus", "--output", run_uri]
    args += [a for s in sets for a in ("--set", s)]
    ray_tmp = tempfile.mkdtemp(prefix="sp-s3kill-", dir="/tmp")
    env = {**os.environ, **s3_server.env, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp}
    cmd = [sys.executable, "-m", "slimpipe.cli", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and len(list_files(fs, chunks)) < 6:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        kill_run(proc, ray_tmp)
    plan = read_json(fs, "killed/runs/r1/_work/plan.json")
    assert 6 <= len(list_files(fs, chunks)) < len(plan["chunks"])
    assert read_json(fs, "killed/runs/r1/run.json")["status"] == "running"

    slimpipe(s3_server, *args)
    state = read_json(fs, "killed/runs/r1/run.json")
    # chunks whose marker and parts were all there are reused; one caught between them is redone
    assert state["status"] == "done" and 1 <= state["stages"]["read_clean_filter"]["reused"] < len(plan["chunks"])
    assert not [i.path for i in list_files(fs, "killed/runs/r1", recursive=True) if ".tmp-" in i.base_name]
    got = outputs(fs, "killed/runs/r1", f"{bucket}/corpus/")
    assert got == outputs(pafs.LocalFileSystem(), str(local), f"{corpus}/")


def test_an_fsspec_filesystem_serves_where_pyarrow_has_none():
    fs, path = resolve_fs("memory://slimpipe-test/run")
    write_json_atomic(fs, f"{path}/run.json", {"status": "done"})
    assert read_json(fs, f"{path}/run.json") == {"status": "done"}
    assert [i.base_name for i in list_files(fs, path)] == ["run.json"]
    with pytest.raises(ConfigError, match="no filesystem for nosuch://"):
        resolve_fs("nosuch://bucket/run")
