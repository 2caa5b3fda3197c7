"""Golden outputs: the bundled sample (web preset), a generated corpus (slimpajama preset) and a
corpus of near-duplicate families (web preset) give
the same documents shards, rejected rows, duplicates and stats numbers as when tests/data/golden.json
was written, so a change of structure cannot change behaviour unnoticed. A change that means to
change the outputs rewrites the file with SLIMPIPE_WRITE_GOLDEN=1 and says why in its commit."""

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import make_corpus
from test_near_dedup import planted_corpus

from slimpipe.cli import SAMPLE_DIR
from slimpipe.config import resolve
from slimpipe.runner import run

GOLDEN = Path(__file__).parent / "data" / "golden.json"


def _canonical(value, roots: list[str]):
    """Floats rounded (their last bits are not behaviour), input paths made relative."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<input>")
        return value
    if isinstance(value, dict):
        return {k: _canonical(v, roots) for k, v in value.items() if "seconds" not in k and k != "timings_s"}
    if isinstance(value, list):
        return [_canonical(v, roots) for v in value]
    return value


def _table_digest(paths: list[Path], roots: list[str], sort: bool) -> str:
    rows = [_canonical(row, roots) for p in paths for row in pq.read_table(p).to_pylist()]
    lines = [json.dumps(row, sort_keys=True, default=str) for row in rows]
    return hashlib.sha256("\n".join(sorted(lines) if sort else lines).encode()).hexdigest()


def digest(run_dir: Path, roots: list[str]) -> dict:
    """sha256 of each documents shard's rows (in order), of all rejected rows and all duplicate
    rows (in any order), and the stats numbers."""
    stats = json.loads((run_dir / "stats.json").read_text())
    return {
        "documents": {
            p.name: _table_digest([p], roots, sort=False) for p in sorted((run_dir / "documents").glob("*.parquet"))
        },
        "rejected": _table_digest(sorted((run_dir / "rejected").glob("*.parquet")), roots, sort=True),
        "duplicates": _table_digest(sorted((run_dir / "duplicates").glob("*.parquet")), roots, sort=True),
        "stats": _canonical({k: v for k, v in stats.items() if k not in ("run", "versions")}, roots),
    }


@pytest.fixture(scope="module")
def outputs(ray_session, c4_docs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    corpus = tmp / "corpus"
    make_corpus(corpus, c4_docs)
    near = tmp / "near"
    planted_corpus(near, c4_docs)
    runs = {
        "sample": ("web", SAMPLE_DIR, []),
        "corpus": ("slimpajama", corpus, []),
        "near": ("web", near, ["filters.language.enabled=false", "input.source_field=source"]),
    }
    out = {}
    for name, (preset, inputs, sets) in runs.items():
        config = resolve(
            preset,
            None,
            ["ray.progress_bars=false", "input.split_bytes=65536", *sets],
            [str(inputs)],
            str(tmp / "runs" / name),
        )
        run(config)
        out[name] = digest(tmp / "runs" / name, [str(inputs.resolve()), str(inputs)])
    return out


def test_outputs_match_the_golden_record(outputs):
    if os.environ.get("SLIMPIPE_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for name in golden:
        for part in ("documents", "rejected", "duplicates"):
            assert outputs[name][part] == golden[name][part], (name, part)
        assert outputs[name]["stats"] == golden[name]["stats"], name
