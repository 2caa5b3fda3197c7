"""Verification: an LSH candidate edge (u, v) stands only if the true Jaccard of u's and v's
shingle sets reaches the threshold (removes LSH false positives)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from slimpipe.schemas import NEAR_VERIFIED_EDGE
from slimpipe.stages.minhash import MinHashParams, jaccard, shingle_set
from slimpipe.stages.near_dedup.nodes import row_of
from slimpipe.stages.normalize import normalize_text


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

    sims = np.array(
        [
            jaccard(shingles_of(u, tu), shingles_of(v, tv))
            for u, v, tu, tv in zip(
                edges["u"].to_pylist(), edges["v"].to_pylist(), edges["text_u"].to_pylist(), edges["text_v"].to_pylist()
            )
        ],
        dtype=np.float64,
    )
    out = pa.table({"u": edges["u"], "v": edges["v"], "similarity": sims}, schema=NEAR_VERIFIED_EDGE)
    return out.filter(pa.array(sims >= threshold))
