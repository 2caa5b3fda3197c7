"""Inputs and read planning: the formats an input file may have, what discovery records of each
file (slimpipe.io.discover finds and probes them), and how files are cut into chunks (the unit of
parallel reading and of resume)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyarrow.parquet as pq

from slimpipe.io.fs import resolve

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


@dataclass(frozen=True)
class InputFormat:
    """How files of one format are found and cut into chunks; the read stage's READERS, under the
    same name, reads them."""

    suffixes: tuple[str, ...]
    compressible: bool  # may come wrapped in gzip or zstd
    splits_by: str  # "lines": plain files cut into byte ranges at line starts; "row_groups": Parquet's


# The input formats, in the order a file name is tried against them.
FORMATS = {
    "parquet": InputFormat((".parquet",), compressible=False, splits_by="row_groups"),
    "jsonl": InputFormat((".jsonl", ".json", ".ndjson"), compressible=True, splits_by="lines"),
}


@dataclass(frozen=True)
class InputFile:
    uri: str  # what the user sees in rejected rows: a local path or a URI
    rel: str  # path relative to the input root it was found under (stable across machines)
    source: str
    format: str  # a name in FORMATS
    compression: str | None  # gzip | zstd | None
    size: int  # -1 when the file could not be inspected
    mtime_ns: int = -1  # at planning; -1 when the file could not be inspected
    # sha256 (hex, 16 digits) of the file's first and last block at planning: with size and mtime,
    # what tells a resumed run that an input changed
    probe: str = ""
    # how records are laid out: "lines" (one JSON value per line, split on `separator`) or "json"
    # (one JSON array, or JSON values one after another, across lines: read whole)
    layout: str = "lines"
    separator: str = "\n"  # "\r" for files whose lines end in a bare carriage return


@dataclass(frozen=True)
class SkippedInput:
    """A path found among the inputs that holds no records to read; stats list it with the reason
    (empty_file, special_file, undecodable_name, same_file, unreadable_folder, unreadable_file)."""

    uri: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Inputs:
    """What discovery found: the files to read, in uri order, and the paths it passed over, with why
    (stats list them)."""

    files: list[InputFile]
    skipped: list[SkippedInput]


@dataclass(frozen=True)
class Chunk:
    """A piece of one input file that one read task handles."""

    key: str
    file: InputFile
    start: int = 0  # byte offset (plain JSONL) or first row group (Parquet)
    end: int = -1  # exclusive; -1 = to the end
    first_line: int = 1  # the 1-based line number of the first line starting in [start, end)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Chunk:
        return Chunk(**{**d, "file": InputFile(**d["file"])})


def file_format(name: str, configured: str) -> tuple[str, str | None] | None:
    """(format, compression) for a file name, or None when it is not an input file."""
    lower = name.lower()
    compression = None
    for suffix, codec in COMPRESSIONS.items():
        if lower.endswith(suffix):
            compression, lower = codec, lower[: -len(suffix)]
            break
    for fmt, spec in FORMATS.items():
        if compression and not spec.compressible:
            continue
        # a compressed file of a configured format needs no inner suffix ("dump.gz")
        if lower.endswith(spec.suffixes) or (configured == fmt and compression):
            return (fmt, compression) if configured in ("auto", fmt) else None
    return None


PROBE_BYTES = 64 << 10  # the block at each end of a file its probe hashes; also the head sniffed


def file_ends(read_at: Callable[[int, int], bytes], size: int) -> tuple[bytes, bytes]:
    """The first and last PROBE_BYTES of a file of `size` bytes, read by read_at(n, offset)."""
    head = read_at(PROBE_BYTES, 0)
    return head, read_at(PROBE_BYTES, size - PROBE_BYTES) if size > PROBE_BYTES else head


def probe_hash(head: bytes, tail: bytes) -> str:
    return hashlib.sha256(head + tail).hexdigest()[:16]


def input_fingerprint(files: list[InputFile]) -> str:
    """What a resumed run compares: a file edited in place, even to the same size and mtime, changes
    its probe."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.uri}\0{f.size}\0{f.mtime_ns}\0{f.probe}\0{f.source}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def _chunk_key(f: InputFile, index: int) -> str:
    return f"{hashlib.blake2b(f.uri.encode(), digest_size=6).hexdigest()}-{index:05d}"


def byte_ranges(size: int, split_bytes: int) -> list[tuple[int, int]]:
    n = max(1, -(-size // split_bytes))
    step = -(-size // n)
    return [(i * step, min(size, (i + 1) * step)) for i in range(n)]


def plan_parquet(f: InputFile, split_bytes: int) -> list[Chunk]:
    """Group a Parquet file's row groups into chunks of about split_bytes."""
    try:
        fs, path = resolve(f.uri)
        with fs.open_input_file(path) as fh:
            meta = pq.ParquetFile(fh).metadata
        sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    except Exception:  # an unreadable file is read (and rejected, with the error) by one task
        return [Chunk(key=_chunk_key(f, 0), file=f)]
    chunks: list[Chunk] = []
    start, acc, first_row = 0, 0, 1
    for i, size in enumerate(sizes):
        acc += size
        if acc >= split_bytes or i == len(sizes) - 1:
            chunks.append(Chunk(_chunk_key(f, len(chunks)), f, start, i + 1, first_row))
            first_row += sum(meta.row_group(j).num_rows for j in range(start, i + 1))
            start, acc = i + 1, 0
    return chunks or [Chunk(key=_chunk_key(f, 0), file=f)]


def plan_chunks(files: list[InputFile], split_bytes: int, count_newlines) -> list[Chunk]:
    """Plan read chunks. Plain JSONL files above split_bytes are cut into byte ranges; the line
    number each range starts at comes from `count_newlines(jobs)`, jobs (uri, start, end, separator),
    which counts the line ends of every range in parallel on the cluster (so ids from (file, line) do
    not depend on the split). JSON files (read whole) and files that could not be probed (size -1,
    one task rejects them) are one chunk each."""
    chunks: list[Chunk] = []
    split_jobs: list[tuple[InputFile, list[tuple[int, int]]]] = []
    for f in files:
        if FORMATS[f.format].splits_by == "row_groups":
            chunks.extend(plan_parquet(f, split_bytes))
        elif f.compression is None and f.layout == "lines" and f.size > split_bytes:  # size -1: unread
            split_jobs.append((f, byte_ranges(f.size, split_bytes)))
        else:
            chunks.append(Chunk(key=_chunk_key(f, 0), file=f))
    if split_jobs:
        counts = count_newlines([(f.uri, s, e, f.separator) for f, ranges in split_jobs for s, e in ranges])
        it = iter(counts)
        for f, ranges in split_jobs:
            before = 0  # newlines in [0, start)
            for i, (s, e) in enumerate(ranges):
                chunks.append(Chunk(_chunk_key(f, i), f, s, e, first_line=before + 1))
                before += next(it)
    return sorted(chunks, key=lambda c: (c.file.uri, c.start))


def count_newlines_in_range(uri: str, start: int, end: int, separator: str = "\n") -> int:
    """Line separators in [start, end): the file's separator, "\\n" or "\\r" (bare carriage returns)."""
    sep = separator.encode()
    fs, path = resolve(uri)
    total = 0
    with fs.open_input_file(path) as fh:
        fh.seek(start)
        remaining = end - start
        while remaining > 0:
            block = fh.read(min(remaining, 8 << 20))
            if not block:
                break
            total += block.count(sep)
            remaining -= len(block)
    return total
