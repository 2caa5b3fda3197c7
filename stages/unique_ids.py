"""Unique ids: input ids are kept as given, but they may repeat (the same id in two files, `1`
and `"1"`), and ids name documents downstream. A narrow index of the kept rows (id, file, line,
chunk) is hash-partitioned by a Ray shuffle on each id's family, the id without trailing `#N`
parts, so that all rows with one id, and every id a new one could collide with, meet in one
partition. There the first row of an id in input order (file, then line) keeps it, and each later
one becomes ID#N: N its place among the rows with that id (from 2), raised past any id the input
itself holds. A shuffle on the chunk then writes each chunk's renames to
RENAMES_URI/CHUNK.parquet (line, id, input_id) for the documents writer. The texts never move."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.io.fs import join, resolve, write_parquet_atomic
from slimpipe.stages.shuffle import Shuffle

INDEX_COLUMNS = ["id", "file", "line", "chunk"]
ID_ROW_BYTES = 80  # an index row (or a rename) in Arrow
RENAMES = pa.schema([("line", pa.int64()), ("id", pa.string()), ("input_id", pa.string())])
_SUFFIXES = re.compile(r"(#\d+)+$")


def family(rid: str) -> str:
    """The id without trailing #N parts: ID, ID#2 and ID#2#3 are one family."""
    return _SUFFIXES.sub("", rid)


def _index_partition(table: pa.Table, partitions: int) -> pa.Table:
    table = table.select(INDEX_COLUMNS)
    # a hash that is the same in every process (Python's own hash() of a str is salted per process)
    hashes = [
        int.from_bytes(hashlib.blake2b(family(i).encode(), digest_size=8).digest(), "little")
        for i in table["id"].to_pylist()
    ]
    partition = (np.array(hashes, dtype=np.uint64) % np.uint64(partitions)).astype(np.int64)
    return table.append_column("partition", pa.array(partition, pa.int64()))


def renames_of(index: pa.Table) -> pa.Table:
    """For rows of the index whose id repeats: (chunk, line, id, input_id), the new id for every
    row but the first of its id in (file, line) order. The index holds whole families (see the
    module's doc), so a new id never equals one the input holds. Deterministic whatever the row
    order given."""
    index = index.take(pc.sort_indices(index, [("id", "ascending"), ("file", "ascending"), ("line", "ascending")]))
    ids = index["id"].combine_chunks()
    n = len(ids)
    same = np.zeros(n, dtype=bool)  # the row has the id of the row before it
    if n > 1:
        same[1:] = pc.equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
    starts = np.maximum.accumulate(np.where(same, 0, np.arange(n))) if n else np.zeros(0, np.int64)
    place = np.arange(n) - starts + 1  # 1-based place of each row among the rows with its id
    repeats = np.flatnonzero(same)
    rows = index.take(repeats)
    taken = set(pc.unique(ids).to_pylist()) if len(repeats) else set()
    new_ids = []
    for rid, p in zip(rows["id"].to_pylist(), place[repeats].tolist()):
        while f"{rid}#{p}" in taken:
            p += 1
        taken.add(f"{rid}#{p}")
        new_ids.append(f"{rid}#{p}")
    return pa.table(
        {
            "chunk": rows["chunk"],
            "line": rows["line"],
            "id": pa.array(new_ids, pa.string()),
            "input_id": rows["id"],
        }
    )


def _renames_of_partition(index: pa.Table) -> pa.Table:
    return renames_of(index)


def _write_renames(renames: pa.Table, renames_uri: str) -> pa.Table:
    chunk = renames["chunk"][0].as_py()
    fs, out = resolve(renames_uri)
    write_parquet_atomic(fs, join(out, f"{chunk}.parquet"), renames.select(RENAMES.names).sort_by("line").cast(RENAMES))
    return pa.table({"chunk": [chunk], "renamed": [renames.num_rows]})


def make_ids_unique(parts_uri: str, parts: list[str], rows: int, shuffle: Shuffle, renames_uri: str) -> tuple[int, int]:
    """Find repeated ids among the `rows` kept rows of `parts` and write the renames of each
    chunk; returns the partitions and the rows renamed."""
    from slimpipe.stages.datasource import read_own_files

    partitions = shuffle.partitions(rows, ID_ROW_BYTES)
    ds = read_own_files(parts_uri, parts, columns=INDEX_COLUMNS)
    ds = ds.map_batches(_index_partition, fn_kwargs={"partitions": partitions}, batch_format="pyarrow", batch_size=None)
    ds = shuffle.group(ds, "partition", _renames_of_partition, rows, ID_ROW_BYTES, partitions)
    ds = shuffle.group(ds, "chunk", _write_renames, rows, ID_ROW_BYTES, renames_uri=renames_uri)
    batches = ds.iter_batches(batch_size=None, batch_format="pyarrow")
    return partitions, sum(int(pc.sum(b["renamed"]).as_py() or 0) for b in batches)
