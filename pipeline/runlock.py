"""RUN/.lock: the record of the one process writing into a run, taken atomically where the
filesystem allows, refreshed by a heartbeat, and taken over once its holder is gone."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime

import pyarrow.fs as pafs

from slimpipe.errors import RunLocked
from slimpipe.io.fs import exists, join, write_json_atomic

log = logging.getLogger("slimpipe")

LOCK = ".lock"  # held by the process writing into the run (RunLock)
HEARTBEAT_S = 30.0  # how often a holder refreshes its lock's heartbeat
STALE_S = 300.0  # another host's lock whose heartbeat is older than this is stale


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _lock_record(data: bytes) -> dict:
    """A lock file's record; {} for one that is empty, half written or not a record at all."""
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


class RunLock:
    """RUN/.lock: {"pid", "host", "started", "command", "heartbeat", "token"} of the process that
    writes into the run. On a local disk it is created with O_CREAT|O_EXCL, which is atomic, so
    of two processes exactly one gets it. Object stores have no atomic create: there the lock is
    written, read back after a moment and kept only if it still names us; this is best effort (two
    processes starting within that moment can both believe they hold it).

    A lock is stale, and taken over with a warning, when its process is gone: on the same host,
    when its pid is no longer alive; from another host, when its heartbeat (refreshed by a daemon
    thread every HEARTBEAT_S) is older than STALE_S. A reused pid keeps a dead run's lock looking
    alive; the refusal names the pid, and deleting RUN/.lock by hand is then safe."""

    def __init__(self, fs: pafs.FileSystem, folder: str, uri: str, command: str):
        self.fs, self.folder, self.uri = fs, folder, uri
        self.path = join(folder, LOCK)
        self.local = isinstance(fs, pafs.LocalFileSystem)
        now = _now()
        self.record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now,
            "heartbeat": now,
            "command": command,
            "token": uuid.uuid4().hex,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- taking and giving back ------------------------------------------------------------

    def acquire(self) -> None:
        self.fs.create_dir(self.folder, recursive=True)
        for _ in range(5):
            if self._create():
                self._thread = threading.Thread(target=self._beat, name="slimpipe-lock-heartbeat", daemon=True)
                self._thread.start()
                return
            holder = self._read()
            if holder is None:  # given back meanwhile
                continue
            why = self._stale(holder)
            if why is None:
                raise RunLocked(
                    f"{self.uri} is in use by `slimpipe {holder.get('command', '?')}` (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('started')}); wait for it to end, or stop it. "
                    f"If that process is surely gone, delete {join(self.folder, LOCK)}"
                )
            log.warning(
                "taking over the stale lock of %s: `slimpipe %s` (pid %s on %s, since %s) %s",
                self.uri,
                holder.get("command", "?"),
                holder.get("pid"),
                holder.get("host"),
                holder.get("started"),
                why,
            )
            self._break(holder)
        raise RunLocked(f"{self.uri}: could not take {join(self.folder, LOCK)}; other processes keep taking it")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            holder = self._read()
            if holder is not None and holder.get("token") == self.record["token"]:
                self.fs.delete_file(self.path)
        except OSError as exc:  # a full or read-only disk must not hide the error that ended the run
            log.warning("could not remove %s: %s", self.path, exc)

    # --- the file --------------------------------------------------------------------------

    def _data(self) -> bytes:
        return json.dumps(self.record, indent=2, sort_keys=True).encode() + b"\n"

    def _create(self) -> bool:
        if self.local:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._data())
            return True
        # object store: no atomic create; write, wait, read back (best effort, see the class)
        if exists(self.fs, self.path):
            return False
        with self.fs.open_output_stream(self.path) as out:
            out.write(self._data())
        time.sleep(1.0)
        holder = self._read()
        return holder is not None and holder.get("token") == self.record["token"]

    def _read(self) -> dict | None:
        """The lock's record; None when there is no lock; {} when it cannot be parsed (a process
        that died between creating and writing it)."""
        for attempt in range(5):
            try:
                with self.fs.open_input_stream(self.path) as f:
                    data = f.read()
            except FileNotFoundError:
                return None
            if record := _lock_record(data):
                return record
            time.sleep(0.1 * (attempt + 1))  # being written right now, or never finished
        return {}

    def _stale(self, holder: dict) -> str | None:
        """Why the holder is gone, or None while it may be alive."""
        if not holder:
            return "(the lock file is unreadable)"
        if holder.get("host") == self.record["host"]:
            pid = holder.get("pid")
            # our own pid is a process that died before us (a restarted container keeps its
            # host name and may get the same small pid)
            if not isinstance(pid, int) or pid <= 0 or pid == os.getpid() or not _pid_alive(pid):
                return "is no longer running"
            return None
        try:
            age = time.time() - datetime.fromisoformat(holder["heartbeat"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return "(the lock has no readable heartbeat)"
        return f"has not refreshed its heartbeat for {age:.0f} s" if age > STALE_S else None

    def _break(self, holder: dict) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile."""
        if not self.local:  # best effort, as taking it
            current = self._read()
            if current is not None and current.get("token") == holder.get("token"):
                self.fs.delete_file(self.path)
            return
        # rename, then check what was moved: only one of several processes taking it over can
        # move a given file, and a fresh lock moved by mistake is put back (link fails if taken)
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        with open(aside, "rb") as f:
            moved = _lock_record(f.read())
        if moved.get("token") != holder.get("token"):
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        os.unlink(aside)

    def _beat(self) -> None:
        """Refresh the heartbeat while the lock is ours (a daemon thread)."""
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder = self._read()
                if holder is None or holder.get("token") != self.record["token"]:
                    log.warning("%s: the run's lock was taken by another process", self.uri)
                    return
                self.record["heartbeat"] = _now()
                write_json_atomic(self.fs, self.path, self.record)
            except Exception as exc:  # a missed beat is no reason to stop the run
                log.debug("lock heartbeat failed: %s", exc)
