"""Probing an input file (Ray-free): its size, modification time and the hash of its ends that
tells a resumed run it changed, and how its records are laid out (lines, or JSON documents read
whole; the line separator); and how an input that cannot be read is reported."""

from __future__ import annotations

import codecs
import io
import os
import stat
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson
import pyarrow.fs as pafs
import zstandard

from slimpipe.errors import InputUnreadable
from slimpipe.io.inputs import COMPRESSIONS, PROBE_BYTES, InputFile, SkippedInput, file_ends, probe_hash
from slimpipe.io.retry import retrying


class InputError(InputUnreadable):
    """An input folder or file that cannot be read while input.on_io_error is fail: one line that
    names it, before any cluster starts (the CLI's exit status for an unreadable input, 5)."""


@dataclass(frozen=True)
class Found:
    """An input file a walk found, before it is probed."""

    fs: pafs.FileSystem
    path: str  # inside fs
    base: str  # the input root rel is relative to (a local path or a URI)
    rel: str
    source: str
    kind: tuple[str, str | None]
    real: tuple[int, int] | None = None  # (st_dev, st_ino) of a local file, when stat could tell

    @property
    def uri(self) -> str:
        return uri_of(self.fs, self.path)


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    return path if isinstance(fs, pafs.LocalFileSystem) else f"{fs.type_name}://{path}"


def shown(path: str) -> str:
    """A path as people can read it: bytes that are not UTF-8 as backslash escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace") if "://" not in path else path


def file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device")):
        if test(mode):
            return name
    return "a block device" if stat.S_ISBLK(mode) else "not a regular file"


def one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(f"{type(exc).__name__}: {text}".split())


def fail_if_configured(input_cfg: dict, what: str, path: str, exc: BaseException) -> None:
    """With on_io_error fail (the default) an input that cannot be read stops the run here."""
    if input_cfg.get("on_io_error", "fail") != "reject":
        raise InputError(f"{what} {shown(path)}: {one_line(exc)} (input.on_io_error: reject passes it over)")


class _NotAFile(Exception):
    """A path that turned out, once opened, not to be a regular file."""


def probe_all(found: list[Found], input_cfg: dict, skipped: list[SkippedInput]) -> list[InputFile]:
    """Probe every file at once: threads, as the work is waiting on disks and object stores."""
    if not found:
        return []
    pool = ThreadPoolExecutor(max_workers=min(32, len(found)))
    try:
        results = list(pool.map(lambda f: _probe(f, input_cfg), found))  # the first error, in uri order
    finally:
        pool.shutdown(cancel_futures=True)  # after an error, probe no more
    skipped.extend(r for r in results if isinstance(r, SkippedInput))
    return [r for r in results if isinstance(r, InputFile)]


def _probe(f: Found, input_cfg: dict) -> InputFile | SkippedInput:
    """The file's size, mtime and probe hash, and how its records are laid out. One that cannot be
    read is an error (on_io_error fail) or a file of unknown size that one read task rejects."""
    try:
        size, mtime_ns, head, tail = _readfile_ends(f, input_cfg)
    except _NotAFile as exc:
        return SkippedInput(shown(f.uri), "special_file", str(exc))
    except (OSError, InputUnreadable) as exc:
        # storage's own error names the cause (InputUnreadable wraps it once an object store's retries ran out)
        cause = exc.__cause__ if isinstance(exc, InputUnreadable) and exc.__cause__ else exc
        fail_if_configured(input_cfg, "cannot read input file", f.uri, cause)
        return InputFile(f.uri, f.rel, f.source, f.kind[0], f.kind[1], size=-1)
    if size == 0:
        return SkippedInput(shown(f.uri), "empty_file")
    layout, separator = "lines", "\n"
    if f.kind[0] == "jsonl":
        json_name = _inner_name(f.uri).endswith(".json")
        layout, separator = sniff_layout(*_decompressed_head(head, f.kind[1], size), json_name=json_name)
    return InputFile(
        f.uri,
        f.rel,
        f.source,
        f.kind[0],
        f.kind[1],
        size,
        mtime_ns,
        probe_hash(head, tail),
        layout,
        separator,
    )


def _readfile_ends(f: Found, input_cfg: dict) -> tuple[int, int, bytes, bytes]:
    """(size, mtime_ns, first block, last block) of the raw file."""
    if isinstance(f.fs, pafs.LocalFileSystem):
        return _read_ends_local(f.path)
    return retrying(lambda: _read_ends_remote(f.fs, f.path), input_cfg, f.uri)


def _read_ends_local(path: str) -> tuple[int, int, bytes, bytes]:
    # Non-blocking: a FIFO put in the file's place after the walk's stat opens at once, where a
    # plain open would wait for a writer forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotAFile(file_type(st.st_mode))
        head, tail = file_ends(lambda n, offset: os.pread(fd, n, offset), st.st_size)
        return st.st_size, st.st_mtime_ns, head, tail
    finally:
        os.close(fd)


def _read_ends_remote(fs: pafs.FileSystem, path: str) -> tuple[int, int, bytes, bytes]:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such object: {path}")
    with fs.open_input_file(path) as fh:
        size = fh.size()
        head, tail = file_ends(fh.read_at, size)
    return size, info.mtime_ns if info.mtime_ns is not None else -1, head, tail


def _inner_name(uri: str) -> str:
    """The file name without a compression suffix, lower-cased."""
    name = uri.rsplit("/", 1)[-1].lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    return name


def _decompressed_head(raw: bytes, compression: str | None, size: int) -> tuple[bytes, bool]:
    """Up to PROBE_BYTES of the file's text, and whether that is all of it. Damage ends the head early
    (the read stage reports it)."""
    whole = size <= PROBE_BYTES  # the raw block is the whole file
    if compression is None:
        return raw, whole
    out = bytearray()
    try:
        if compression == "gzip":
            d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
            data = raw
            while data and len(out) < PROBE_BYTES and not d.eof:
                out += d.decompress(data, PROBE_BYTES - len(out))
                data = d.unconsumed_tail
        else:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True)
            while len(out) < PROBE_BYTES and (piece := reader.read(PROBE_BYTES - len(out))):
                out += piece
    except (zlib.error, zstandard.ZstdError):
        pass
    return bytes(out), whole and len(out) < PROBE_BYTES


def sniff_layout(head: bytes, complete: bool = False, json_name: bool = False) -> tuple[str, str]:
    """(layout, separator) from the start of a JSON-Lines-family file's text.

    Layout "json" (values spread over lines, read whole) when the first line that is not blank is
    a lone "[" or "{" (pretty-printed), or opens an array that does not close on that line; in a
    file named .json (`json_name`), also an array on one line. A first line that is one JSON value
    keeps a .jsonl file in lines, so one odd record never makes the whole file a document.
    Separator "\r" only when the head holds bare carriage returns and no newline at all (old Mac
    line ends); one newline anywhere means lines end in it (a \r before it is JSON whitespace)."""
    head = head.removeprefix(codecs.BOM_UTF8)
    first = head.lstrip(b" \t\r\n").replace(b"\r", b"\n").split(b"\n", 1)[0].rstrip(b" \t")
    layout = "lines"
    if first in (b"[", b"{") or (first.startswith(b"[") and (json_name or not _is_json_value(first))):
        layout = "json"
    if b"\n" in head:
        return layout, "\n"
    # no newline: a \r at the end of a cut head may be half of a CRLF
    body = head if complete else head.removesuffix(b"\r")
    return layout, "\r" if b"\r" in body else "\n"


def _is_json_value(line: bytes) -> bool:
    try:
        orjson.loads(line)
        return True
    except orjson.JSONDecodeError:
        return False
