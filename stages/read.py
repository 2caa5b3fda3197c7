"""Read stage: JSONL (plain, .gz, .zst) and Parquet chunks -> Arrow record batches.

Streams: a chunk is read in blocks, never whole, and lines are split on b"\\n" only (text holds
U+2028 and U+0085, which str.splitlines would also split on). Every line becomes a row: good
records, and records the reader cannot use, which travel on as rejected rows with the reason
(malformed JSON, missing text, ...). Damage to a file (a truncated or corrupt stream, an
unreadable file) becomes one rejected row that names the file, the line and the error; the
records before the damage are kept.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
import zstandard
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from slimpipe.io.fs import resolve
from slimpipe.io.inputs import Chunk
from slimpipe.schemas import RECORD

READ_BLOCK = 4 << 20
MAX_BATCH_ROWS = 32768


def repair_surrogates(text: str) -> tuple[str, bool]:
    """JSON may escape lone UTF-16 surrogates ("\\ud800"), which no UTF-8 writer accepts:
    join valid pairs, replace lone ones with U+FFFD."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), True


class BatchBuilder:
    """Collects rows of one chunk and cuts them into Arrow tables of about `batch_bytes`."""

    def __init__(self, chunk: Chunk, read_cfg: dict):
        self.chunk = chunk
        self.cfg = read_cfg
        self.batch_bytes = read_cfg["batch_bytes"]
        self._reset()

    def _reset(self):
        self.cols: dict[str, list] = {
            k: []
            for k in (
                "id",
                "text",
                "source",
                "url",
                "meta",
                "line",
                "raw",
                "bytes_read",
                "utf8_repaired",
                "reject_reason",
                "reject_detail",
            )
        }
        self.size = 0

    def __len__(self):
        return len(self.cols["line"])

    def _add(
        self,
        line,
        *,
        id=None,
        text=None,
        source=None,
        url=None,
        meta=None,
        raw=None,
        nbytes=0,
        repaired=False,
        reason=None,
        detail=None,
    ):
        c = self.cols
        c["id"].append(id if id is not None else f"{self.chunk.file.rel}:{line if line else 0}")
        c["text"].append(text)
        c["source"].append(source or self.chunk.file.source)
        c["url"].append(url)
        c["meta"].append(meta)
        c["line"].append(line)
        c["raw"].append(raw)
        c["bytes_read"].append(nbytes)
        c["utf8_repaired"].append(repaired)
        c["reject_reason"].append(reason)
        c["reject_detail"].append(detail)
        self.size += nbytes

    def reject(self, line, reason, detail, raw=None, repaired=False):
        self._add(line, raw=raw, nbytes=len(raw) if raw else 0, reason=reason, detail=detail, repaired=repaired)

    def add_record(self, line: int, obj, raw: bytes | None, repaired: bool):
        """One decoded record; `raw` is its input line (None for Parquet rows, where a rejected
        row keeps the record itself, as JSON, for evidence)."""
        problem = _record_problem(obj, self.cfg["text_field"])
        if problem:
            evidence = raw if raw is not None else _to_json(obj).encode()
            return self.reject(line, *problem, evidence, repaired)
        cfg = self.cfg
        text_field = cfg["text_field"]
        text = obj[text_field]
        text, fixed = repair_surrogates(text)
        repaired |= fixed
        special = {text_field, cfg.get("id_field"), cfg.get("url_field")}
        rid = obj.get(cfg["id_field"]) if cfg.get("id_field") else None
        url = obj.get(cfg["url_field"]) if cfg.get("url_field") else None
        source = obj.get(cfg["source_field"]) if cfg.get("source_field") else None
        rest = {k: v for k, v in obj.items() if k not in special}
        self._add(
            line,
            id=_clean_str(rid),
            text=text,
            source=_clean_str(source),
            url=_clean_str(url),
            meta=_to_json(rest) if rest else None,
            nbytes=len(text.encode("utf-8")) if not text.isascii() else len(text),
            repaired=repaired,
        )

    def full(self) -> bool:
        return self.size >= self.batch_bytes or len(self) >= MAX_BATCH_ROWS

    def flush(self) -> pa.Table:
        n = len(self)
        c = self.cols
        table = pa.table(
            {
                "id": pa.array(c["id"], pa.string()),
                "text": pa.array(c["text"], pa.large_string()),
                "source": pa.array(c["source"], pa.string()),
                "url": pa.array(c["url"], pa.string()),
                "meta": pa.array(c["meta"], pa.string()),
                "file": pa.array([self.chunk.file.uri] * n, pa.string()),
                "line": pa.array(c["line"], pa.int64()),
                "chunk": pa.array([self.chunk.key] * n, pa.string()),
                "raw": pa.array(c["raw"], pa.large_binary()),
                "bytes_read": pa.array(c["bytes_read"], pa.int64()),
                "bytes_clean": pa.nulls(n, pa.int64()),
                "bytes_cut": pa.nulls(n, pa.int64()),
                "utf8_repaired": pa.array(c["utf8_repaired"], pa.bool_()),
                "changed_by_clean": pa.nulls(n, pa.bool_()),
                "norm_chars": pa.nulls(n, pa.int64()),
                "language": pa.nulls(n, pa.string()),
                "language_score": pa.nulls(n, pa.float32()),
                "quality_score": pa.nulls(n, pa.float32()),
                "text_hash": pa.nulls(n, pa.binary(16)),
                "norm_text": pa.nulls(n, pa.large_string()),
                "minhash": pa.nulls(n, pa.binary()),
                "shingles": pa.nulls(n, pa.int32()),
                "reject_stage": pa.array(["read" if r else None for r in c["reject_reason"]], pa.string()),
                "reject_reason": pa.array(c["reject_reason"], pa.string()),
                "reject_value": pa.nulls(n, pa.float64()),
                "reject_detail": pa.array(c["reject_detail"], pa.string()),
            },
            schema=RECORD,
        )
        self._reset()
        return table


def _record_problem(obj, text_field: str) -> tuple[str, str] | None:
    """(reason, detail) when a decoded record has no usable text."""
    if not isinstance(obj, dict):
        return "not_an_object", f"a JSON {type(obj).__name__}"
    if text_field not in obj:
        return "missing_text", f"no field {text_field!r}"
    text = obj[text_field]
    if text is None:
        return "null_text", f"{text_field!r} is null"
    if not isinstance(text, str):
        return "text_not_string", f"{text_field!r} is a {type(text).__name__}"
    return None


def _clean_str(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = value if isinstance(value, (int, float)) else _to_json(value)
        value = str(value)
    return repair_surrogates(value)[0]


def _to_json(value) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # lone surrogates: escape them instead
        return json.dumps(value, ensure_ascii=True)


def parse_line(raw: bytes) -> tuple[object, bool]:
    """-> (decoded JSON value, utf8 was repaired). Raises ValueError for malformed JSON."""
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError:
        pass
    try:
        decoded, repaired = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        decoded, repaired = raw.decode("utf-8", "replace"), True
    # The standard library also takes what orjson refuses for good reasons we can repair
    # (escaped lone surrogates); anything else is malformed.
    return json.loads(decoded), repaired


# --- JSONL ---------------------------------------------------------------------------------------


def _open_stream(chunk: Chunk):
    fs, path = resolve(chunk.file.uri)
    if chunk.file.compression is None:
        return fs.open_input_file(path)
    raw = fs.open_input_stream(path, compression=None)  # we decompress, to see damage
    if chunk.file.compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return ZstdStream(raw)


class ZstdStream:
    """Zstandard frames, one after another, decoded as they stream in. Unlike zstandard's own
    stream reader, a stream that ends inside a frame is an error, not a quiet end."""

    def __init__(self, raw):
        self.raw = raw
        self.dctx = zstandard.ZstdDecompressor()
        self.dobj = None
        self.pending = b""

    def read1(self, size: int) -> bytes:
        while True:
            data = self.pending or self.raw.read(1 << 16)
            self.pending = b""
            if not data:
                if self.dobj is not None and not self.dobj.eof:
                    raise EOFError("zstd stream ends inside a frame (truncated)")
                return b""
            if self.dobj is None or self.dobj.eof:
                self.dobj = self.dctx.decompressobj()
            out = self.dobj.decompress(data)
            if self.dobj.eof:
                self.pending = self.dobj.unused_data
            if out:
                return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()


class StreamDamage(Exception):
    """A stream that broke off; `tail` holds the bytes read after its last complete line."""

    tail: bytes = b""


def _blocks(stream) -> Iterator[bytes]:
    """Raw blocks from a stream; a decompression or I/O failure becomes StreamDamage."""
    # read1 hands over what one decompression step produced, so data before damage is not
    # lost inside a read() that was still filling its buffer when the error came.
    read = stream.read1 if hasattr(stream, "read1") else stream.read
    while True:
        try:
            block = read(READ_BLOCK)
        except (OSError, EOFError, zstandard.ZstdError, ValueError) as exc:
            raise StreamDamage(f"{type(exc).__name__}: {exc}") from exc
        if not block:
            return
        yield block


def _lines(stream) -> Iterator[bytes]:
    """Complete lines without their b"\n"; the last one may be unterminated. On damage the
    partial line read so far rides on the StreamDamage as `.tail`."""
    pending: list[bytes] = []
    try:
        for block in _blocks(stream):
            parts = block.split(b"\n")
            if len(parts) == 1:
                pending.append(block)
                continue
            pending.append(parts[0])
            yield b"".join(pending)
            yield from parts[1:-1]
            pending = [parts[-1]] if parts[-1] else []
    except StreamDamage as exc:
        exc.tail = b"".join(pending)
        raise
    if pending:
        yield b"".join(pending)


def _skip_partial_line(stream, chunk: Chunk) -> tuple[int, int]:
    """A range that starts mid-line leaves that line to the range before it. Returns the offset
    of the first line this range owns (>= end when a long line covers the whole range) and
    that line's 1-based number. Scans no further than the range's end."""
    stream.seek(chunk.start - 1)
    if stream.read(1) == b"\n":
        return chunk.start, chunk.first_line
    pos = chunk.start
    while pos < chunk.end and (block := stream.read(min(1 << 16, chunk.end - pos))):
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1, chunk.first_line + 1
        pos += len(block)
    return chunk.end, chunk.first_line + 1


def read_jsonl_chunk(chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
    batch = BatchBuilder(chunk, read_cfg)
    line_no = chunk.first_line
    try:
        stream = _open_stream(chunk)
    except Exception as exc:  # missing, unreadable, not a file: one row says so
        batch.reject(None, "unreadable_file", f"{type(exc).__name__}: {exc}")
        yield batch.flush()
        return
    with stream:
        pos, end = 0, None  # lines starting in [pos, end) are this chunk's
        if chunk.file.compression is None and chunk.end >= 0:
            pos, end = chunk.start, chunk.end
            if chunk.start > 0:
                pos, line_no = _skip_partial_line(stream, chunk)
                if pos >= end:
                    return  # a line that started in an earlier range covers this one
            stream.seek(pos)
        try:
            for raw in _lines(stream):
                if end is not None and pos >= end:
                    break
                pos += len(raw) + 1
                _add_line(batch, line_no, raw)
                line_no += 1
                if batch.full():
                    yield batch.flush()
        except StreamDamage as exc:
            batch.reject(line_no, "corrupt_stream", f"input damaged at line {line_no}: {exc}", raw=exc.tail or None)
    if len(batch):
        yield batch.flush()


def _add_line(batch: BatchBuilder, line_no: int, raw: bytes) -> None:
    if not raw or raw.isspace():
        return  # a blank line is no record
    try:
        obj, repaired = parse_line(raw)
    except ValueError as exc:
        batch.reject(line_no, "malformed_json", str(exc)[:200], raw=raw)
        return
    batch.add_record(line_no, obj, raw, repaired)


# --- Parquet -------------------------------------------------------------------------------------


def read_parquet_chunk(chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
    batch = BatchBuilder(chunk, read_cfg)
    row = chunk.first_line
    try:
        fs, path = resolve(chunk.file.uri)
        pfile = pq.ParquetFile(fs.open_input_file(path))
        groups = range(chunk.start, chunk.end if chunk.end >= 0 else pfile.num_row_groups)
        for rb in pfile.iter_batches(batch_size=4096, row_groups=list(groups)):
            for obj in _rows_with_bytes_text(rb, read_cfg["text_field"]):
                batch.add_record(row, *obj)
                row += 1
                if batch.full():
                    yield batch.flush()
    except Exception as exc:  # noqa: BLE001 - any failure of a file becomes a row naming it
        batch.reject(row if row > chunk.first_line else None, "unreadable_file", f"{type(exc).__name__}: {exc}")
    if len(batch):
        yield batch.flush()


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


# --- Ray datasource ------------------------------------------------------------------------------


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


# How each input format is read, by its name in slimpipe.io.inputs.FORMATS (which says how its
# files are found and cut into chunks): a new format is a reader here and a line in each.
READERS = {"jsonl": read_jsonl_chunk, "parquet": read_parquet_chunk}


def read_chunk(chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
    return READERS[chunk.file.format](chunk, read_cfg)


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
