"""Reading input storage (Ray-free): one retry policy for every read of an input, and the input file
as the read stage reads it, retried and checked against the plan.

Storage fails now and then (object stores, network file systems): a read that failed with an OSError
is tried again after io_retry_backoff_s, the wait doubling each time, up to io_retries times. An
error that waiting does not mend (a missing file, a refused permission) is not retried. A file that
stays unreadable raises InputUnreadable, which is no OSError: a decompressor that passes on an
OSError is then always reporting damage to the data. A file that changed after planning raises
InputChanged."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pyarrow.fs as pafs

from slimpipe.errors import InputChanged, InputUnreadable
from slimpipe.io.fs import resolve
from slimpipe.io.inputs import PROBE_BYTES, Chunk, InputFile, file_ends, probe_hash

T = TypeVar("T")

# Errors that waiting does not mend: not retried
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def retrying(fn: Callable[[], T], cfg: dict, uri: str, on_error: Callable[[], None] | None = None) -> T:
    """fn(), tried again after an OSError as the input config says; then InputUnreadable naming
    `uri`, from storage's last error. `on_error` runs after each failure (to drop a broken handle)."""
    retries = int(cfg.get("io_retries", 5))
    delay = float(cfg.get("io_retry_backoff_s", 1.0))
    attempt = 0
    while True:
        try:
            return fn()
        except OSError as exc:
            if on_error is not None:
                on_error()
            if isinstance(exc, PERMANENT) or attempt >= retries:
                tries = f" (tried {attempt + 1} times)" if attempt else ""
                error = " ".join(str(exc).split())  # one line, whatever storage said
                raise InputUnreadable(f"input {uri} cannot be read{tries}: {type(exc).__name__}: {error}") from exc
            time.sleep(delay)
            delay, attempt = delay * 2, attempt + 1


class RetryingFile:
    """The raw bytes of one input file, read under the decompressor (or Parquet). Every storage
    error is retried (reopen the file, seek back to where reading was), so it is told apart from
    damage to the data. Each open also checks that the file is still the one planned."""

    def __init__(self, file: InputFile, read_cfg: dict):
        self.file = file
        self.cfg = read_cfg
        self.pos = 0
        self.closed = False
        self._fh = None
        self._fs: pafs.FileSystem | None = None
        self._path = ""
        self._retrying(lambda fh: None)  # open now: a missing file is said at once

    def _open(self):
        self._fs, self._path = resolve(self.file.uri)
        check_unchanged(self.file, self._fs.get_file_info(self._path))
        fh = self._fs.open_input_file(self._path)
        if self.file.probe:  # same size and mtime, other bytes: a copy that kept the times (cp -p, rsync -t)
            check_probe(self.file, probe_hash(*file_ends(fh.read_at, fh.size())))
        fh.seek(self.pos)  # read_at may move a file's position
        return fh

    def _retrying(self, op):
        def attempt():
            if self._fh is None:
                self._fh = self._open()
            return op(self._fh)

        return retrying(attempt, self.cfg, self.file.uri, on_error=self._drop)

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
        check_unchanged(self.file, self._fs.get_file_info(self._path))

    def close(self) -> None:
        self._drop()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- checked against the plan --------------------------------------------------------------------

# A run's work is tied to the input it planned: a changed input is a new run, never a resume.
_RERUN = "it is a new input now: run into a new --output, or delete the run directory to start over"


def check_unchanged(file: InputFile, info: pafs.FileInfo) -> None:
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


def check_probe(file: InputFile, probe: str) -> None:
    if probe != file.probe:
        raise InputChanged(
            f"input {file.uri} changed after the run planned it (its first or last {PROBE_BYTES // 1024} KiB "
            f"differ, size and modification time alike): {_RERUN}"
        )


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


def check_reached(chunk: Chunk, reached: int, end: int | None) -> None:
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
