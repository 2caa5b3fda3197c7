"""Exact dedup stage: global across sources. Rows are hash-partitioned on `text_hash` by a Ray
shuffle, so all copies of a text meet in one partition; there the first copy in input order
(file, then line) survives and every other copy becomes a duplicate row naming the survivor."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.schemas import DUPLICATE


def hash_words(column: pa.ChunkedArray) -> np.ndarray:
    """The 16-byte hashes as an (n, 2) uint64 array, without copying them into Python."""
    arr = column.combine_chunks()
    words = np.frombuffer(arr.buffers()[1], dtype="<u8")
    return words[2 * arr.offset : 2 * (arr.offset + len(arr))].reshape(len(arr), 2)


def add_partition(table: pa.Table, partitions: int) -> pa.Table:
    part = (hash_words(table["text_hash"])[:, 0] % np.uint64(partitions)).astype(np.int64)
    return table.append_column("partition", pa.array(part, pa.int64()))


def dedup_partition(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """-> (survivors in input order, duplicates). Deterministic whatever the row order given."""
    order = pc.sort_indices(table, [("text_hash", "ascending"), ("file", "ascending"),
                                    ("line", "ascending")])
    table = table.take(order)
    n = table.num_rows
    pairs = hash_words(table["text_hash"])
    first = np.ones(n, dtype=bool)
    if n > 1:
        first[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    survivor_of = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    dup_idx = np.flatnonzero(~first)
    survivors = table.filter(pa.array(first))
    survivors = survivors.take(pc.sort_indices(survivors, [("file", "ascending"), ("line", "ascending")]))
    dups_src = table.take(dup_idx)
    kept = table.take(survivor_of[dup_idx])
    duplicates = pa.table(
        {
            "id": dups_src["id"],
            "source": dups_src["source"],
            "cluster_id": pa.array([h.hex() for h in kept["text_hash"].to_pylist()], pa.string()),
            "kept_id": kept["id"],
            "kept_source": kept["source"],
            "kind": pa.array(["exact"] * len(dup_idx), pa.string()),
            "similarity": pa.array(np.ones(len(dup_idx)), pa.float64()),
            "bytes": dups_src["bytes_clean"],
            "file": dups_src["file"],
            "line": dups_src["line"],
        },
        schema=DUPLICATE,
    )
    return survivors, duplicates
