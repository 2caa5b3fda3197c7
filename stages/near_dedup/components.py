"""Connected components of the (verified) edges, by union-find over compact integer arrays."""

from __future__ import annotations

import numba as nb
import numpy as np
import pyarrow as pa


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
    parent = _union_find(dense[: len(u)], dense[len(u) :], len(nodes))
    return nodes, nodes[parent]


# --- connected components in rounds (large-star / small-star, Kiveris et al. 2014) -----------
# Edges are undirected, stored as (hi, lo) with hi > lo. A round is a large-star then a
# small-star; each shuffles the edges on a node (partition_of), so no task holds more than its
# partition and all rows of each of its nodes are in it. At the fixed point every component is a
# star around its lowest node, which names it, as union-find names it; the number of rounds grows
# like log n, not with the diameter (a chain of near-duplicates converges as fast as a clique).


def partition_of(nodes: np.ndarray, partitions: int) -> np.ndarray:
    """A node's shuffle partition: a multiplicative hash, so dense node numbers spread evenly."""
    mixed = nodes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def keyed(batch: pa.Table, column: str, partitions: int) -> pa.Table:
    return batch.append_column("partition", pa.array(partition_of(batch[column].to_numpy(), partitions)))


def edge_table(hi: np.ndarray, lo: np.ndarray) -> pa.Table:
    """(hi, lo) edges, each once."""
    if len(hi):
        hi, lo = np.unique(np.stack([hi, lo], axis=1), axis=0).T
    return pa.table({"hi": pa.array(hi, pa.int64()), "lo": pa.array(lo, pa.int64())})


def normalised_edges(batch: pa.Table) -> pa.Table:
    """(u, v) edges of any orientation -> (hi, lo), self-loops dropped."""
    u, v = batch["u"].to_numpy(), batch["v"].to_numpy()
    keep = u != v
    return edge_table(np.maximum(u, v)[keep], np.minimum(u, v)[keep])


def distinct_edges(rows: pa.Table) -> pa.Table:
    """A partition's edges (keyed on hi, so every copy of an edge is here), each once."""
    return edge_table(rows["hi"].to_numpy(), rows["lo"].to_numpy())


def both_ways(batch: pa.Table) -> pa.Table:
    """Each (hi, lo) as the directed (u, v) in both directions: every node sees all neighbours."""
    hi, lo = batch["hi"].to_numpy(), batch["lo"].to_numpy()
    return pa.table({"u": np.concatenate([hi, lo]), "v": np.concatenate([lo, hi])})


def _least_neighbour(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows sorted by u, and for each row the least v of its u."""
    order = np.argsort(u, kind="stable")
    u, v = u[order], v[order]
    starts = np.flatnonzero(np.concatenate([[True], u[1:] != u[:-1]])) if len(u) else np.zeros(0, np.int64)
    least = np.repeat(np.minimum.reduceat(v, starts), np.diff(np.append(starts, len(u)))) if len(u) else v
    return u, v, least


def large_star(rows: pa.Table) -> pa.Table:
    """(u, v) rows, all of each u's: the edges (v, m) for every v > u, m the least of u and its
    neighbours. Each node's higher neighbours hang from the least node around it."""
    u, v, least = _least_neighbour(rows["u"].to_numpy(), rows["v"].to_numpy())
    keep = v > u
    return edge_table(v[keep], np.minimum(least, u)[keep])


def small_star(edges: pa.Table) -> pa.Table:
    """(hi, lo) edges, all of each hi's (copies do no harm): the edges (lo, m) and (hi, m), m the
    least lo of its hi. Each node and its lower neighbours hang from the least of them."""
    u, v, least = _least_neighbour(edges["hi"].to_numpy(), edges["lo"].to_numpy())
    hi, lo = np.concatenate([v, u]), np.concatenate([least, least])
    keep = hi != lo
    return edge_table(hi[keep], lo[keep])


def edge_ends(batch: pa.Table) -> pa.Table:
    """Each edge's two ends, as (node, is_hi)."""
    hi, lo = batch["hi"].to_numpy(), batch["lo"].to_numpy()
    return pa.table(
        {"node": np.concatenate([hi, lo]), "is_hi": np.concatenate([np.ones(len(hi), bool), np.zeros(len(lo), bool)])}
    )


def star_breaches(ends: pa.Table) -> pa.Table:
    """A partition's edge ends (keyed on the node): how many nodes keep the edges from being
    stars, being the high end of two edges, or a high and a low end. None anywhere: done."""
    node, is_hi = ends["node"].to_numpy(), ends["is_hi"].to_numpy()
    nodes, as_hi = np.unique(node[is_hi], return_counts=True)
    lows = np.unique(node[~is_hi])
    breaches = int(np.sum(as_hi > 1)) + int(np.isin(nodes, lows, assume_unique=True).sum())
    return pa.table({"breaches": [breaches]})


def star_members(batch: pa.Table) -> pa.Table:
    """Converged (hi, lo) edges -> (node, component) for both ends (a root names itself)."""
    hi, lo = batch["hi"].to_numpy(), batch["lo"].to_numpy()
    return pa.table({"node": np.concatenate([hi, lo]), "component": np.concatenate([lo, lo])})


def distinct_members(rows: pa.Table) -> pa.Table:
    """A partition's (node, component) rows (keyed on the node), each node once."""
    node, first = np.unique(rows["node"].to_numpy(), return_index=True)
    return pa.table({"node": node, "component": rows["component"].to_numpy()[first]})
