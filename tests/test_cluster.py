"""The same run on a two-node Ray cluster, driven through the container's entrypoint script,
gives the same output as the local run."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_corpus

from slimpipe.config import resolve
from slimpipe.runner import run

ROOT = Path(__file__).parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"

CLUSTER_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        env = dict(os.environ, RAY_ADDRESS=cluster.address)
        sys.exit(subprocess.call([sys.argv[1], "run", *sys.argv[2:]], env=env))
    finally:
        cluster.shutdown()
""")


def test_entrypoint_rejects_an_unknown_role():
    res = subprocess.run(["bash", str(ENTRYPOINT), "bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and "usage: slimpipe-node" in res.stderr


@pytest.mark.slow
def test_two_node_cluster_gives_the_local_result(ray_session, tmp_path, c4_docs):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, c4_docs)
    sets = ["input.split_bytes=65536", "output.shard_bytes=200000"]
    local = run(resolve("slimpajama", None, sets, [str(corpus)], str(tmp_path / "local")))

    args = [
        "--preset",
        "slimpajama",
        "--input",
        str(corpus),
        "--output",
        str(tmp_path / "cluster"),
        *[a for s in sets for a in ("--set", s)],
    ]
    # ray.cluster_utils.Cluster runs without token authentication: the script is told so
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", SLIMPIPE_INSECURE_NO_AUTH="1")
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run(
        [sys.executable, "-c", CLUSTER_SCRIPT, str(ENTRYPOINT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "conservation holds" in res.stdout
    remote = json.loads((tmp_path / "cluster" / "stats.json").read_text())
    assert remote["conservation"] == local["conservation"]
    m_local = json.loads((tmp_path / "local" / "documents" / "_manifest.json").read_text())
    m_remote = json.loads((tmp_path / "cluster" / "documents" / "_manifest.json").read_text())
    assert [s["sha256"] for s in m_remote["shards"]] == [s["sha256"] for s in m_local["shards"]]
