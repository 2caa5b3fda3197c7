"""Read stage: JSONL (plain, .gz, .zst) and Parquet chunks -> Arrow record batches.

Streams: a chunk is read in blocks, never whole, and lines are split on the file's separator only
(b"\\n", or b"\\r" for files whose lines end in a bare carriage return; text holds U+2028 and
U+0085, which str.splitlines would also split on). A UTF-8 byte order mark opening a file is
skipped. Every line becomes a row: good records, and records the reader cannot use, which travel
on as rejected rows with the reason (malformed JSON, JSON nested too deep, missing text, ...): no
one record can fail the task. An integer with more digits than Python converts from a string
(sys.get_int_max_str_digits(), 4300 by default; the limit is left as it is) is kept as its digit
string, so such a field arrives in `meta` as a JSON string of its digits.

Files of layout "json" (one JSON array, or JSON values one after another, spread over lines) are
the one thing read whole, up to input.max_json_bytes: each array element, or each top-level value,
is a record, and its 1-based index is its `line`.

Damage to a file (a truncated or corrupt stream, a broken Parquet file, broken JSON) becomes one
rejected row that names the file, the line and the error; the records before the damage are kept.
Storage errors are not damage: reads are retried under the decompressor (wait, reopen, seek back);
a file that stays unreadable raises InputUnreadable, or, with input.on_io_error = reject, ends its
chunk with one unreadable_file row. A file that changed after planning (size, modification time,
or shorter than its planned range) raises InputChanged: it is never read as if it were the same.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data
import zstandard
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from slimpipe.errors import InputChanged, InputUnreadable
from slimpipe.io.fs import resolve
from slimpipe.io.inputs import Chunk, InputFile
from slimpipe.schemas import RECORD

READ_BLOCK = 4 << 20
MAX_BATCH_ROWS = 32768
BOM = b"\xef\xbb\xbf"
ORJSON_MAX_DEPTH = 1024  # orjson refuses deeper nesting itself


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
        # the line a reader goes on to next (None before its first): where a row about a file that
        # could not be read to its end says reading stopped
        self.next_line: int | None = None
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
    if isinstance(text, LongInt):
        return "text_not_string", f"{text_field!r} is a int"
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
    except TypeError:  # lone surrogates, integers beyond 64 bits, deep nesting: the slower encoder
        return json.dumps(value, ensure_ascii=True)


class LongInt(str):
    """A JSON integer with more digits than int() converts from a string
    (sys.get_int_max_str_digits()): kept as its digits. Rejecting the record would lose a document
    for a field nobody reads, and raising the limit would change it for the whole process."""


def _parse_int(digits: str) -> int | str:
    limit = sys.get_int_max_str_digits()
    if limit and len(digits) - digits.startswith("-") > limit:
        return LongInt(digits)
    return int(digits)


# The fallback decoder: what orjson refuses (escaped lone surrogates, integers beyond 64 bits)
_DECODER = json.JSONDecoder(parse_int=_parse_int)


def parse_line(raw: bytes) -> tuple[object, bool]:
    """-> (decoded JSON value, utf8 was repaired). Raises ValueError for malformed JSON, also
    for JSON nested too deeply to decode."""
    try:
        obj = orjson.loads(raw)
        if not _lost_digits(obj, raw):
            return obj, False
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # the fallback would only recurse into the same wall
            raise ValueError(f"JSON nested deeper than {ORJSON_MAX_DEPTH} levels") from None
    try:
        decoded, repaired = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        decoded, repaired = raw.decode("utf-8", "replace"), True
    # The standard library also takes what orjson refuses for good reasons we can repair
    # (escaped lone surrogates) or keep (long integers); anything else is malformed.
    try:
        return _DECODER.decode(decoded), repaired
    except RecursionError:
        raise ValueError(_too_deep()) from None


_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def _lost_digits(obj, raw: bytes) -> bool:
    """orjson reads an integer beyond 64 bits as a float, dropping digits: such a record is read
    again by the standard library, which keeps them. A cheap walk, iterative (deep nesting)."""
    stack = [obj]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is float:
            if value.is_integer() and abs(value) >= 2**63 and _LONG_DIGITS.search(raw):
                return True
        elif kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
    return False


def _too_deep() -> str:
    return f"JSON nested too deeply (beyond the recursion limit, {sys.getrecursionlimit()} levels)"


def _error_detail(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return _too_deep()
    if isinstance(exc, ValueError):
        return str(exc)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def _add_decoded(batch: BatchBuilder, line: int, obj, raw: bytes | None, repaired: bool) -> None:
    """batch.add_record, where a record that cannot be stored (nested too deeply to write back as
    JSON) becomes a rejected row instead of failing the task."""
    try:
        batch.add_record(line, obj, raw, repaired)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one record never fails a task
        batch.reject(line, "malformed_json", _error_detail(exc), raw=raw, repaired=repaired)


# --- Input files: retried reads, checked against the plan ----------------------------------------

# Errors that waiting does not mend: not retried
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class RetryingFile:
    """The raw bytes of one input file, read under the decompressor (or Parquet). An OSError from
    storage is retried: wait io_retry_backoff_s (doubling), reopen the file, seek back to where
    reading was, up to io_retries times; then InputUnreadable. So every OSError a decompressor
    passes on is damage to the data, and every storage error is told apart from it. Each open
    also checks that the file is still the one planned (InputChanged otherwise)."""

    def __init__(self, file: InputFile, read_cfg: dict):
        self.file = file
        self.retries = int(read_cfg.get("io_retries", 5))
        self.backoff = float(read_cfg.get("io_retry_backoff_s", 1.0))
        self.pos = 0
        self.closed = False
        self._fh = None
        self._fs: pafs.FileSystem | None = None
        self._path = ""
        self._retrying(lambda fh: None)  # open now: a missing file is said at once

    def _open(self):
        self._fs, self._path = resolve(self.file.uri)
        _check_unchanged(self.file, self._fs.get_file_info(self._path))
        fh = self._fs.open_input_file(self._path)
        if self.pos:
            fh.seek(self.pos)
        return fh

    def _retrying(self, op):
        delay, attempt = self.backoff, 0
        while True:
            try:
                if self._fh is None:
                    self._fh = self._open()
                return op(self._fh)
            except OSError as exc:
                self._drop()
                if isinstance(exc, PERMANENT) or attempt >= self.retries:
                    tries = f" (tried {attempt + 1} times)" if attempt else ""
                    error = " ".join(str(exc).split())  # one line, whatever storage said
                    raise InputUnreadable(
                        f"input {self.file.uri} cannot be read{tries}: {type(exc).__name__}: {error}"
                    ) from exc
                time.sleep(delay)
                delay, attempt = delay * 2, attempt + 1

    def _drop(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass  # a handle that failed may fail to close too: it is dropped either way

    def read(self, size: int = -1) -> bytes:
        data = self._retrying(lambda fh: fh.read(size if size >= 0 else None))
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos}.get(whence)
        target = offset + (base if base is not None else self.size())
        self._retrying(lambda fh: fh.seek(target))
        self.pos = target
        return target

    def tell(self) -> int:
        return self.pos

    def size(self) -> int:
        return self._retrying(lambda fh: fh.size())

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def check_unchanged(self) -> None:
        """InputChanged when the file's size or mtime is no longer what was planned."""
        self._retrying(self._stat)

    def _stat(self, fh) -> None:
        assert self._fs is not None  # set by the open that gave `fh`
        _check_unchanged(self.file, self._fs.get_file_info(self._path))

    def close(self) -> None:
        self._drop()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_unchanged(file: InputFile, info: pafs.FileInfo) -> None:
    """The file must still be the one planned: same size and mtime (each where it was known)."""
    if info.type == pafs.FileType.NotFound:
        if file.size >= 0:
            raise InputChanged(f"input {file.uri} was removed after the run planned it: {_RERUN}")
        raise FileNotFoundError(2, "No such file", file.uri)
    if info.type == pafs.FileType.Directory:
        if file.size >= 0:
            raise InputChanged(f"input {file.uri} is a folder now, no longer the file the run planned: {_RERUN}")
        raise IsADirectoryError(21, "Is a directory", file.uri)
    if info.type != pafs.FileType.File:
        return  # opening says what it is
    changes = []
    if file.size >= 0 and info.size != file.size:
        changes.append(f"size {file.size} -> {info.size} bytes")
    if file.mtime_ns >= 0 and info.mtime_ns is not None and info.mtime_ns != file.mtime_ns:
        changes.append(f"modified {_when(file.mtime_ns)} -> {_when(info.mtime_ns)}")
    if changes:
        raise InputChanged(f"input {file.uri} changed after the run planned it ({', '.join(changes)}): {_RERUN}")


_RERUN = "rerun the command (the resumed run plans the changed input again)"


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


def _check_reached(chunk: Chunk, reached: int, end: int | None) -> None:
    """A plain file read to its end must have run to its planned end: the range's, or its size."""
    if end is not None:
        expected, short = end, reached < end  # a range may be read past its end, never short of it
    else:
        expected = chunk.file.size
        short = expected >= 0 and reached != expected
    if short:
        raise InputChanged(
            f"input {chunk.file.uri} changed while it was read (it ended at byte {reached}, "
            f"planned: {expected}): {_RERUN}"
        )


def _reading(body, chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
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


# --- JSONL ---------------------------------------------------------------------------------------


def _decompressing(raw: RetryingFile, compression: str | None):
    if compression is None:
        return raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
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


class StreamDamage(Exception):
    """A stream that broke off; `tail` holds the bytes read after its last complete line."""

    tail: bytes = b""


def _blocks(stream) -> Iterator[bytes]:
    """Raw blocks from a stream; a decompression failure becomes StreamDamage. (Storage errors
    come up from the RetryingFile below as InputUnreadable, after its retries, and pass.)"""
    # read1 hands over what one decompression step produced, so data before damage is not
    # lost inside a read() that was still filling its buffer when the error came.
    read = stream.read1 if hasattr(stream, "read1") else stream.read
    while True:
        try:
            block = read(READ_BLOCK)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError, ValueError) as exc:
            raise StreamDamage(f"{type(exc).__name__}: {exc}") from exc
        if not block:
            return
        yield block


def _lines(stream, sep: bytes = b"\n") -> Iterator[bytes]:
    """Complete lines without their separator; the last one may be unterminated. On damage the
    partial line read so far rides on the StreamDamage as `.tail`."""
    pending: list[bytes] = []
    try:
        for block in _blocks(stream):
            parts = block.split(sep)
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


def _skip_partial_line(stream, chunk: Chunk, sep: bytes = b"\n") -> tuple[int, int]:
    """A range that starts mid-line leaves that line to the range before it. Returns the offset
    of the first line this range owns (>= end when a long line covers the whole range) and
    that line's 1-based number. Scans no further than the range's end."""
    stream.seek(chunk.start - 1)
    if stream.read(1) == sep:
        return chunk.start, chunk.first_line
    pos = chunk.start
    while pos < chunk.end and (block := stream.read(min(1 << 16, chunk.end - pos))):
        i = block.find(sep)
        if i >= 0:
            return pos + i + 1, chunk.first_line + 1
        pos += len(block)
    return chunk.end, chunk.first_line + 1


def read_jsonl_chunk(chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
    body = _json_document if chunk.file.layout == "json" else _jsonl_lines
    return _reading(body, chunk, read_cfg)


def _jsonl_lines(chunk: Chunk, batch: BatchBuilder) -> Iterator[pa.Table]:
    sep = chunk.file.separator.encode()
    plain = chunk.file.compression is None
    line_no = chunk.first_line
    with RetryingFile(chunk.file, batch.cfg) as raw:
        stream = _decompressing(raw, chunk.file.compression)
        pos, end = 0, None  # lines starting in [pos, end) are this chunk's
        if plain and chunk.end >= 0:
            pos, end = chunk.start, chunk.end
            if chunk.start > 0:
                pos, line_no = _skip_partial_line(raw, chunk, sep)
                if pos >= end:
                    raw.check_unchanged()
                    return  # a line that started in an earlier range covers this one
            raw.seek(pos)
        first, at_eof = chunk.start == 0, True
        try:
            for line in _lines(stream, sep):
                if end is not None and pos >= end:
                    at_eof = False
                    break
                pos += len(line) + len(sep)
                if first and line.startswith(BOM):
                    line = line[len(BOM) :]
                first = False
                _add_line(batch, line_no, line)
                line_no += 1
                batch.next_line = line_no
                if batch.full():
                    yield batch.flush()
        except StreamDamage as exc:
            raw.check_unchanged()  # a file rewritten under the reader looks damaged: say so instead
            batch.reject(line_no, "corrupt_stream", f"input damaged at line {line_no}: {exc}", raw=exc.tail or None)
            return
        if plain and at_eof:
            _check_reached(chunk, raw.pos, end)
        raw.check_unchanged()


def _add_line(batch: BatchBuilder, line_no: int, raw: bytes) -> None:
    if not raw or raw.isspace():
        return  # a blank line is no record
    try:
        obj, repaired = parse_line(raw)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one record never fails a task
        batch.reject(line_no, "malformed_json", _error_detail(exc), raw=raw)
        return
    _add_decoded(batch, line_no, obj, raw, repaired)


# --- JSON documents (layout "json") --------------------------------------------------------------


class JsonBreak(Exception):
    """Where a JSON document stops being JSON: `pos` in its decoded text."""

    def __init__(self, pos: int, reason: str):
        super().__init__(reason)
        self.pos = pos


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _json_document(chunk: Chunk, batch: BatchBuilder) -> Iterator[pa.Table]:
    """A file of layout "json", read whole (it cannot be split where records end without being
    parsed): too large a file, or broken JSON, is one rejected row for the whole file."""
    if chunk.start > 0:
        return  # the chunk at offset 0 reads the whole file
    f = chunk.file
    limit = int(batch.cfg.get("max_json_bytes", 256 << 20))
    blocks: list[bytes] = []
    damage = None
    with RetryingFile(f, batch.cfg) as raw:
        if f.compression is None and raw.size() > limit:
            batch.reject(None, "json_file_too_large", _too_large(f, limit, raw.size()))
            return
        read = 0
        try:
            for block in _blocks(_decompressing(raw, f.compression)):
                blocks.append(block)
                read += len(block)
                if read > limit:
                    batch.reject(None, "json_file_too_large", _too_large(f, limit, None))
                    return
        except StreamDamage as exc:
            raw.check_unchanged()
            damage = exc
        if f.compression is None and damage is None:
            _check_reached(chunk, raw.pos, None)
        raw.check_unchanged()
    data = b"".join(blocks)
    del blocks
    yield from _json_records(batch, data[len(BOM) :] if data.startswith(BOM) else data, damage)


def _json_records(batch: BatchBuilder, data: bytes, damage: StreamDamage | None) -> Iterator[pa.Table]:
    f = batch.chunk.file
    text, repaired = "", False
    values: Iterator[object]
    try:
        whole = orjson.loads(data)
        if _lost_digits(whole, data):
            raise orjson.JSONDecodeError("integers beyond 64 bits", "", 0)
        values = iter(whole if isinstance(whole, list) else [whole])
    except orjson.JSONDecodeError:  # concatenated values, broken JSON, or what only json takes
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text, repaired = data.decode("utf-8", "replace"), True
        values = _json_values(text)
    del data
    index = 0
    try:
        for value in values:
            index += 1
            _add_decoded(batch, index, value, None, repaired)
            batch.next_line = index + 1
            if batch.full():
                yield batch.flush()
    except JsonBreak as brk:
        if damage is None:
            batch.reject(index + 1, "malformed_json_file", _broken(f, text, brk, index))
    if damage is not None:
        batch.reject(index + 1, "corrupt_stream", f"input damaged after record {index}: {damage}")


def _json_values(text: str) -> Iterator[object]:
    """The records of a JSON text: each element of a top-level array, each other top-level value.
    Raises JsonBreak where it stops being JSON, after yielding every record before that."""
    pos, n = _skip_space(text, 0), len(text)
    while pos < n:
        if text[pos] != "[":
            value, pos = _json_value(text, pos)
            yield value
        else:  # an array: its elements one by one, so those before a break are kept
            pos = _skip_space(text, pos + 1)
            closed = text.startswith("]", pos)
            pos += closed
            while not closed:
                value, pos = _json_value(text, pos)
                yield value
                pos = _skip_space(text, pos)
                if not text.startswith((",", "]"), pos):
                    raise JsonBreak(pos, "expected ',' or ']' after an array element")
                closed = text[pos] == "]"
                pos = _skip_space(text, pos + 1)
        pos = _skip_space(text, pos)


def _skip_space(text: str, pos: int) -> int:
    m = _JSON_SPACE.match(text, pos)
    return m.end() if m else pos


def _json_value(text: str, pos: int) -> tuple[object, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise JsonBreak(exc.pos, exc.msg) from None
    except RecursionError:
        raise JsonBreak(pos, _too_deep()) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a value the decoder chokes on ends the document
        raise JsonBreak(pos, f"{type(exc).__name__}: {exc}") from None


def _convert_hint(f: InputFile) -> str:
    """The command that turns a JSON document into JSON Lines, which stream."""
    out = shlex.quote(re.sub(r"\.(gz|zst|zstd)$", "", f.uri, flags=re.IGNORECASE) + ".jsonl")
    unpack = {"gzip": "gzip -dc", "zstd": "zstd -dc"}.get(f.compression or "")
    src = shlex.quote(f.uri)
    return f"{unpack} {src} | jq -c '.[]' > {out}" if unpack else f"jq -c '.[]' {src} > {out}"


def _too_large(f: InputFile, limit: int, size: int | None) -> str:
    what = f"{size} bytes" if size is not None else f"more than {limit} bytes decompressed"
    return (
        f"{f.uri} is one JSON document ({what}), which is read whole, over input.max_json_bytes "
        f"({limit}): none of its records were read. Convert it to JSON Lines, which stream: "
        f"{_convert_hint(f)} (jq -c . for JSON values one after another), and take the original "
        "out of the input; or raise input.max_json_bytes"
    )


def _broken(f: InputFile, text: str, brk: JsonBreak, kept: int) -> str:
    line = text.count("\n", 0, brk.pos) + 1
    col = brk.pos - (text.rfind("\n", 0, brk.pos) + 1) + 1
    kept_note = f"the {kept} records before it were kept" if kept else "no record of it was read"
    return (
        f"{f.uri} is not valid JSON at line {line} column {col} ({brk}): {kept_note}, nothing after "
        f"it was read. Repair the file; as JSON Lines ({_convert_hint(f)}) it would stream, and "
        "damage would cost one line"
    )


# --- Parquet -------------------------------------------------------------------------------------


def read_parquet_chunk(chunk: Chunk, read_cfg: dict) -> Iterator[pa.Table]:
    return _reading(_parquet_rows, chunk, read_cfg)


def _parquet_rows(chunk: Chunk, batch: BatchBuilder) -> Iterator[pa.Table]:
    row = chunk.first_line
    with RetryingFile(chunk.file, batch.cfg) as raw:
        try:
            pfile = pq.ParquetFile(raw)  # reads through the retrying file
            groups = range(chunk.start, chunk.end if chunk.end >= 0 else pfile.num_row_groups)
            for rb in pfile.iter_batches(batch_size=4096, row_groups=list(groups)):
                for obj in _rows_with_bytes_text(rb, batch.cfg["text_field"]):
                    _add_decoded(batch, row, *obj)
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
