import gzip
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import zstandard

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

SAMPLE_C4 = Path(__file__).parents[1] / "pipeline" / "sample" / "c4" / "c4-en-train-00000-first600.jsonl.zst"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session, with its own short temp dir (socket paths are
    length-limited), stopped by the test session that started it."""
    import ray

    tmp = tempfile.mkdtemp(prefix="sp-ray-", dir="/tmp")
    ray.init(num_cpus=2, _temp_dir=tmp, include_dashboard=False, log_to_driver=False, address="local")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


def processes_under(temp_dir: str) -> list[psutil.Process]:
    """The processes whose command line names temp_dir: the Ray (or node) a test started with its
    own temp dir, and nothing else on the machine."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in (p.info["cmdline"] or [])):
                found.append(p)
        except psutil.Error:
            pass
    return found


def kill_processes_under(temp_dir: str) -> None:
    for p in processes_under(temp_dir):
        try:
            p.kill()
        except psutil.Error:
            pass


def kill_run(proc: subprocess.Popen, ray_tmp: str) -> None:
    """SIGKILL a slimpipe process, then the Ray it started (found by its temp dir)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    kill_processes_under(ray_tmp)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it listened on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


class S3Server(NamedTuple):
    endpoint: str
    env: dict  # what a process (a slimpipe command, a Ray node) needs to reach it
    log: Path  # the server's request log, a line per request

    def requests(self, since: int = 0) -> list[str]:
        """'METHOD /bucket/key?query' of each request logged, after the first `since` of them."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [m.group(1) for line in lines if (m := re.search(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+ \S+)', line))][since:]

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            access_key=self.env["AWS_ACCESS_KEY_ID"],
            secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region=self.env["AWS_DEFAULT_REGION"],
            allow_bucket_creation=True,
        )

    def bucket(self, name: str) -> str:
        """A new bucket; returns its s3:// URI."""
        self.filesystem().create_dir(name)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto's server mode) on 127.0.0.1 for the whole test session; the
    storage settings every process reaches it with are in `env` (pyarrow reads AWS_ENDPOINT_URL)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    log = open(log_path, "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )  # -u: each request logged as it is answered
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        wait_for_port(port, proc, "moto's S3 server")
        yield S3Server(endpoint, env, log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def c4_docs() -> list[dict]:
    """Real web text: the C4 documents the project bundles as its sample."""
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(SAMPLE_C4.read_bytes())).read()
    return [json.loads(line) for line in raw.split(b"\n") if line.strip()]


def write_jsonl(path: Path, records, compression: str | None = None) -> Path:
    data = b"".join(
        (r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in records
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def make_corpus(root: Path, docs: list[dict], seed: int = 0) -> dict:
    """A two-source corpus of real web text with planted exact duplicates (within and across
    sources, and copies differing only in case, punctuation and spacing), short documents, and
    a few bad records. Returns what was planted."""
    from slimpipe.stages.normalize import normalize_text

    rng = random.Random(seed)
    docs = [d for d in docs if len(normalize_text(d["text"])) >= 200]
    web = [dict(d) for d in docs[:300]]
    news = [dict(d) for d in docs[300:450]]
    for i, d in enumerate(web):
        d["id"] = f"web-{i}"
    for i, d in enumerate(news):
        d["id"] = f"news-{i}"
    dup_within = [dict(web[i], id=f"web-dup-{i}") for i in rng.sample(range(300), 20)]
    dup_cross = [dict(web[i], id=f"news-dup-{i}") for i in rng.sample(range(300), 10)]
    variant = [
        dict(web[i], id=f"news-var-{i}", text=web[i]["text"].replace(". ", " .  ")) for i in rng.sample(range(300), 5)
    ]
    short = [{"id": f"short-{i}", "text": f"Too short {i}."} for i in range(7)]
    web_all = web + dup_within + short
    rng.shuffle(web_all)
    news_all = news + dup_cross + variant
    rng.shuffle(news_all)
    write_jsonl(root / "web" / "part-0.jsonl", web_all[:200])
    write_jsonl(root / "web" / "part-1.jsonl.zst", web_all[200:], "zstd")
    write_jsonl(root / "news" / "news.jsonl.gz", news_all, "gzip")
    return {
        "records": len(web_all) + len(news_all),
        "short": len(short),
        "duplicates": len(dup_within) + len(dup_cross) + len(variant),
    }


def filter_settings(name: str, **changes) -> dict:
    """A filter's settings as the presets write them out, with some changed."""
    from slimpipe.config import load_preset

    return {**load_preset("slimpajama")["filters"][name], "enabled": True, **changes}


def make_filter(name: str, **changes):
    from slimpipe.stages.filters import build_filter

    return build_filter(name, filter_settings(name, **changes))


def upload(fs: pafs.FileSystem, local: Path, dest: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            # compression=None: the bytes as they are (pyarrow would gzip a .gz name again)
            with fs.open_output_stream(f"{dest}/{path.relative_to(local).as_posix()}", compression=None) as out:
                out.write(path.read_bytes())


def table(fs: pafs.FileSystem, folder: str, sort: list[str], root: str) -> list[dict]:
    """A folder's rows in a fixed order, input files named relative to the input root."""
    from slimpipe.io.fs import list_files

    paths = [i.path for i in list_files(fs, folder) if i.base_name.endswith(".parquet")]
    rows = pa.concat_tables([pq.read_table(p, filesystem=fs) for p in paths]).to_pylist()
    for r in rows:
        r["file"] = r["file"].removeprefix(root)
    return sorted(rows, key=lambda r: [r[k] for k in sort])


def outputs(fs: pafs.FileSystem, run_dir: str, root: str) -> dict:
    """What a run wrote, comparable across filesystems: every row, with file names relative to
    the input root `root`; the counts; no timings."""
    from slimpipe.io.fs import read_json

    stats = read_json(fs, f"{run_dir}/stats.json")
    return {
        "documents": table(fs, f"{run_dir}/documents", ["id"], root),
        "rejected": table(fs, f"{run_dir}/rejected", ["file", "line", "stage"], root),
        "duplicates": table(fs, f"{run_dir}/duplicates", ["id"], root),
        "conservation": stats["conservation"],
        "sources": stats["sources"],
    }
