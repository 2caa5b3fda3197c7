"""Survivors: one document per component by a deterministic policy; every other member becomes a
duplicate row (kind `near`) naming the survivor, and each component a `clusters` row.

A component may be larger than a task holds (a template shared by a million pages), so the choice
is made in three steps over partitions of the members by node, never a whole component in one
place: each partition's best member and counts per component (component_partials); per
component, the best of those and its cluster row (component_survivors); and in each partition
again, each member against its component's survivor (duplicates_of). The policy is a total order,
so the best of the partitions' bests is the component's best, whatever the partitioning."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.schemas import CLUSTER, NEAR_DUPLICATE, NEAR_PARTIAL, NEAR_SURVIVOR

POLICIES = ("lowest_id", "longest", "source_priority")


def _policy_order(members: pa.Table, policy: str, priority: list[str]) -> np.ndarray:
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
    return pc.sort_indices(members, keys).to_numpy()


def _firsts(component: np.ndarray) -> np.ndarray:
    """In rows sorted by component: where each component starts."""
    first = np.ones(len(component), bool)
    first[1:] = component[1:] != component[:-1]
    return np.flatnonzero(first)


def cluster_id_of(kept_id: str) -> str:
    return "near-" + hashlib.blake2b(kept_id.encode(), digest_size=8).hexdigest()


def _sources(sources: list, starts: np.ndarray, n: int) -> pa.Array:
    """Per run of rows from each start: the distinct sources, sorted (items may be lists)."""
    out = []
    for s, e in zip(starts, np.append(starts[1:], n)):
        items = sources[s:e]
        out.append(sorted({x for i in items for x in (i if isinstance(i, list) else [i])}))
    return pa.array(out, pa.list_(pa.string()))


def component_partials(members: pa.Table, policy: str, priority: list[str], partition: int) -> pa.Table:
    """members (NEAR_MEMBER rows of one partition) -> per component: its best member here, how
    many members and earlier runs' members it has here, and their sources (NEAR_PARTIAL)."""
    members = members.take(_policy_order(members, policy, priority))
    starts = _firsts(members["component"].to_numpy())
    n = members.num_rows
    best = members.take(pa.array(starts, pa.int64()))
    refs = members["reference"].to_numpy(zero_copy_only=False).astype(np.int64)
    return pa.table(
        {
            "component": best["component"],
            "member_partition": pa.array(np.full(len(starts), partition), pa.int64()),
            "size": pa.array(np.diff(np.append(starts, n)), pa.int64()),
            "references": pa.array(np.add.reduceat(refs, starts) if n else [], pa.int64()),
            "sources": _sources(members["source"].to_pylist(), starts, n),
            **{c: best[c] for c in ("id", "source", "bytes", "node", "reference", "minhash")},
        },
        schema=NEAR_PARTIAL,
    )


def component_survivors(partials: pa.Table, policy: str, priority: list[str]) -> tuple[pa.Table, pa.Table]:
    """All partials of some components -> (their cluster rows, and for each partition a
    component has members in, its survivor: NEAR_SURVIVOR rows keyed on that `partition`)."""
    partials = partials.take(_policy_order(partials, policy, priority))
    comp = partials["component"].to_numpy()
    starts = _firsts(comp)
    n = partials.num_rows
    best = partials.take(pa.array(starts, pa.int64()))
    size = np.add.reduceat(partials["size"].to_numpy(), starts) if n else np.zeros(0, np.int64)
    refs = np.add.reduceat(partials["references"].to_numpy(), starts) if n else np.zeros(0, np.int64)
    kept_is_ref = best["reference"].to_numpy(zero_copy_only=False)
    cluster_ids = pa.array([cluster_id_of(k) for k in best["id"].to_pylist()], pa.string())
    clusters = pa.table(
        {
            "cluster_id": cluster_ids,
            "size": pa.array(size, pa.int64()),
            # every member of this run but the survivor goes; an earlier run's survives if there is one
            "removed": pa.array(size - refs - (~kept_is_ref).astype(np.int64), pa.int64()),
            "kept_id": best["id"],
            "kept_source": best["source"],
            "sources": _sources(partials["sources"].to_pylist(), starts, n),
        },
        schema=CLUSTER,
    )
    of_row = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))  # each partial's component
    survivors = pa.table(
        {
            "partition": partials["member_partition"],
            "component": partials["component"],
            "cluster_id": cluster_ids.take(of_row),
            "kept_id": best["id"].take(of_row),
            "kept_source": best["source"].take(of_row),
            "kept_node": best["node"].take(of_row),
            "kept_minhash": best["minhash"].take(of_row),
        },
        schema=NEAR_SURVIVOR,
    )
    return clusters, survivors


def duplicates_of(members: pa.Table, survivors: pa.Table) -> pa.Table:
    """A partition's members and the survivors of their components -> the duplicate rows (with
    `chunk`): every member but the survivor, earlier runs' members excepted."""
    survivors = survivors.sort_by("component")
    at = np.searchsorted(survivors["component"].to_numpy(), members["component"].to_numpy())
    kept = survivors.take(pa.array(at, pa.int64()))
    is_dup = (members["node"].to_numpy() != kept["kept_node"].to_numpy()) & ~members["reference"].to_numpy(
        zero_copy_only=False
    )
    idx = pa.array(np.flatnonzero(is_dup), pa.int64())
    d, k = members.take(idx), kept.take(idx)
    n = len(idx)
    sig = np.frombuffer(b"".join(d["minhash"].to_pylist()), np.uint32).reshape(n, -1) if n else np.zeros((0, 1))
    kept_sig = np.frombuffer(b"".join(k["kept_minhash"].to_pylist()), np.uint32).reshape(n, -1) if n else sig
    return pa.table(
        {
            "id": d["id"],
            "source": d["source"],
            "cluster_id": k["cluster_id"],
            "kept_id": k["kept_id"],
            "kept_source": k["kept_source"],
            "kind": pa.array(["near"] * n, pa.string()),
            "similarity": pa.array((sig == kept_sig).mean(axis=1) if n else [], pa.float64()),
            "bytes": d["bytes"],
            "file": d["file"],
            "line": d["line"],
            "chunk": d["chunk"],
        },
        schema=NEAR_DUPLICATE,
    )


def choose_survivors(members: pa.Table, policy: str, priority: list[str]) -> tuple[pa.Table, pa.Table]:
    """The three steps on members all in one table: (duplicate rows with `chunk`, cluster rows)."""
    clusters, survivors = component_survivors(component_partials(members, policy, priority, 0), policy, priority)
    return duplicates_of(members, survivors), clusters
