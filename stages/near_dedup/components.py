"""Connected components of the (verified) edges, by union-find over compact integer arrays."""

from __future__ import annotations

import numba as nb
import numpy as np


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
