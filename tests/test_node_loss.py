"""A worker node that dies in the middle of a shuffle: on a three-node Ray cluster
(ray.cluster_utils.Cluster), one worker node is killed while near-dedup's LSH shuffle runs and
a fresh one joins; the run finishes with the output of a run on one node (Ray retries the lost
tasks and rebuilds lost blocks from their lineage)."""

import json
import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
from test_near_dedup import NEAR, config_for, planted_corpus

from slimpipe.runner import run

# Started as its own process: a head of 1 CPU and two workers of 1 CPU; argv: the CLI's
# arguments. The worker is killed when run.json shows the LSH step started, and replaced.
NODE_LOSS_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from pathlib import Path
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
    cluster.wait_for_nodes()
    out = Path(sys.argv[sys.argv.index("--output") + 1])
    try:
        env = dict(os.environ, RAY_ADDRESS=cluster.address)
        proc = subprocess.Popen([sys.executable, "-m", "slimpipe.cli", "run", *sys.argv[1:]], env=env)
        killed = False
        while proc.poll() is None:
            try:
                near = json.loads((out / "run.json").read_text())["stages"].get("near_dedup", {})
            except (OSError, ValueError):
                near = {}
            if not killed and "banding" in near and not near.get("steps_done"):
                time.sleep(1.0)  # into the shuffle
                cluster.remove_node(workers[0], allow_graceful=False)
                cluster.add_node(num_cpus=1)
                killed = True
                print("worker node killed in the LSH step", flush=True)
            time.sleep(0.05)
        print("killed" if killed else "not killed", flush=True)
        sys.exit(proc.returncode)
    finally:
        cluster.shutdown()
""")


@pytest.mark.slow
def test_a_worker_node_lost_mid_shuffle_leaves_the_output_unchanged(ray_session, tmp_path, c4_docs):
    planted_corpus(tmp_path / "in", c4_docs)
    sets = ["ray.partition_rows=60"]  # many shuffle tasks, so the kill lands inside one
    local = run(config_for([tmp_path / "in"], tmp_path / "local", *sets))

    args = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "cluster"), "--preset", "slimpajama"]
    args += [a for s in ["input.split_bytes=65536", "input.source_field=source", *NEAR, *sets] for a in ("--set", s)]
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run(
        [sys.executable, "-c", NODE_LOSS_SCRIPT, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "worker node killed in the LSH step" in res.stdout
    remote = json.loads((tmp_path / "cluster" / "stats.json").read_text())
    assert remote["conservation"] == local["conservation"]
    for folder, key in [("documents", "id"), ("duplicates", "id"), ("clusters", "cluster_id")]:
        assert (
            pq.read_table(tmp_path / "cluster" / folder).sort_by(key).to_pylist()
            == pq.read_table(tmp_path / "local" / folder).sort_by(key).to_pylist()
        ), folder
