"""Near-dedup stage, after LSH has produced candidate edges:

- verify: an edge (u, v) stands only if the true Jaccard of u's and v's shingle sets reaches the
  threshold (removes LSH false positives);
- components: connected components of the edges, by union-find over compact integer arrays;
- survivors: one document per component by a deterministic policy; every other member becomes a
  duplicate row (kind `near`) naming the survivor, and each component a `clusters` row.

A node is a document's number in the run: (index of its part file << 32) | row in that part.
"""
from __future__ import annotations

import hashlib

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.schemas import CLUSTER, DUPLICATE
from slimpipe.stages.minhash import MinHashParams, jaccard, shingle_set
from slimpipe.stages.normalize import normalize_text

ROW_BITS = 32
POLICIES = ("lowest_id", "longest", "source_priority")


def node_numbers(part_index: int, rows: np.ndarray) -> np.ndarray:
    return (np.int64(part_index) << np.int64(ROW_BITS)) | rows.astype(np.int64)


def part_of(nodes: np.ndarray) -> np.ndarray:
    return nodes >> np.int64(ROW_BITS)


def row_of(nodes: np.ndarray) -> np.ndarray:
    return nodes & np.int64((1 << ROW_BITS) - 1)


# --- verification ---------------------------------------------------------------------------


def attach_texts(edges: pa.Table, texts: pa.ChunkedArray, side: str) -> pa.Table:
    """Add the normalised text of node `side` (all of these edges' `side` nodes live in the part
    whose text column is `texts`)."""
    rows = row_of(edges[side].to_numpy())
    norm = [normalize_text(t) for t in texts.take(pa.array(rows)).to_pylist()]
    return edges.append_column(f"text_{side}", pa.array(norm, pa.large_string()))


def verify(edges: pa.Table, params: MinHashParams, threshold: float) -> pa.Table:
    """Edges whose true shingle-set Jaccard reaches the threshold, with that similarity.
    Each distinct text is shingled once (a bucket's representative meets many members)."""
    cache: dict[int, np.ndarray] = {}

    def shingles_of(node: int, text: str) -> np.ndarray:
        if node not in cache:
            cache[node] = shingle_set(text, params)
        return cache[node]

    sims = np.array([jaccard(shingles_of(u, tu), shingles_of(v, tv)) for u, v, tu, tv in zip(
        edges["u"].to_pylist(), edges["v"].to_pylist(),
        edges["text_u"].to_pylist(), edges["text_v"].to_pylist())], dtype=np.float64)
    out = pa.table({"u": edges["u"], "v": edges["v"], "similarity": sims})
    return out.filter(pa.array(sims >= threshold))


# --- connected components -------------------------------------------------------------------


@nb.njit(cache=True)
def _union_find(u, v, n):
    parent = np.arange(n)
    for i in range(len(u)):
        a, b = u[i], v[i]
        while parent[a] != a:  # find with path halving
            parent[a] = parent[parent[a]]
            a = parent[a]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a != b:  # the smaller index becomes the root, so roots are deterministic
            if a < b:
                parent[b] = a
            else:
                parent[a] = b
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        parent[i] = r
    return parent


def components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(node, component) for every node on an edge; a component is named by its lowest node.
    Memory: the two int64 edge arrays (16 bytes an edge) plus about 24 bytes per distinct node
    (the sorted nodes, the dense edge ends, the parents)."""
    nodes, dense = np.unique(np.concatenate([u, v]), return_inverse=True)
    parent = _union_find(dense[: len(u)], dense[len(u):], len(nodes))
    return nodes, nodes[parent]


# --- survivors ------------------------------------------------------------------------------


def _policy_order(members: pa.Table, policy: str, priority: list[str]) -> np.ndarray:
    """Row order, best survivor first within each component. Earlier runs' documents (reference)
    always win: they are already in a published dataset."""
    keys = [("component", "ascending"), ("reference", "descending")]
    if policy == "longest":
        keys.append(("bytes", "descending"))
    elif policy == "source_priority":
        rank = {s: i for i, s in enumerate(priority)}
        members = members.append_column("rank", pa.array(
            [rank.get(s, len(priority)) for s in members["source"].to_pylist()], pa.int64()))
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
    sig = np.stack([np.frombuffer(b, np.uint32) for b in members["minhash"].to_pylist()]) if n else \
        np.zeros((0, 1), np.uint32)
    similarity = (sig == sig[survivor]).mean(axis=1) if n else np.zeros(0)
    kept = members.take(survivor)
    cluster_ids = [cluster_id_of(k) for k in kept["id"].to_pylist()]
    is_dup = ~first & ~members["reference"].to_numpy(zero_copy_only=False)
    dup_idx = np.flatnonzero(is_dup)
    d, k = members.take(dup_idx), kept.take(dup_idx)
    dups = pa.table({
        "id": d["id"], "source": d["source"],
        "cluster_id": pa.array([cluster_ids[i] for i in dup_idx], pa.string()),
        "kept_id": k["id"], "kept_source": k["source"],
        "kind": pa.array(["near"] * len(dup_idx), pa.string()),
        "similarity": pa.array(similarity[dup_idx], pa.float64()),
        "bytes": d["bytes"], "file": d["file"], "line": d["line"], "chunk": d["chunk"],
    }, schema=DUPLICATE.append(pa.field("chunk", pa.string())))
    sizes = np.diff(np.append(starts, n))
    sources = members["source"].to_pylist()
    clusters = pa.table({
        "cluster_id": pa.array([cluster_ids[s] for s in starts], pa.string()),
        "size": pa.array(sizes, pa.int64()),
        "removed": pa.array(np.add.reduceat(is_dup.astype(np.int64), starts) if n else [], pa.int64()),
        "kept_id": kept.take(starts)["id"], "kept_source": kept.take(starts)["source"],
        "sources": pa.array([sorted(set(sources[s:s + z])) for s, z in zip(starts, sizes)],
                            pa.list_(pa.string())),
    }, schema=CLUSTER)
    return dups, clusters
