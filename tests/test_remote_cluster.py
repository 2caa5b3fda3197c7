"""A real remote cluster on loopback: a Ray head and a worker started by the image's own script
(docker/entrypoint.sh, run here on the host), token authentication on, the run directory on
shared storage (S3). `slimpipe run --address` and `ray job submit` both run there and give what a
local run gives."""

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import psutil
import pyarrow.fs as pafs
import pytest
from conftest import free_port, kill_processes_under, make_corpus, outputs, upload, wait_for_port

from slimpipe.config import resolve
from slimpipe.runner import run

ENTRYPOINT = Path(__file__).parents[1] / "docker" / "entrypoint.sh"


class Cluster(NamedTuple):
    env: dict  # what a client of the cluster needs: its address, the token, the storage settings
    address: str
    dashboard: str


def _node(role: str, env: dict, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            ["bash", str(ENTRYPOINT), role, *args], env=env, stdout=out, stderr=out, start_new_session=True
        )


def _alive_nodes(env: dict) -> int:
    probe = "import ray; ray.init(log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def _stop(node: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM to the node's script, which stops its process group; then anything of that node
    still alive (found by its own temp dir, so nothing else on the machine is touched)."""
    if node.poll() is None:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
    kill_processes_under(temp_dir)


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    logs = tmp_path_factory.mktemp("cluster-logs")
    port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # the script turns tokens on
    env.update(
        s3_server.env,
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_HEAD=f"127.0.0.1:{port}",
        SLIMPIPE_RAY_PORT=str(port),
        SLIMPIPE_DASHBOARD_PORT=str(dashboard_port),
        SLIMPIPE_NUM_CPUS="1",
        SLIMPIPE_OBJECT_STORE_BYTES=str(300 * 2**20),
    )
    head_tmp, worker_tmp = (tempfile.mkdtemp(prefix=f"sp-{r}-", dir="/tmp") for r in ("head", "worker"))
    # each node its own agent port: another Ray on this machine (the tests' own) may hold the default
    head = _node(
        "head", {**env, "SLIMPIPE_RAY_TEMP_DIR": head_tmp, "SLIMPIPE_AGENT_PORT": str(free_port())}, logs / "head.log"
    )
    worker = None
    try:
        wait_for_port(dashboard_port, head, "the Ray head's job API", timeout=120)
        worker_env = {**env, "SLIMPIPE_RAY_TEMP_DIR": worker_tmp, "SLIMPIPE_AGENT_PORT": str(free_port())}
        worker = _node("worker", worker_env, logs / "worker.log")
        client = {**env, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": f"127.0.0.1:{port}"}
        deadline = time.time() + 120
        while _alive_nodes(client) < 2:
            assert time.time() < deadline, (logs / "worker.log").read_text()[-3000:]
            time.sleep(1)
        yield Cluster(client, f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}")
    finally:
        if worker is not None:
            _stop(worker, worker_tmp)
        _stop(head, head_tmp)


@pytest.fixture(scope="module")
def corpus_on_s3(s3_server, ray_session, c4_docs, tmp_path_factory):
    """A corpus on S3, and what a local run of it writes (the reference)."""
    root = tmp_path_factory.mktemp("remote-corpus")
    make_corpus(root / "corpus", c4_docs)
    bucket = s3_server.bucket("remote")
    upload(s3_server.filesystem(), root / "corpus", "remote/corpus")
    run(resolve("slimpajama", None, [], [str(root / "corpus")], str(root / "local")))
    return f"{bucket}/corpus", outputs(pafs.LocalFileSystem(), str(root / "local"), f"{root / 'corpus'}/")


def test_a_node_without_a_token_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    proc = subprocess.run(["bash", str(ENTRYPOINT), "head"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "no Ray token" in proc.stderr and "RAY_AUTH_TOKEN" in proc.stderr


@pytest.mark.slow
def test_the_job_api_listens_on_localhost_and_wants_the_token(cluster):
    port = int(cluster.dashboard.rsplit(":", 1)[1])
    listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.dashboard}/api/jobs/", timeout=10)
    assert refused.value.code == 401
    token = cluster.env["RAY_AUTH_TOKEN"]
    request = urllib.request.Request(f"{cluster.dashboard}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    assert urllib.request.urlopen(request, timeout=10).status == 200
    for role in ("head", "worker"):  # the image's healthchecks
        health = subprocess.run(["bash", str(ENTRYPOINT), "health", role], env=cluster.env, capture_output=True)
        assert health.returncode == 0, health.stderr


@pytest.mark.slow
def test_slimpipe_run_with_address_on_the_cluster_writes_to_shared_storage(cluster, corpus_on_s3, s3_server):
    corpus, reference = corpus_on_s3
    out = "s3://remote/runs/by-address"
    cmd = [sys.executable, "-m", "slimpipe.cli", "run", "--preset", "slimpajama", "--address", cluster.address]
    proc = subprocess.run([*cmd, "--input", corpus, "--output", out], env=cluster.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fs = s3_server.filesystem()
    assert outputs(fs, "remote/runs/by-address", f"{corpus}/") == reference
    state = json.loads(fs.open_input_stream("remote/runs/by-address/run.json").read())
    assert state["config"]["ray"]["address"] == cluster.address


@pytest.mark.slow
def test_ray_job_submit_runs_slimpipe_on_the_cluster(cluster, corpus_on_s3, s3_server):
    corpus, reference = corpus_on_s3
    env = {**cluster.env, "SLIMPIPE_DASHBOARD_ADDRESS": cluster.dashboard}
    args = ["--preset", "slimpajama", "--input", corpus, "--output", "s3://remote/runs/by-job"]
    proc = subprocess.run(["bash", str(ENTRYPOINT), "submit", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert "conservation holds" in proc.stdout
    assert outputs(s3_server.filesystem(), "remote/runs/by-job", f"{corpus}/") == reference
