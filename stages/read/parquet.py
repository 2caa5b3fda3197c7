"""Parquet, by row groups: a chunk is a run of a file's row groups. The text column is decoded here,
so invalid UTF-8 is repaired, not fatal; a broken file is one unreadable_file row naming it, after
the records read before the damage."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from slimpipe.errors import InputChanged, InputUnreadable
from slimpipe.io.inputs import Chunk
from slimpipe.io.retry import RetryingFile
from slimpipe.stages.read.records import BatchBuilder, add_decoded


def read_row_groups(chunk: Chunk, batch: BatchBuilder) -> Iterator[pa.Table]:
    """The records of a chunk's row groups (all of the file's when its end is -1)."""
    row = chunk.first_line
    with RetryingFile(chunk.file, batch.cfg) as raw:
        try:
            pfile = pq.ParquetFile(raw)  # reads through the retrying file
            groups = range(chunk.start, chunk.end if chunk.end >= 0 else pfile.num_row_groups)
            for rb in pfile.iter_batches(batch_size=4096, row_groups=list(groups)):
                for obj in _rows_with_bytes_text(rb, batch.cfg["text_field"]):
                    add_decoded(batch, row, *obj)
                    row += 1
                    batch.next_line = row
                    if batch.full():
                        yield batch.flush()
        except (InputUnreadable, InputChanged, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged file becomes a row naming it
            raw.check_unchanged()  # a file rewritten under the reader looks damaged: say so instead
            batch.reject(row if row > chunk.first_line else None, "unreadable_file", f"{type(exc).__name__}: {exc}")
            return
        raw.check_unchanged()


def _rows_with_bytes_text(rb: pa.RecordBatch, text_field: str) -> Iterator[tuple[dict, None, bool]]:
    """Rows as dicts. The text column is decoded here, so invalid UTF-8 is repaired, not fatal."""
    columns = {}
    for name, col in zip(rb.schema.names, rb.columns):
        if name == text_field and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = col.cast(pa.large_binary())
        columns[name] = col.to_pylist()
    texts = columns.get(text_field)
    for i in range(rb.num_rows):
        obj = {name: values[i] for name, values in columns.items()}
        repaired = False
        if texts is not None and isinstance(texts[i], bytes):
            try:
                obj[text_field] = texts[i].decode("utf-8")
            except UnicodeDecodeError:
                obj[text_field], repaired = texts[i].decode("utf-8", "replace"), True
        yield obj, None, repaired
