"""Filesystems (Ray-free): every path goes through pyarrow.fs, so run directories and inputs can live on
local disk, a shared file system or object storage (s3://, gs://) alike. Writes are atomic."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from slimpipe.errors import ConfigError

# the URI schemes pyarrow's own filesystems take; any other goes to fsspec (az://, memory://, ...)
PYARROW_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """A user path or URI -> (filesystem, path inside it). Object stores take their settings
    from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for s3://), so a URI names
    data only and every process resolves it alike."""
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path)
    scheme = path.split("://", 1)[0].lower()
    if scheme == "s3":
        # delayed open: a small file is sent as one PUT on close (not create, part, complete)
        return pafs.FileSystem.from_uri(path + ("&" if "?" in path else "?") + "allow_delayed_open=true")
    if scheme in PYARROW_SCHEMES:
        return pafs.FileSystem.from_uri(path)
    import fsspec

    try:
        fs, inner = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as e:  # an unknown protocol, or its package not installed
        raise ConfigError(f"no filesystem for {path}: {e}") from e
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def child_uri(uri: str, path: str, *parts: str) -> str:
    """A child of `uri` (resolved to `path`) as a URI that any process resolves again."""
    base = uri.rstrip("/") if "://" in uri else path
    return join(base, *parts)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
    if not exists(fs, path):
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def parquet_files(fs: pafs.FileSystem, path: str) -> list[str]:
    """The Parquet files directly in a folder, sorted (none if it is missing)."""
    return [i.path for i in list_files(fs, path) if i.base_name.endswith(".parquet")]


# S3 takes a body up to this size in one PutObject (pyarrow's streams upload in parts of 10 MB and
# S3's smallest part is 5 MB), and a PutObject lands whole or not at all
SINGLE_PUT_BYTES = 5 * 2**20


def _atomic_write(fs: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    """Readers see the whole file or none of it: written under a temporary name and renamed (on
    S3, copied on the server), or on S3 sent in one PUT when it is small."""
    on_s3 = isinstance(fs, pafs.S3FileSystem)
    if on_s3 and len(data) <= SINGLE_PUT_BYTES:
        with fs.open_output_stream(path) as out:  # buffered to close (delayed open): one PUT
            out.write(data)
        return
    if not on_s3:  # an S3 key needs no folder, and making one costs a PUT
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    _atomic_write(fs, path, data)


def write_json_atomic(fs: pafs.FileSystem, path: str, obj) -> None:
    _atomic_write(fs, path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(fs: pafs.FileSystem, path: str):
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


# completion records are many small files: on object storage each read is a round trip, so they
# are read this many at a time
BULK_READS = 32


def read_json_many(fs: pafs.FileSystem, paths: list[str]) -> list:
    """The JSON files at `paths`, in order, read BULK_READS at a time."""
    if len(paths) <= 1:
        return [read_json(fs, p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(BULK_READS, len(paths))) as pool:
        return list(pool.map(lambda p: read_json(fs, p), paths))


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table, compression_level: int = 3) -> dict:
    """Write one zstd Parquet file atomically; returns its rows, bytes and sha256."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", compression_level=compression_level, row_group_size=16384)
    buf = sink.getvalue()
    _atomic_write(fs, path, buf)
    return {
        "rows": table.num_rows,
        "bytes": buf.size,
        "sha256": hashlib.sha256(memoryview(buf)).hexdigest(),
    }


def write_arrow_stream_atomic(fs: pafs.FileSystem, path: str, table: pa.Table, max_chunksize: int) -> None:
    """One Arrow IPC stream file (the format Hugging Face `datasets` memory-maps), atomically."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max_chunksize)
    _atomic_write(fs, path, sink.getvalue())


def remove_stale_tmp(fs: pafs.FileSystem, path: str) -> None:
    """Temporary files of a killed run never became outputs; clear them on resume."""
    for info in list_files(fs, path, recursive=True):
        if ".tmp-" in info.base_name:
            fs.delete_file(info.path)


def read_arrow_stream(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    """An Arrow IPC stream file: memory-mapped on a local disk (only the rows used are read),
    read whole from other filesystems."""
    if isinstance(fs, pafs.LocalFileSystem):
        table = pa.ipc.open_stream(pa.memory_map(path)).read_all()
    else:
        with fs.open_input_file(path) as f:
            table = pa.ipc.open_stream(f).read_all()
    return table.select(columns) if columns else table
