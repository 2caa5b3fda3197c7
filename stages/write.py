"""Write stage: atomic, deterministic Parquet outputs.

- Parts: after filtering, each batch of a chunk lands as
  WORK/filtered/CHUNK/LINE-ROWS-KEPT-BYTES.parquet (the KEPT rows, BYTES of text, that go on to
  dedup) and RUN/rejected/CHUNK-LINE.parquet (the rows dropped so far). ROWS counts both, so a
  resumed run can tell a complete chunk from a half-written one without opening a file.
- Shards: kept documents as RUN/documents/part-PPPPP-KKK.parquet, zstd, about `shard_bytes` of
  text each, with rows, bytes and sha256 in the manifest.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.schemas import DOCUMENT, RECORD, REJECTED
from slimpipe.storage import join, resolve, write_parquet_atomic

PART_COLUMNS = [f.name for f in RECORD if f.name not in
                ("raw", "reject_stage", "reject_reason", "reject_value", "reject_detail")]


def rejected_rows(table: pa.Table) -> pa.Table:
    return pa.table(
        {
            "id": table["id"],
            "source": table["source"],
            "stage": table["reject_stage"],
            "reason": table["reject_reason"],
            "value": table["reject_value"],
            "detail": table["reject_detail"],
            "file": table["file"],
            "line": table["line"],
            "text": table["text"],
            "raw": table["raw"],
            "bytes": table["bytes_read"],
            "utf8_repaired": table["utf8_repaired"],
        },
        schema=REJECTED,
    )


def first_line(table: pa.Table) -> int:
    return pc.min(table["line"]).as_py() or 0


class PartWriter:
    """map_batches callable: writes one batch's parts; returns (chunk, rows) per part written."""

    def __init__(self, run_uri: str, work_uri: str, compression_level: int):
        self.fs, self.run = resolve(run_uri)
        _, self.work = resolve(work_uri)
        self.level = compression_level

    def __call__(self, table: pa.Table) -> pa.Table:
        chunks, rows = [], []
        keys = pc.unique(table["chunk"]).to_pylist()
        for key in keys:
            piece = table if len(keys) == 1 else table.filter(pc.equal(table["chunk"], key))
            first = first_line(piece)
            dropped = pc.is_valid(piece["reject_stage"])
            if pc.any(dropped).as_py():
                write_parquet_atomic(self.fs, join(self.run, "rejected", f"{key}-{first:012d}.parquet"),
                                     rejected_rows(piece.filter(dropped)), self.level)
            kept = piece.filter(pc.invert(dropped)).select(PART_COLUMNS)
            kept_bytes = pc.sum(kept["bytes_clean"]).as_py() or 0
            # Written last: its name carries the row count that marks this part complete.
            write_parquet_atomic(self.fs, join(self.work, "filtered", key, f"{first:012d}-{piece.num_rows}-{kept.num_rows}-{kept_bytes}.parquet"),
                                 kept, self.level)
            chunks.append(key)
            rows.append(piece.num_rows)
        return pa.table({"chunk": pa.array(chunks, pa.string()), "rows": pa.array(rows, pa.int64())})


def write_shards(documents: pa.Table, partition: int, run_uri: str, shard_bytes: int,
                 compression_level: int) -> list[dict]:
    """Write one partition's documents as shards of about `shard_bytes` of text, in order."""
    fs, run = resolve(run_uri)
    documents = documents.select(DOCUMENT.names).cast(DOCUMENT)
    sizes = pc.binary_length(documents["text"]).to_numpy(zero_copy_only=False)
    bounds, acc, start = [], 0, 0
    for i, size in enumerate(sizes):
        acc += int(size)
        if acc >= shard_bytes:
            bounds.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(sizes) or not bounds:
        bounds.append((start, len(sizes)))
    entries = []
    for k, (lo, hi) in enumerate(bounds):
        name = f"part-{partition:05d}-{k:03d}.parquet"
        piece = documents.slice(lo, hi - lo)
        info = write_parquet_atomic(fs, join(run, "documents", name), piece, compression_level)
        entries.append({"file": f"documents/{name}", "text_bytes": int(sizes[lo:hi].sum()), **info})
    return entries
