"""LSH banding: which documents become candidate near-duplicates.

A signature of `bands * rows` values is cut into bands; each band is hashed to a 64-bit bucket
key. Documents that share a bucket in any band are candidates. The buckets are found by a hash
shuffle of (band, key, node) rows (the LSH step's Ray groupby); inside one shuffle partition the
rows are sorted and each bucket emits one edge per member to its representative (the lowest
node), never all pairs, so a bucket of a million near-identical pages costs linear work.

Bands and rows, unless set: with verification on, the steepest S-curve that still catches a pair
at the threshold with probability `target_recall` (false candidates are verified away, missed
pairs are lost); with it off, datasketch's balance of false positives and false negatives.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import pyarrow as pa

from slimpipe.schemas import NEAR_BAND_ROW, NEAR_EDGE


def catch_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents of this Jaccard similarity share at least one bucket."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def _miss_probability(similarity: float, bands: int, rows: int) -> float:
    return 1.0 - catch_probability(similarity, bands, rows)


def optimal_bands_rows(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """datasketch's MinHashLSH parameter search: the (bands, rows) with bands * rows <= num_perm
    minimising the weighted areas of false positives below and false negatives above the
    threshold."""
    from scipy.integrate import quad  # here: a third of a second to import, in every worker

    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = quad(catch_probability, 0.0, threshold, args=(b, r))[0]
            fn = quad(_miss_probability, threshold, 1.0, args=(b, r))[0]
            err = fp * fp_weight + fn * fn_weight
            if err < best_err:
                best, best_err = (b, r), err
    return best


def recall_bands_rows(threshold: float, num_perm: int, target_recall: float) -> tuple[int, int]:
    """The (bands, rows) with bands * rows <= num_perm that catch a pair at the threshold with at
    least `target_recall` probability and let through the fewest false candidates (the least area
    under the S-curve below the threshold). For verified runs: verification drops every false
    candidate, at a cost, but nothing brings back a pair the LSH missed."""
    from scipy.integrate import quad  # here, not at the top: see optimal_bands_rows

    best, best_fp = None, float("inf")
    for r in range(1, num_perm + 1):
        # the fewest bands that reach the target: more only add false candidates and shuffle rows
        b = next((b for b in range(1, num_perm // r + 1) if catch_probability(threshold, b, r) >= target_recall), None)
        if b is None:
            continue
        fp = quad(catch_probability, 0.0, threshold, args=(b, r))[0]
        if fp < best_fp:
            best, best_fp = (b, r), fp
    if best is None:
        raise ValueError(
            f"no banding of num_perm {num_perm} catches a pair at Jaccard {threshold} with probability "
            f"{target_recall} (dedup.near.target_recall): raise num_perm or lower target_recall"
        )
    return best


def _choose_bands(near: dict) -> tuple[int, int, str]:
    """(bands, rows, how they were chosen): as set; else, with verification, the recall-first
    search; else datasketch's balanced search."""
    if near.get("bands") and near.get("rows"):
        bands, rows = int(near["bands"]), int(near["rows"])
        if bands * rows > near["num_perm"]:
            raise ValueError(f"dedup.near.bands * rows = {bands * rows} exceeds num_perm {near['num_perm']}")
        return bands, rows, "config"
    if near["verify"]:
        return (*recall_bands_rows(near["threshold"], near["num_perm"], near["target_recall"]), "target_recall")
    return (*optimal_bands_rows(near["threshold"], near["num_perm"]), "datasketch")


def resolve_bands(near: dict) -> dict:
    """The banding a run uses, how it was chosen, its catch probability at the threshold (the
    expected recall of pairs at the threshold) and its S-curve."""
    bands, rows, chosen_by = _choose_bands(near)
    curve = {f"{s / 20:.2f}": round(catch_probability(s / 20, bands, rows), 6) for s in range(21)}
    return {
        "bands": bands,
        "rows": rows,
        "permutations_used": bands * rows,
        "chosen_by": chosen_by,
        "threshold": near["threshold"],
        "recall_at_threshold": round(catch_probability(near["threshold"], bands, rows), 6),
        "s_curve": curve,
    }


@nb.njit(cache=True)
def _band_keys(sigs, bands, rows, out):
    for i in range(sigs.shape[0]):
        for band in range(bands):
            h = np.uint64(0x9E3779B97F4A7C15) * np.uint64(band + 1)
            for j in range(band * rows, (band + 1) * rows):
                h = (h ^ np.uint64(sigs[i, j])) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(33)  # murmur3's fmix64
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xC4CEB9FE1A85EC53)
            h ^= h >> np.uint64(33)
            out[i, band] = h


def band_rows(nodes: np.ndarray, sigs: np.ndarray, bands: int, rows: int, partitions: int) -> pa.Table:
    """One (band, key, node, partition) row per document and band."""
    keys = np.empty((len(nodes), bands), np.uint64)
    _band_keys(sigs, bands, rows, keys)
    return pa.table(
        {
            "band": np.tile(np.arange(bands, dtype=np.int32), len(nodes)),
            "key": keys.ravel(),
            "node": np.repeat(nodes.astype(np.int64), bands),
            "partition": (keys.ravel() % np.uint64(partitions)).astype(np.int64),
        },
        schema=NEAR_BAND_ROW,
    )


def bucket_edges(rows: pa.Table) -> pa.Table:
    """Edges (node, rep) of one shuffle partition: every member of a bucket to its lowest node.
    Deterministic whatever the row order; each distinct edge once."""
    band = rows["band"].to_numpy()
    key = rows["key"].to_numpy()
    node = rows["node"].to_numpy()
    order = np.lexsort((node, key, band))
    band, key, node = band[order], key[order], node[order]
    first = np.ones(len(node), bool)
    first[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    rep = node[np.maximum.accumulate(np.where(first, np.arange(len(node)), 0))]
    member = (~first) & (node != rep)
    edges = (
        np.unique(np.stack([node[member], rep[member]], axis=1), axis=0) if member.any() else np.zeros((0, 2), np.int64)
    )
    return pa.table({"u": edges[:, 0], "v": edges[:, 1]}, schema=NEAR_EDGE)
