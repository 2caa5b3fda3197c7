"""`slimpipe dups`: look at what deduplication removed, cluster by cluster."""
from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.dataset as pads

from slimpipe.config import ConfigError
from slimpipe.storage import exists, join, resolve


def _datasets(run_dir: str):
    fs, path = resolve(run_dir)
    dup_dir, doc_dir = join(path, "duplicates"), join(path, "documents")
    if not exists(fs, doc_dir):
        raise ConfigError(f"{run_dir} has no documents/: is it a finished slimpipe run?")
    dups = pads.dataset(dup_dir, filesystem=fs, format="parquet") if exists(fs, dup_dir) else None
    docs = pads.dataset(doc_dir, filesystem=fs, format="parquet")
    return dups, docs


def _text_of(docs, doc_id: str) -> str:
    t = docs.to_table(columns=["text"], filter=pc.field("id") == doc_id)
    return t["text"][0].as_py() if t.num_rows else "(not found)"


def _format_cluster(dups, docs, cluster_id: str) -> str:
    members = dups.to_table(filter=pc.field("cluster_id") == cluster_id)
    if members.num_rows == 0:
        raise ConfigError(f"no duplicate cluster {cluster_id!r}")
    kept_id = members["kept_id"][0].as_py()
    text = _text_of(docs, kept_id)
    lines = [f"cluster {cluster_id}: kept {kept_id} ({members['kept_source'][0].as_py()}), "
             f"{members.num_rows} removed, kind {members['kind'][0].as_py()}"]
    for row in members.select(["id", "source", "file", "line", "similarity"]).to_pylist():
        lines.append(f"  removed {row['id']} ({row['source']}) {row['file']}:{row['line']} "
                     f"similarity {row['similarity']:.3f}")
    preview = text[:600] + ("..." if len(text) > 600 else "")
    lines.append("  kept text: " + preview.replace("\n", "\n    "))
    return "\n".join(lines)


def show_cluster(run_dir: str, cluster_id: str) -> str:
    dups, docs = _datasets(run_dir)
    if dups is None:
        raise ConfigError(f"{run_dir} has no duplicates")
    return _format_cluster(dups, docs, cluster_id)


def show_sample(run_dir: str, n: int) -> str:
    dups, docs = _datasets(run_dir)
    if dups is None:
        return "no duplicates in this run"
    ids = pc.unique(dups.to_table(columns=["cluster_id"])["cluster_id"]).to_pylist()
    ids = sorted(ids)[:n]
    return "\n\n".join(_format_cluster(dups, docs, c) for c in ids)
