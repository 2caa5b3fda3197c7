"""JSON Lines (plain, .gz, .zst), streamed: a chunk is read in blocks, never whole, and lines are
split on the file's separator only (b"\\n", or b"\\r" for files whose lines end in a bare carriage
return; text holds U+2028 and U+0085, which str.splitlines would also split on). A UTF-8 byte order
mark opening a file is skipped. Damage to a stream is one rejected row naming the line; the records
before it are kept."""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator

import pyarrow as pa
import zstandard

from slimpipe.io.inputs import Chunk
from slimpipe.io.retry import RetryingFile, check_reached
from slimpipe.stages.read.records import BatchBuilder, add_decoded, error_detail, parse_line

READ_BLOCK = 4 << 20
BOM = codecs.BOM_UTF8


def decompressing(raw: RetryingFile, compression: str | None):
    """The file's text as a stream, read through the retrying file."""
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


def stream_blocks(stream) -> Iterator[bytes]:
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
        for block in stream_blocks(stream):
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


def read_lines(chunk: Chunk, batch: BatchBuilder) -> Iterator[pa.Table]:
    """The records of the lines that start in a chunk (a plain file's byte range, or a whole file)."""
    sep = chunk.file.separator.encode()
    plain = chunk.file.compression is None
    line_no = chunk.first_line
    with RetryingFile(chunk.file, batch.cfg) as raw:
        stream = decompressing(raw, chunk.file.compression)
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
            check_reached(chunk, raw.pos, end)
        raw.check_unchanged()


def _add_line(batch: BatchBuilder, line_no: int, raw: bytes) -> None:
    if not raw or raw.isspace():
        return  # a blank line is no record
    try:
        obj, repaired = parse_line(raw)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one record never fails a task
        batch.reject(line_no, "malformed_json", error_detail(exc), raw=raw)
        return
    add_decoded(batch, line_no, obj, raw, repaired)
