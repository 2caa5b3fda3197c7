"""Read stage: input chunks -> Arrow record batches, one row per record (stages.read.records).

JSON Lines (plain, .gz, .zst) stream in blocks (jsonl); files of layout "json" are read whole, up to
input.max_json_bytes (json_document); Parquet by row groups (parquet). Every record becomes a row:
good records, and records the reader cannot use, which travel on as rejected rows with the reason.
Damage to a file (a truncated or corrupt stream, a broken Parquet file, broken JSON) becomes one
rejected row that names the file, the line and the error; the records before the damage are kept.

Storage errors are not damage: reads are retried under the decompressor (slimpipe.io.retry); a file
that stays unreadable raises InputUnreadable, or, with input.on_io_error = reject, ends its chunk
with one unreadable_file row. A file that changed after planning (size, modification time, or
shorter than its planned range) raises InputChanged: it is never read as if it were the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from slimpipe.errors import InputUnreadable
from slimpipe.io.inputs import Chunk
from slimpipe.schemas import RECORD
from slimpipe.stages.read.json_document import read_document
from slimpipe.stages.read.jsonl import read_lines
from slimpipe.stages.read.parquet import read_row_groups
from slimpipe.stages.read.records import BatchBuilder

__all__ = ["READERS", "ChunkDatasource", "read_chunk", "read_dataset"]


def _reading(body: Callable[[Chunk, BatchBuilder], Iterator[pa.Table]], chunk: Chunk, read_cfg: dict):
    """Runs a reader body over a chunk's batch. A file storage will not hand over fails the task
    (input.on_io_error = fail: the run stops and says which file) or, with `reject`, ends the
    chunk with one unreadable_file row after the records read so far."""
    batch = BatchBuilder(chunk, read_cfg)
    try:
        yield from body(chunk, batch)
    except InputUnreadable as exc:
        if read_cfg.get("on_io_error", "fail") != "reject":
            raise
        batch.reject(batch.next_line, "unreadable_file", str(exc))
    if len(batch):
        yield batch.flush()


def read_jsonl_chunk(chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
    body = read_document if chunk.file.layout == "json" else read_lines
    return _reading(body, chunk, read_cfg)


def read_parquet_chunk(chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
    return _reading(read_row_groups, chunk, read_cfg)


# How each input format is read, by its name in slimpipe.io.inputs.FORMATS (which says how its
# files are found and cut into chunks): a new format is a reader here and a line in each.
READERS = {"jsonl": read_jsonl_chunk, "parquet": read_parquet_chunk}


def read_chunk(chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
    return READERS[chunk.file.format](chunk, read_cfg)


class ChunkDatasource(Datasource):
    """One read task per chunk. When a chunk is fully read, the task hands the chunk and its record
    count to `on_read` (the run directory records it: with the parts written downstream, that is
    how a resumed run knows the chunk is complete)."""

    def __init__(self, chunks: list[Chunk], read_cfg: dict, on_read: Callable[[Chunk, int], None]):
        self.chunks = chunks
        self.read_cfg = read_cfg
        self.on_read = on_read

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(max(c.file.size, 0) for c in self.chunks) or None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        return [
            ReadTask(
                _make_read_fn(chunk, self.read_cfg, self.on_read),
                BlockMetadata(
                    num_rows=None,
                    size_bytes=max(chunk.file.size, 0) or None,
                    input_files=(chunk.file.uri,),
                    exec_stats=None,
                ),
                schema=RECORD,
            )
            for chunk in self.chunks
        ]


def _make_read_fn(chunk: Chunk, read_cfg: dict, on_read: Callable[[Chunk, int], None]):
    def read_fn() -> Iterator[pa.Table]:
        records = 0
        for table in read_chunk(chunk, read_cfg):
            records += table.num_rows
            yield table
        on_read(chunk, records)

    return read_fn


def read_dataset(chunks: list[Chunk], read_cfg: dict, on_read: Callable[[Chunk, int], None]) -> ray.data.Dataset:
    """The chunks' records as a dataset; `on_read(chunk, records)` runs in the read task once a
    chunk is read to its end."""
    # One block stream per chunk: without the override Ray splits the output of a few large
    # chunks into many small blocks, which breaks the fusion of read with the stages after it.
    return ray.data.read_datasource(ChunkDatasource(chunks, read_cfg, on_read), override_num_blocks=len(chunks))
