"""Exact dedup stage: global across sources. Only a narrow index of the kept rows (hash, file,
line, id, source, bytes; about 100 bytes a document) is hash-partitioned by a Ray shuffle, so
that all copies of a text meet in one partition; there the first copy in input order (file,
then line) survives and every other copy becomes a duplicate row naming the survivor. The
texts themselves never move: the documents writer drops duplicates by (chunk, line)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.io.fs import join, resolve, write_parquet_atomic
from slimpipe.schemas import DUPLICATE
from slimpipe.stages.shuffle import Shuffle

INDEX_COLUMNS = ["id", "source", "file", "line", "chunk", "bytes_clean", "text_hash"]
INDEX_ROW_BYTES = 120  # an index row in Arrow: the hash, two ids, a source, a file name, line, chunk
LINE_ROW_BYTES = 40  # a (chunk, line) row


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
    order = pc.sort_indices(index, [("text_hash", "ascending"), ("file", "ascending"), ("line", "ascending")])
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


def _index_partition(table: pa.Table, partitions: int) -> pa.Table:
    return add_partition(table.select(INDEX_COLUMNS), partitions)


def _duplicates_of_partition(index: pa.Table, duplicates_uri: str, level: int) -> pa.Table:
    """One hash partition of the index: write its duplicates; hand on (chunk, line) of each."""
    partition = int(index["partition"][0].as_py())
    dups = find_duplicates(index)
    if dups.num_rows:
        fs, out = resolve(duplicates_uri)
        write_parquet_atomic(fs, join(out, f"part-{partition:05d}.parquet"), dups.drop_columns(["chunk"]), level)
    return dups.select(["chunk", "line"])


def _write_removed_lines(lines: pa.Table, removed_uri: str) -> pa.Table:
    """The duplicate lines of one chunk, for the documents writer to leave out."""
    chunk = lines["chunk"][0].as_py()
    fs, out = resolve(removed_uri)
    write_parquet_atomic(fs, join(out, f"{chunk}.parquet"), lines.select(["line"]).sort_by("line"))
    return pa.table({"chunk": [chunk], "duplicates": [lines.num_rows]})


def find_exact_duplicates(
    parts_uri: str,
    parts: list[str],
    rows: int,
    shuffle: Shuffle,
    duplicates_uri: str,
    removed_uri: str,
    compression_level: int,
) -> int:
    """The narrow index of the parts' `rows` rows, shuffled on the text hash: each partition's
    duplicates go to DUPLICATES_URI/part-N.parquet, then a shuffle on the chunk writes each
    chunk's removed lines to REMOVED_URI/CHUNK.parquet. Returns the partitions."""
    from slimpipe.stages.datasource import read_own_files

    partitions = shuffle.partitions(rows, INDEX_ROW_BYTES)
    ds = read_own_files(parts_uri, parts, columns=INDEX_COLUMNS)
    ds = ds.map_batches(_index_partition, fn_kwargs={"partitions": partitions}, batch_format="pyarrow", batch_size=None)
    ds = shuffle.group(
        ds,
        "partition",
        _duplicates_of_partition,
        rows,
        INDEX_ROW_BYTES,
        partitions,
        duplicates_uri=duplicates_uri,
        level=compression_level,
    )
    ds = shuffle.group(ds, "chunk", _write_removed_lines, rows, LINE_ROW_BYTES, removed_uri=removed_uri)
    for _ in ds.iter_batches(batch_size=None):
        pass
    return partitions
