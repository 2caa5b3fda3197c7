"""Verification: an LSH candidate edge stands only if the true Jaccard of its two documents'
shingle sets reaches the threshold (removes LSH false positives).

The edges are made unique first and cut into partitions; each document's normalised text goes
to each partition holding one of its edges, once (requests, texts_of), where it is shingled once
for all of that partition's edges (verify)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from slimpipe.schemas import NEAR_VERIFIED_EDGE
from slimpipe.stages.minhash import MinHashParams, jaccard, shingle_set
from slimpipe.stages.near_dedup.nodes import row_of
from slimpipe.stages.normalize import normalize_text


def requests(edges: pa.Table, partition: int) -> pa.Table:
    """The nodes of a partition's (hi, lo) edges, each once: the texts that partition needs."""
    nodes = np.unique(np.concatenate([edges["hi"].to_numpy(), edges["lo"].to_numpy()]))
    return pa.table({"node": nodes, "partition": pa.array(np.full(len(nodes), partition), pa.int64())})


def texts_of(wanted: pa.Table, texts: pa.ChunkedArray) -> pa.Table:
    """(node, partition) requests for nodes of one part, whose text column is `texts` -> (node,
    partition, text): the normalised text, made once per node."""
    nodes, inverse = np.unique(wanted["node"].to_numpy(), return_inverse=True)
    norm = pa.array([normalize_text(t) for t in texts.take(pa.array(row_of(nodes))).to_pylist()], pa.large_string())
    return pa.table({"node": wanted["node"], "partition": wanted["partition"], "text": norm.take(pa.array(inverse))})


def verify(edges: pa.Table, texts: pa.Table, params: MinHashParams, threshold: float) -> pa.Table:
    """(hi, lo) edges and (node, text) for each of their nodes -> the edges whose true
    shingle-set Jaccard reaches the threshold, as (u, v, similarity). Each text is shingled once."""
    shingles = {n: shingle_set(t, params) for n, t in zip(texts["node"].to_pylist(), texts["text"].to_pylist())}
    hi, lo = edges["hi"].to_pylist(), edges["lo"].to_pylist()
    sims = np.array([jaccard(shingles[u], shingles[v]) for u, v in zip(hi, lo)], dtype=np.float64)
    out = pa.table({"u": edges["hi"], "v": edges["lo"], "similarity": sims}, schema=NEAR_VERIFIED_EDGE)
    return out.filter(pa.array(sims >= threshold))
