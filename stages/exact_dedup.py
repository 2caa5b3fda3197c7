"""Exact dedup stage: global across sources. Only a narrow index of the kept rows (hash, file,
line, id, source, bytes; about 100 bytes a document) is hash-partitioned by a Ray shuffle, so
that all copies of a text meet in one partition; there the first copy in input order (file,
then line) survives and every other copy becomes a duplicate row naming the survivor. The
texts themselves never move: the documents writer drops duplicates by (chunk, line)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.schemas import DUPLICATE

INDEX_COLUMNS = ["id", "source", "file", "line", "chunk", "bytes_clean", "text_hash"]


def hash_words(column: pa.ChunkedArray) -> np.ndarray:
    """The 16-byte hashes as an (n, 2) uint64 array, without copying them into Python."""
    arr = column.combine_chunks()
    words = np.frombuffer(arr.buffers()[1], dtype="<u8")
    return words[2 * arr.offset : 2 * (arr.offset + len(arr))].reshape(len(arr), 2)


def add_partition(table: pa.Table, partitions: int) -> pa.Table:
    part = (hash_words(table["text_hash"])[:, 0] % np.uint64(partitions)).astype(np.int64)
    return table.append_column("partition", pa.array(part, pa.int64()))


def find_duplicates(index: pa.Table) -> pa.Table:
    """Duplicate rows (DUPLICATE columns plus `chunk`) of one partition of the index.
    Deterministic whatever the row order given."""
    order = pc.sort_indices(index, [("text_hash", "ascending"), ("file", "ascending"),
                                    ("line", "ascending")])
    index = index.take(order)
    n = index.num_rows
    pairs = hash_words(index["text_hash"])
    first = np.ones(n, dtype=bool)
    if n > 1:
        first[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    survivor_of = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    dup_idx = np.flatnonzero(~first)
    dups = index.take(dup_idx)
    kept = index.take(survivor_of[dup_idx])
    return pa.table(
        {
            "id": dups["id"],
            "source": dups["source"],
            "cluster_id": pa.array([h.hex() for h in kept["text_hash"].to_pylist()], pa.string()),
            "kept_id": kept["id"],
            "kept_source": kept["source"],
            "kind": pa.array(["exact"] * len(dup_idx), pa.string()),
            "similarity": pa.array(np.ones(len(dup_idx)), pa.float64()),
            "bytes": dups["bytes_clean"],
            "file": dups["file"],
            "line": dups["line"],
            "chunk": dups["chunk"],
        },
        schema=DUPLICATE.append(pa.field("chunk", pa.string())),
    )
