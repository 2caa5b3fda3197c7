"""Survivors: one document per component by a deterministic policy; every other member becomes a
duplicate row (kind `near`) naming the survivor, and each component a `clusters` row."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.schemas import CLUSTER, NEAR_DUPLICATE

POLICIES = ("lowest_id", "longest", "source_priority")


def _policy_order(members: pa.Table, policy: str, priority: list[str]) -> tuple[np.ndarray, pa.Table]:
    """Row order, best survivor first within each component. Earlier runs' documents (reference)
    always win: they are already in a published dataset."""
    keys = [("component", "ascending"), ("reference", "descending")]
    if policy == "longest":
        keys.append(("bytes", "descending"))
    elif policy == "source_priority":
        rank = {s: i for i, s in enumerate(priority)}
        members = members.append_column(
            "rank", pa.array([rank.get(s, len(priority)) for s in members["source"].to_pylist()], pa.int64())
        )
        keys.append(("rank", "ascending"))
    keys += [("id", "ascending"), ("node", "ascending")]
    return pc.sort_indices(members, keys).to_numpy(), members


def cluster_id_of(kept_id: str) -> str:
    return "near-" + hashlib.blake2b(kept_id.encode(), digest_size=8).hexdigest()


def choose_survivors(members: pa.Table, policy: str, priority: list[str]) -> tuple[pa.Table, pa.Table]:
    """members: one row per component member with node, component, id, source, bytes, file,
    line, chunk, reference, minhash. Returns (duplicate rows with `chunk`, cluster rows)."""
    order, members = _policy_order(members, policy, priority)
    members = members.take(order)
    comp = members["component"].to_numpy()
    n = len(comp)
    first = np.ones(n, bool)
    first[1:] = comp[1:] != comp[:-1]
    starts = np.flatnonzero(first)
    survivor = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    sig = (
        np.stack([np.frombuffer(b, np.uint32) for b in members["minhash"].to_pylist()])
        if n
        else np.zeros((0, 1), np.uint32)
    )
    similarity = (sig == sig[survivor]).mean(axis=1) if n else np.zeros(0)
    kept = members.take(survivor)
    cluster_ids = [cluster_id_of(k) for k in kept["id"].to_pylist()]
    is_dup = ~first & ~members["reference"].to_numpy(zero_copy_only=False)
    dup_idx = np.flatnonzero(is_dup)
    d, k = members.take(dup_idx), kept.take(dup_idx)
    dups = pa.table(
        {
            "id": d["id"],
            "source": d["source"],
            "cluster_id": pa.array([cluster_ids[i] for i in dup_idx], pa.string()),
            "kept_id": k["id"],
            "kept_source": k["source"],
            "kind": pa.array(["near"] * len(dup_idx), pa.string()),
            "similarity": pa.array(similarity[dup_idx], pa.float64()),
            "bytes": d["bytes"],
            "file": d["file"],
            "line": d["line"],
            "chunk": d["chunk"],
        },
        schema=NEAR_DUPLICATE,
    )
    sizes = np.diff(np.append(starts, n))
    sources = members["source"].to_pylist()
    clusters = pa.table(
        {
            "cluster_id": pa.array([cluster_ids[s] for s in starts], pa.string()),
            "size": pa.array(sizes, pa.int64()),
            "removed": pa.array(np.add.reduceat(is_dup.astype(np.int64), starts) if n else [], pa.int64()),
            "kept_id": kept.take(starts)["id"],
            "kept_source": kept.take(starts)["source"],
            "sources": pa.array(
                [sorted(set(sources[s : s + z])) for s, z in zip(starts, sizes)], pa.list_(pa.string())
            ),
        },
        schema=CLUSTER,
    )
    return dups, clusters
