"""What the pipeline's part files and removed-lines files are called and hold (Ray-free): the
writer of a part and the run directory that reads its name back share one codec here.

A part is FIRSTLINE-ROWS-KEPT-BYTES.parquet: a batch of a chunk from its first line, the rows it
covered (kept or dropped), the rows kept and their bytes of text. Its name, written last,
marks it complete. A removed-lines file is CHUNK.parquet with one column, the lines of the chunk a
later stage removed."""

from __future__ import annotations

import re
from typing import NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from slimpipe.io.fs import exists, join, resolve

_PART = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)\.parquet$")


class PartName(NamedTuple):
    first_line: int
    rows: int
    kept: int
    kept_bytes: int


def part_file_name(first_line: int, rows: int, kept: int, kept_bytes: int) -> str:
    return f"{first_line:012d}-{rows}-{kept}-{kept_bytes}.parquet"


def parse_part_file_name(name: str) -> PartName | None:
    m = _PART.match(name)
    return PartName(*map(int, m.groups())) if m else None


def removed_lines(fs: pafs.FileSystem, folders: list[str] | tuple[str, ...], chunk: str) -> pa.Array:
    """The lines of a chunk listed in FOLDER/CHUNK.parquet of each of `folders` (URIs or paths of
    `fs`); those that do not exist list none."""
    lines = []
    for folder in folders:
        path = join(resolve(folder)[1], f"{chunk}.parquet")
        if exists(fs, path):
            lines.append(pq.read_table(path, filesystem=fs)["line"].combine_chunks())
    return pa.concat_arrays(lines) if lines else pa.array([], pa.int64())
