"""The life of a run directory: its lock, a folder that is not a run, stopping with Ctrl-C or
SIGTERM, a finished run re-run, and failures as one line with their own exit code.

The tests that need signals or exit codes run `python -m slimpipe.cli run` as a subprocess with
its own local Ray (one CPU, its own temp dir, whose processes are killed afterwards)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import kill_processes_under, processes_under, write_jsonl

from slimpipe import cli
from slimpipe.config import resolve
from slimpipe.errors import InputChanged, InputUnreadable, RunLocked
from slimpipe.io.discover import InputError
from slimpipe.rundir import LOCK, AlreadyComplete, RunDir
from slimpipe.runner import run

SETS = ["input.split_bytes=65536", "ray.num_cpus=1", "ray.progress_bars=false"]
STOPPED = "slimpipe: stopped; run the same command to resume"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, c4_docs) -> Path:
    """About 6 MB of web text in 4 files: ~90 read chunks, some seconds of work on one CPU."""
    root = tmp_path_factory.mktemp("lifecycle")
    for f in range(4):
        write_jsonl(root / "cc" / f"shard-{f}.jsonl", [dict(d, id=f"f{f}-{i}") for i, d in enumerate(c4_docs)])
    return root


def config_for(corpus: Path, out: Path) -> dict:
    return resolve("slimpajama", None, SETS, [str(corpus)], str(out))


def cli_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    sets = [a for s in SETS for a in ("--set", s)]
    return ["run", "--preset", "slimpajama", "--input", str(corpus), "--output", str(out), *sets, *extra]


@pytest.fixture
def ray_tmp():
    """A temp dir for the Ray a subprocess starts; whatever Ray process still runs from it at the
    end is killed (found by that dir, so nothing else on the machine is touched)."""
    tmp = tempfile.mkdtemp(prefix="sp-lc-", dir="/tmp")
    yield tmp
    kill_processes_under(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def start(args: list[str], ray_tmp: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "slimpipe.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def lock_written(out: Path) -> bool:
    try:
        return bool(json.loads((out / LOCK).read_text()))
    except (OSError, ValueError):
        return False


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def finished(ray_session, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    run(config_for(corpus, out))
    return out


# --- the lock -----------------------------------------------------------------------------------


def test_a_second_run_on_a_live_run_is_refused_and_the_first_finishes(corpus, tmp_path, ray_tmp):
    out = tmp_path / "run"
    first = start(cli_args(corpus, out), ray_tmp)
    wait_for(lambda: lock_written(out), first)
    lock = json.loads((out / LOCK).read_text())
    assert lock["pid"] == first.pid and lock["command"] == "run"
    t = time.time()
    second = subprocess.run(
        [sys.executable, "-m", "slimpipe.cli", *cli_args(corpus, out)],
        env={**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.time() - t
    assert first.poll() is None, "the first run ended before the second was refused"
    assert second.returncode == 2
    line = last_line(second.stderr)
    assert line.startswith("slimpipe: error:") and "in use by `slimpipe run`" in line
    assert f"pid {first.pid} on {lock['host']}, since {lock['started']}" in line
    assert "Traceback" not in second.stderr and "Started a local Ray" not in second.stderr
    assert json.loads((out / LOCK).read_text())["token"] == lock["token"]  # the first still holds it
    out_text, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    assert "conservation holds" in out_text
    assert json.loads((out / "stats.json").read_text())["conservation"]["holds"]
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    assert not (out / LOCK).exists()
    assert took < 60


def _write_lock(folder: Path, **record) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    base = {"command": "run", "started": "2026-01-01T00:00:00+00:00", "heartbeat": "2026-01-01T00:00:00+00:00"}
    (folder / LOCK).write_text(json.dumps({**base, "token": "theirs", **record}))


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path, caplog, monkeypatch):
    import socket

    from slimpipe import runlock

    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(tmp_path / "a", pid=dead.pid, host=host)
    with caplog.at_level("WARNING", logger="slimpipe"), RunDir(str(tmp_path / "a")).locked("run"):
        held = json.loads((tmp_path / "a" / LOCK).read_text())
        assert held["pid"] == os.getpid() and held["host"] == host and held["token"] != "theirs"
    assert f"pid {dead.pid} on {host}" in caplog.text and "no longer running" in caplog.text
    assert not (tmp_path / "a" / LOCK).exists()  # given back
    # alive on this host: refused at once, the holder's lock left as it was
    _write_lock(tmp_path / "b", pid=os.getppid(), host=host)
    before = (tmp_path / "b" / LOCK).read_bytes()
    with pytest.raises(RunLocked, match=rf"in use by `slimpipe run` \(pid {os.getppid()} on {host}, since 2026"):
        with RunDir(str(tmp_path / "b")).locked("run"):
            pass
    assert (tmp_path / "b" / LOCK).read_bytes() == before
    # another host: stale once its heartbeat is old
    _write_lock(tmp_path / "c", pid=1, host="elsewhere")
    with RunDir(str(tmp_path / "c")).locked("run"):
        pass
    _write_lock(tmp_path / "d", pid=1, host="elsewhere", heartbeat=runlock._now())
    with pytest.raises(RunLocked, match="pid 1 on elsewhere"):
        with RunDir(str(tmp_path / "d")).locked("run"):
            pass
    # our own pid on this host is a run that died before us (a restarted container)
    _write_lock(tmp_path / "f", pid=os.getpid(), host=host)
    with RunDir(str(tmp_path / "f")).locked("run"):
        pass
    # a lock file that is JSON but no record is unreadable: taken over, not a crash
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / LOCK).write_text('["not", "a", "lock"]')
    with RunDir(str(tmp_path / "g")).locked("run"):
        pass
    # the holder refreshes its heartbeat
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    with RunDir(str(tmp_path / "e")).locked("tokenize") as lock:
        first = lock.record["heartbeat"]
        deadline = time.time() + 5
        while json.loads((tmp_path / "e" / LOCK).read_text())["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.05)
        assert json.loads((tmp_path / "e" / LOCK).read_text())["heartbeat"] != first


# --- a folder that is not a run -----------------------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused_unless_forced(ray_session, corpus, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "documents").mkdir()
    (out / "documents" / "old.parquet").write_bytes(b"not ours")
    assert cli.main(cli_args(corpus, out)) == 2
    err = capsys.readouterr().err
    assert last_line(err).startswith("slimpipe: error:") and "holds no slimpipe run" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["documents", "notes.txt"]  # untouched, no lock left
    assert cli.main(cli_args(corpus, out, "--force")) == 0
    assert "conservation holds" in capsys.readouterr().out
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "documents" / "old.parquet").exists()  # a stale file never mixes with outputs
    assert not (out / LOCK).exists()


# --- stopping and finishing ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_says_so_in_one_line_and_resumes(ray_session, corpus, tmp_path, ray_tmp, sig):
    out = tmp_path / "run"
    proc = start(cli_args(corpus, out), ray_tmp)
    chunks = out / "_work" / "chunks"
    wait_for(lambda: chunks.exists() and any(chunks.glob("*.json")), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert last_line(err) == STOPPED
    assert "Traceback" not in err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert not (out / LOCK).exists()
    deadline = time.time() + 20
    while processes_under(ray_tmp) and time.time() < deadline:
        time.sleep(0.2)
    assert not processes_under(ray_tmp), "the Ray it started was not shut down"
    if sig == signal.SIGINT:  # the same command resumes it
        stats = run(config_for(corpus, out))
        assert stats["resumed"] and stats["conservation"]["holds"]
        assert json.loads((out / "run.json").read_text())["status"] == "done"


def test_a_finished_run_rerun_is_already_complete_without_ray(finished, corpus, capsys, monkeypatch):
    from slimpipe import runner

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a finished run")

    monkeypatch.setattr(runner, "init_ray", no_ray)
    stats_json = (finished / "stats.json").read_bytes()
    run_json = (finished / "run.json").read_bytes()
    assert cli.main(cli_args(corpus, finished)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{finished}: already complete") and "conservation holds" in out
    assert (finished / "stats.json").read_bytes() == stats_json  # timings kept, nothing rewritten
    assert (finished / "run.json").read_bytes() == run_json
    again = run(config_for(corpus, finished))
    assert isinstance(again, AlreadyComplete) and again["resumed"]


def test_a_resumed_run_keeps_the_timings_of_stages_it_did_not_redo(ray_session, finished, corpus, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = json.loads((out / "stats.json").read_text())["timings_s"]
    state = json.loads((out / "run.json").read_text())
    state["stages"]["write"].pop("status")  # as after a crash while writing shards
    state["status"] = "failed: OSError"
    (out / "run.json").write_text(json.dumps(state))
    stats = run(config_for(corpus, out))
    after = stats["timings_s"]
    for name in ("read_clean_filter", "exact_dedup", "unique_ids", "near_dedup", "split"):
        assert after[name] == pytest.approx(before[name])
    assert after["total"] == pytest.approx(sum(v for k, v in after.items() if k != "total"))
    assert json.loads((out / "stats.json").read_text())["timings_s"] == after


# --- failures: one line, an exit code each ------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_an_output_that_cannot_be_written_is_one_line(corpus, tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert cli.main(cli_args(corpus, parent / "run")) == 4
    finally:
        parent.chmod(0o700)
    err = capsys.readouterr().err
    assert last_line(err).startswith("slimpipe: permission denied:") and "Traceback" not in err


def test_failures_map_to_exit_codes(tmp_path, capsys, monkeypatch):
    from ray.exceptions import RayTaskError, UserCodeException

    from slimpipe import runner

    def wrapped(cause: BaseException) -> BaseException:
        return RayTaskError("read", "Traceback ...\nremote frames", cause).as_instanceof_cause()

    try:
        raise InputChanged("a.jsonl changed: size 10 -> 12")
    except InputChanged as inner:
        try:
            raise RuntimeError("a stage failed") from inner
        except RuntimeError as outer:
            changed = outer
    ray_data_text = UserCodeException(
        "UDF failed to process a data block.\nTraceback (most recent call last):\n  File ...\n"
        "OSError: [Errno 28] No space left on device: '/out/run/_work/x.parquet'\n"
    )
    cases = {
        4: [
            OSError(errno.ENOSPC, "No space left on device"),
            PermissionError(errno.EACCES, "Permission denied", "/out/run/.lock"),
            OSError(errno.EROFS, "Read-only file system"),
            wrapped(OSError(errno.ENOSPC, "No space left on device")),
            ray_data_text,
        ],
        5: [
            wrapped(InputUnreadable("a.jsonl: unreadable after 3 tries")),
            changed,
            InputError("cannot read input file /in/b.jsonl: FileNotFoundError: dangling link"),  # at discovery
        ],
        130: [KeyboardInterrupt()],
    }
    for code, excs in cases.items():
        for exc in excs:
            found = cli.failure(exc)
            assert found is not None and found[0] == code, (exc, found)
            assert "\n" not in found[1] and "remote frames" not in found[1]
    retry_note = (
        "\nFailed to apply UDF transform after 1/1 attempts (total backoff 0.0s).\nTo change retry attempts, ..."
    )
    assert cli.failure(wrapped(InputUnreadable("a.jsonl: gone" + retry_note)))[1] == "input unreadable: a.jsonl: gone"
    no_space = OSError(errno.ENOSPC, "No space left on device", retry_note)  # where Ray puts it
    assert cli.failure(wrapped(no_space))[1] == "no space left: [Errno 28] No space left on device"
    assert cli.failure(ValueError("a bug")) is None
    assert cli.failure(FileNotFoundError(errno.ENOENT, "no such file")) is None

    def full(config, force=False):
        raise wrapped(OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(runner, "run", full)
    assert cli.main(["run", "--output", str(tmp_path / "r")]) == 4
    err = capsys.readouterr().err
    assert err.strip() == "slimpipe: no space left: [Errno 28] No space left on device"
    assert cli.main(["-v", "run", "--output", str(tmp_path / "r")]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and last_line(err).startswith("slimpipe: no space left")
    assert cli.main(["run", "--output", str(tmp_path / "r"), "--verbose"]) == 4
    assert "Traceback" in capsys.readouterr().err
