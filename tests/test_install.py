"""What an install leaves behind: numba's cache of the `cache=True` kernels goes to a per-user
cache folder, never beside the sources (inside site-packages once installed, where it survives
`pip uninstall` and later shadows an editable install)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

MODULE = "slimpipe.stages.near_dedup.components"

PROBE = f"""
import json, numpy as np, numba
import {MODULE} as m
nodes, comp = m.components(np.array([0, 2]), np.array([1, 3]))
assert comp.tolist() == [0, 0, 2, 2], comp
print(json.dumps({{"cache_dir": numba.config.CACHE_DIR, "env": __import__("os").environ["NUMBA_CACHE_DIR"]}}))
"""


def _in_tree_cache(source: Path) -> dict[str, int]:
    """numba's in-tree cache files beside `source`, with their modification times."""
    return {str(p): p.stat().st_mtime_ns for p in (source.parent / "__pycache__").glob("*.nb[ic]")}


def _probe(env: dict[str, str], code: str = PROBE) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


def test_numba_cache_goes_to_the_user_cache_not_beside_the_sources(tmp_path):
    spec = importlib.util.find_spec(MODULE)
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin)
    before = _in_tree_cache(source)

    xdg = tmp_path / "xdg"
    got = _probe(_env(tmp_path, XDG_CACHE_HOME=str(xdg)))
    want = xdg / "slimpipe" / "numba"
    assert got["cache_dir"] == got["env"] == str(want)
    # the kernel was compiled and saved there, and nothing new or rewritten beside the source
    saved = list(want.rglob("components._union_find-*.nbi"))
    assert saved, sorted(str(p) for p in want.rglob("*"))
    assert _in_tree_cache(source) == before


def test_numba_cache_defaults_to_home_and_respects_the_users_setting(tmp_path):
    code = "import slimpipe, numba, os; print(__import__('json').dumps({'cache_dir': numba.config.CACHE_DIR}))"
    got = _probe(_env(tmp_path), code)
    assert got["cache_dir"] == str(tmp_path / "home" / ".cache" / "slimpipe" / "numba")

    mine = str(tmp_path / "mine")
    got = _probe(_env(tmp_path, NUMBA_CACHE_DIR=mine), code)
    assert got["cache_dir"] == mine

    # numba imported before slimpipe: the setting still reaches its config
    code = "import numba, slimpipe; print(__import__('json').dumps({'cache_dir': numba.config.CACHE_DIR}))"
    got = _probe(_env(tmp_path), code)
    assert got["cache_dir"] == str(tmp_path / "home" / ".cache" / "slimpipe" / "numba")


def test_the_ray_data_internals_we_build_on_are_there():
    """Ray Data's DeveloperAPI that the project builds on; a Ray release that moves one of them
    fails here, by name, rather than deep inside a run (and pyproject's range must then move)."""
    import inspect

    from ray.data.block import BlockMetadata
    from ray.data.context import DataContext, ShuffleStrategy
    from ray.data.datasource import Datasource, ReadTask

    params = inspect.signature(Datasource.get_read_tasks).parameters
    assert {"parallelism", "per_task_row_limit", "data_context"} <= set(params)
    assert list(inspect.signature(ReadTask.__init__).parameters)[1:3] == ["read_fn", "metadata"]
    assert {"num_rows", "size_bytes", "input_files", "exec_stats"} <= set(inspect.signature(BlockMetadata).parameters)
    ctx = DataContext.get_current()
    for name in (
        "raise_original_map_exception",
        "enable_progress_bars",
        "print_on_execution_start",
        "target_max_block_size",
        "shuffle_strategy",
    ):
        assert hasattr(ctx, name), name
    assert ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
