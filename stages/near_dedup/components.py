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
# small-star; each shuffles the edges on a node, so no task holds more than its partition (and
# a node's neighbourhood). At the fixed point every component is a star around its lowest node,
# which names it, as union-find names it; the number of rounds grows like log n, not with the
# diameter (a chain of near-duplicates converges as fast as a clique).


def normalised_edges(batch: pa.Table) -> pa.Table:
    """(u, v) edges of any orientation -> (hi, lo), self-loops dropped."""
    u, v = batch["u"].to_numpy(), batch["v"].to_numpy()
    keep = u != v
    return pa.table({"hi": np.maximum(u, v)[keep], "lo": np.minimum(u, v)[keep]})


def both_ways(batch: pa.Table) -> pa.Table:
    """Each (hi, lo) as the directed (u, v) in both directions: every node sees all neighbours."""
    hi, lo = batch["hi"].to_numpy(), batch["lo"].to_numpy()
    return pa.table({"u": np.concatenate([hi, lo]), "v": np.concatenate([lo, hi])})


def down_edges(batch: pa.Table) -> pa.Table:
    """Each (hi, lo) as the directed (u=hi, v=lo): every node sees its lower neighbours."""
    return pa.table({"u": batch["hi"], "v": batch["lo"]})


def large_star(joined: pa.Table) -> pa.Table:
    """(u, v, m) with m the least neighbour of u -> the edges (v, min(m, u)) for every v > u:
    each node's higher neighbours hang from the least node around it."""
    u, v, m = (joined[c].to_numpy() for c in ("u", "v", "m"))
    keep = v > u
    return pa.table({"hi": v[keep], "lo": np.minimum(m, u)[keep]})


def small_star(joined: pa.Table) -> pa.Table:
    """(u, v, m) with v < u and m the least such v -> the edges (v, m) and (u, m): each node and
    its lower neighbours hang from the least of them."""
    u, v, m = (joined[c].to_numpy() for c in ("u", "v", "m"))
    hi, lo = np.concatenate([v, u]), np.concatenate([m, m])
    keep = hi != lo
    return pa.table({"hi": hi[keep], "lo": lo[keep]})


def star_members(batch: pa.Table) -> pa.Table:
    """Converged (hi, lo) edges -> (node, component) for both ends (a root names itself)."""
    hi, lo = batch["hi"].to_numpy(), batch["lo"].to_numpy()
    return pa.table({"node": np.concatenate([hi, lo]), "component": np.concatenate([lo, lo])})


def edge_ends(batch: pa.Table) -> pa.Table:
    """Each edge's two ends, marked as its high or its low end (summed per node by star_breaches)."""
    hi, lo = batch["hi"].to_numpy(), batch["lo"].to_numpy()
    ones, zeros = np.ones(len(hi), np.int64), np.zeros(len(hi), np.int64)
    return pa.table(
        {"node": np.concatenate([hi, lo]), "as_hi": np.concatenate([ones, zeros]), "as_lo": np.concatenate([zeros, ones])}
    )


def star_breaches(per_node: pa.Table) -> pa.Table:
    """Nodes (with their sums of edge_ends) that keep the edges from being stars: one that is the
    high end of two edges, or both a high and a low end. None left: the rounds are done."""
    as_hi, as_lo = per_node["sum(as_hi)"].to_numpy(), per_node["sum(as_lo)"].to_numpy()
    return pa.table({"breaches": [int(np.sum((as_hi > 1) | ((as_hi > 0) & (as_lo > 0))))]})
