"""Write stage: atomic, deterministic Parquet outputs.

- Parts: after filtering, each batch of a chunk lands as PARTS/CHUNK/LINE-ROWS-KEPT-BYTES.parquet
  (the KEPT rows, BYTES of text, that go on to dedup; names from slimpipe.io.parts) and
  REJECTED/CHUNK-LINE.parquet (the rows dropped so far). ROWS counts both, so a resumed run can
  tell a complete chunk from a half-written one without opening a file.
- Shards: consecutive parts, in input order, are streamed into DOCUMENTS/part-NNNNN.parquet of
  about `shard_bytes` of text each, leaving out the lines the removed-lines folders list; a
  shard's rows, bytes and sha256 go to the manifest. Memory is one part at a time, whatever the
  shard size.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from slimpipe.io.fs import exists, join, resolve, write_parquet_atomic
from slimpipe.io.parts import part_file_name, removed_lines
from slimpipe.schemas import DOCUMENT, RECORD, REJECTED
from slimpipe.stages.decontaminate import split_names

# what a documents row takes from a part: the rest (split, input_id) the writer adds
PART_DOCUMENT_COLUMNS = [n for n in DOCUMENT.names if n not in ("split", "input_id")]
PART_COLUMNS = [
    f.name
    for f in RECORD
    if f.name not in ("raw", "norm_text", "reject_stage", "reject_reason", "reject_value", "reject_detail")
]


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
            "language": table["language"],
            "language_score": table["language_score"],
            "quality_score": table["quality_score"],
        },
        schema=REJECTED,
    )


def first_line(table: pa.Table) -> int:
    return pc.min(table["line"]).as_py() or 0


class PartWriter:
    """map_batches callable: writes one batch's parts; returns (chunk, rows) per part written."""

    def __init__(self, parts_uri: str, rejected_uri: str, compression_level: int):
        self.fs, self.parts = resolve(parts_uri)
        _, self.rejected = resolve(rejected_uri)
        self.level = compression_level

    def __call__(self, table: pa.Table) -> pa.Table:
        chunks, rows = [], []
        keys = pc.unique(table["chunk"]).to_pylist()
        for key in keys:
            piece = table if len(keys) == 1 else table.filter(pc.equal(table["chunk"], key))
            first = first_line(piece)
            dropped = pc.is_valid(piece["reject_stage"])
            if pc.any(dropped).as_py():
                write_parquet_atomic(
                    self.fs,
                    join(self.rejected, f"{key}-{first:012d}.parquet"),
                    rejected_rows(piece.filter(dropped)),
                    self.level,
                )
            kept = piece.filter(pc.invert(dropped)).select(PART_COLUMNS)
            kept_bytes = pc.sum(kept["bytes_clean"]).as_py() or 0
            # Written last: its name carries the row count that marks this part complete.
            write_parquet_atomic(
                self.fs,
                join(self.parts, key, part_file_name(first, piece.num_rows, kept.num_rows, kept_bytes)),
                kept,
                self.level,
            )
            chunks.append(key)
            rows.append(piece.num_rows)
        return pa.table({"chunk": pa.array(chunks, pa.string()), "rows": pa.array(rows, pa.int64())})


def plan_shards(parts: list[tuple[str, str, int]], shard_bytes: int) -> list[dict]:
    """Group (chunk, part path, text bytes) in input order into shards of about shard_bytes."""
    shards: list[dict] = []
    current: list[list[str]] = []  # [chunk, part path], as JSON keeps them
    size = 0
    for chunk, path, nbytes in parts:
        current.append([chunk, path])
        size += nbytes
        if size >= shard_bytes:
            shards.append({"index": len(shards), "parts": current})
            current, size = [], 0
    if current:
        shards.append({"index": len(shards), "parts": current})
    return shards


class _HashingStream:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, out):
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if not self.closed:
            self.out.close()
            self.closed = True


def write_document_shard(
    shard: dict, documents_uri: str, removed: list[str], renames_uri: str, compression_level: int, split: dict
) -> dict:
    """Stream one shard's parts into DOCUMENTS/part-NNNNN.parquet, without the lines listed in
    each of the `removed` folders (CHUNK.parquet), with the new ids of RENAMES_URI/CHUNK.parquet;
    atomic. Returns the manifest entry (`file`: the name in DOCUMENTS). Each row's `split`
    (train | holdout) comes from its id."""
    fs, documents = resolve(documents_uri)
    name = f"part-{shard['index']:05d}.parquet"
    path = join(documents, name)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    fs.create_dir(documents, recursive=True)
    stream = _HashingStream(fs.open_output_stream(tmp))
    rows = text_bytes = holdout = 0
    dupsets: dict[str, pa.Array] = {}
    renames: dict[str, pa.Table | None] = {}
    with pq.ParquetWriter(stream, DOCUMENT, compression="zstd", compression_level=compression_level) as writer:
        for chunk, part in shard["parts"]:
            table = pq.read_table(part, filesystem=fs, columns=PART_DOCUMENT_COLUMNS)
            if chunk not in dupsets:
                dupsets[chunk] = removed_lines(fs, removed, chunk)
                renames[chunk] = id_renames(fs, renames_uri, chunk)
            if len(dupsets[chunk]):
                table = table.filter(pc.invert(pc.is_in(table["line"], dupsets[chunk])))
            # the split comes from the id as given, as decontamination decided it
            table = table.append_column(
                "split", split_names(table["id"].to_pylist(), split["holdout_ratio"], split["seed"])
            )
            table = _renamed(table, renames[chunk])
            if table.num_rows:
                writer.write_table(table.cast(DOCUMENT), row_group_size=16384)
            rows += table.num_rows
            holdout += pc.sum(pc.equal(table["split"], "holdout")).as_py() or 0
            text_bytes += pc.sum(pc.binary_length(table["text"])).as_py() or 0
    stream.close()
    fs.move(tmp, path)
    return {
        "file": name,
        "rows": rows,
        "holdout_rows": holdout,
        "text_bytes": text_bytes,
        "bytes": stream.size,
        "sha256": stream.sha.hexdigest(),
    }


def id_renames(fs, renames_uri: str, chunk: str) -> pa.Table | None:
    """The new ids of a chunk's rows whose input id repeats (slimpipe.stages.unique_ids)."""
    path = join(resolve(renames_uri)[1], f"{chunk}.parquet")
    return pq.read_table(path, filesystem=fs) if exists(fs, path) else None


def _renamed(table: pa.Table, renames: pa.Table | None) -> pa.Table:
    """`table` with an input_id column, and the rows `renames` lists given their new id."""
    input_id = pa.nulls(table.num_rows, pa.string())
    if renames is not None and table.num_rows:
        at = pc.index_in(table["line"], renames["line"])
        hit = pc.is_valid(at)
        if pc.any(hit).as_py():
            new_id = pc.take(renames["id"], at)
            input_id = pc.if_else(hit, table["id"], input_id)
            table = table.set_column(table.schema.get_field_index("id"), "id", pc.if_else(hit, new_id, table["id"]))
    return table.add_column(1, "input_id", input_id)


def _write_parts_batch(table: pa.Table, parts_uri: str, rejected_uri: str, level: int) -> pa.Table:
    return PartWriter(parts_uri, rejected_uri, level)(table)


def write_parts(ds, parts_uri: str, rejected_uri: str, compression_level: int):
    """The parts of each batch of a Ray dataset of records (see the module's doc); the dataset
    of (chunk, rows) per part written."""
    return ds.map_batches(
        _write_parts_batch,
        fn_kwargs={"parts_uri": parts_uri, "rejected_uri": rejected_uri, "level": compression_level},
        batch_format="pyarrow",
        batch_size=None,
        zero_copy_batch=True,
    )


def _write_shard(
    row: dict,
    documents_uri: str,
    removed: list[str],
    renames_uri: str,
    level: int,
    split: dict,
    on_written: Callable[[int, dict], None],
) -> dict:
    shard = json.loads(row["shard"])
    entry = write_document_shard(shard, documents_uri, removed, renames_uri, level, split)
    on_written(shard["index"], entry)
    return {"index": shard["index"], "rows": entry["rows"]}


def write_shards(
    shards: list[dict],
    documents_uri: str,
    removed: list[str],
    renames_uri: str,
    compression_level: int,
    split: dict,
    on_written: Callable[[int, dict], None],
) -> None:
    """Each shard of `plan_shards` in a Ray task of its own; `on_written(index, manifest entry)`
    runs in the task once the shard is in place."""
    import ray.data

    ds = ray.data.from_items([{"shard": json.dumps(s)} for s in shards], override_num_blocks=len(shards))
    ds = ds.map(
        _write_shard,
        fn_kwargs={
            "documents_uri": documents_uri,
            "removed": removed,
            "renames_uri": renames_uri,
            "level": compression_level,
            "split": split,
            "on_written": on_written,
        },
    )
    for _ in ds.iter_batches(batch_size=None):
        pass
