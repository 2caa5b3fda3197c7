"""The run directory: run.json (config, versions, fingerprints, stage status), the plan, the
bookkeeping that lets a killed run resume without redoing or mixing finished work, and the lock
(RUN/.lock) that keeps a second process from writing into a run in use."""

from __future__ import annotations

import functools
import logging
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs

from slimpipe import __version__
from slimpipe.config import fingerprint
from slimpipe.errors import RunConflict
from slimpipe.io.fs import (
    child_uri,
    exists,
    join,
    list_files,
    parquet_files,
    read_json,
    remove_stale_tmp,
    resolve,
    write_json_atomic,
)
from slimpipe.io.inputs import Chunk
from slimpipe.io.markers import Markers
from slimpipe.io.parts import parse_part_file_name
from slimpipe.runlock import LOCK, RunLock

log = logging.getLogger("slimpipe")


def _record_chunk_read(work_uri: str, chunk: Chunk, records: int) -> None:
    fs, work = resolve(work_uri)
    Markers(fs, join(work, "chunks")).write(chunk.key, {"chunk": chunk.to_dict(), "records": records})


def _record_shard(work_uri: str, index: int, entry: dict) -> None:
    fs, work = resolve(work_uri)
    Markers(fs, join(work, "shards")).write(f"{index:05d}", {**entry, "file": f"{DOCUMENTS}/{entry['file']}"})


DOCUMENTS = "documents"
PARTS = ("_work", "filtered")  # CHUNK/PART: the rows each batch kept (names: slimpipe.io.parts)
REJECTED = "rejected"
EXACT_DUPSETS = ("_work", "dupsets")  # CHUNK.parquet: the lines of a chunk exact dedup removed
ID_RENAMES = ("_work", "ids")  # CHUNK.parquet: new ids of a chunk's rows whose input id repeats

# the split's work, as parts of paths under the run directory; an unfinished split is redone whole
SPLIT_WORK = ("_work", "split")
SPLIT_MATCHES = (*SPLIT_WORK, "matches")  # part-P.parquet: decontamination's matches in partition P of the hashes
DECONTAMINATED = ("_work", "decontaminated")  # CHUNK.parquet: the lines of a chunk decontamination removed


# near-dedup's work, as parts of paths under the run directory; a step's output found here but not
# recorded as done in run.json is cleared and redone whole
NEAR_WORK = ("_work", "near")
NEAR_PARTS = (*NEAR_WORK, "parts.json")  # the parts in node order, fixed at the first attempt
NEAR_EDGES = (*NEAR_WORK, "edges")  # LSH candidate edges
NEAR_UNIQUE = (*NEAR_WORK, "unique")  # part-P.parquet: the unique candidate edges of partition P, while verifying
NEAR_VERIFIED = (*NEAR_WORK, "verified")  # the candidate edges that verified
NEAR_COMPONENTS = (*NEAR_WORK, "components")  # *.parquet: (node, component)
NEAR_ROUNDS = (*NEAR_WORK, "rounds")  # ROUND/*.parquet: the edges of each round of components in rounds
NEAR_MEMBERS = (*NEAR_WORK, "members")  # part-P.parquet: partition P's component members, while choosing survivors
NEAR_DUPSETS = ("_work", "near_dupsets")  # CHUNK.parquet: the lines of a chunk near-dedup removed
NEAR_PREFIX = "near-"  # near-dedup's files among duplicates/ and clusters/
# what the documents writer leaves out: the lines each of these removed
REMOVED_LINES = (EXACT_DUPSETS, NEAR_DUPSETS, DECONTAMINATED)

# tokenize's files, as parts of paths under the run directory
STATS = "stats.json"
TOKENIZER_MODEL = ("tokenizer", "tokenizer.model")
TOKENIZER_INFO = ("tokenizer", "tokenizer.json")  # what the model was trained on and its checksum
TOKENS = "tokens"  # UNIT.arrow
TOKENS_DONE = ("_work", "tokens")  # UNIT.json: a finished tokenize unit's counts
EXPORT = "export"  # FORMAT/: the default export folder of each format
REPORT = "report.html"
# the stages of `slimpipe run` as run.json names them; a run is finished when all are done
RUN_STAGES = ("read_clean_filter", "exact_dedup", "unique_ids", "near_dedup", "split", "write")
# what a run writes at the top of its directory: `slimpipe run --force` clears these in a folder
# that holds no run, so that no stale file mixes with the run's outputs; anything else is left
OWN_ENTRIES = (
    DOCUMENTS,
    REJECTED,
    "duplicates",
    "clusters",
    TOKENIZER_MODEL[0],
    TOKENS,
    EXPORT,
    "_work",
    STATS,
    REPORT,
)


class AlreadyComplete(dict):
    """The stored result of a step that had finished before with the same settings: nothing was
    redone. A plain dict to every reader; the CLI says "already complete"."""


class KeptPart(NamedTuple):
    first_line: int
    rows: int
    text_bytes: int


class RunDir:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.path = resolve(uri)
        self.work = join(self.path, "_work")
        self.state: dict = {}

    def uri_of(self, *parts: str) -> str:
        """A child path as the URI that workers resolve again."""
        return child_uri(self.uri, self.path, *parts)

    # --- run.json ---------------------------------------------------------------------------

    def open(self, config: dict, input_fp: str) -> bool:
        """Create the run, or check that an existing one has the same config and input.
        Returns True when resuming."""
        run_json = join(self.path, "run.json")
        config_fp = fingerprint(config)
        if exists(self.fs, run_json):
            state = self._same_run(read_json(self.fs, run_json), config, input_fp)
            self.state = state
            self.state["config"] = config  # where it runs (ray.address) may change on resume
            self.state["resumed"] = self.state.get("resumed", 0) + 1
            self.state["status"] = "running"
            remove_stale_tmp(self.fs, self.path)
            self.save()
            return True
        self.state = {
            "config": config,
            "config_fingerprint": config_fp,
            "input_fingerprint": input_fp,
            "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stages": {},
            "status": "running",
        }
        self.save()
        return False

    def _same_run(self, state: dict, config: dict, input_fp: str) -> dict:
        """The state of the run found here, if it has this config and input; else RunConflict."""
        if state.get("config_fingerprint") != fingerprint(config):
            diff = _diff(state.get("config", {}), config)
            raise RunConflict(
                f"{self.uri} holds a run with a different config ({'; '.join(diff) or 'changed'}). "
                "Use a new --output, or delete the run directory to start over."
            )
        if state.get("input_fingerprint") != input_fp:
            raise RunConflict(
                f"{self.uri} holds a run over different input files. "
                "Use a new --output, or delete the run directory to start over."
            )
        return state

    def finished_stats(self, config: dict, input_fp: str) -> AlreadyComplete | None:
        """The stored statistics when the run here finished with this config and input; None when
        there is no run yet or it has not finished. Reads only (no lock, no Ray), so a finished
        run re-run costs a listing of the input. A different config or input is RunConflict."""
        run_json = join(self.path, "run.json")
        if not exists(self.fs, run_json):
            return None
        state = self._same_run(read_json(self.fs, run_json), config, input_fp)
        stats_json = join(self.path, STATS)
        stages = state.get("stages", {})
        if (
            state.get("status") != "done"
            or any(stages.get(name, {}).get("status") != "done" for name in RUN_STAGES)
            or not exists(self.fs, stats_json)
        ):
            return None
        # `resumed`: this call found the run there (stats.json keeps the first attempt's value)
        return AlreadyComplete(read_json(self.fs, stats_json), resumed=True)

    def claim(self, force: bool = False) -> None:
        """Make sure the folder is this run's to write: a run (run.json), empty or missing. A
        folder holding other files and no run is refused, unless force: then the run's own
        entries (OWN_ENTRIES: documents/, rejected/, ..., _work/, stats.json) are cleared first,
        so that no stale file mixes with the outputs, and everything else is left as it is."""
        if exists(self.fs, join(self.path, "run.json")) or not exists(self.fs, self.path):
            return
        names = sorted(
            i.base_name
            for i in self.fs.get_file_info(pafs.FileSelector(self.path))
            if not (i.base_name == LOCK or i.base_name.startswith(LOCK + "."))
        )
        if not names:
            return
        if not force:
            listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise RunConflict(
                f"{self.uri} is not empty ({listed}) and holds no slimpipe run (no run.json); choose an "
                "empty folder, or pass --force to run into it (slimpipe's own folders there are cleared first)"
            )
        cleared = [n for n in names if n in OWN_ENTRIES]
        for name in cleared:
            path = join(self.path, name)
            if self.fs.get_file_info(path).type == pafs.FileType.Directory:
                self.fs.delete_dir(path)
            else:
                self.fs.delete_file(path)
        log.warning(
            "--force: running into %s, which holds no run; cleared %s, left %d other entries as they are",
            self.uri,
            ", ".join(cleared) or "nothing",
            len(names) - len(cleared),
        )

    @contextmanager
    def locked(self, command: str) -> Iterator[RunLock]:
        """Hold RUN/.lock while writing into the run: a second process is refused at once
        (RunLocked), a stale lock is taken over. Released on leaving, also on an exception."""
        if self.fs.get_file_info(self.path).type == pafs.FileType.File:
            raise RunConflict(f"{self.uri} is a file; the run needs a folder")
        lock = RunLock(self.fs, self.path, self.uri, command)
        lock.acquire()
        try:
            yield lock
        finally:
            lock.release()

    def load_finished(self) -> dict:
        """The state of a finished run, for the steps that follow `slimpipe run`."""
        run_json = join(self.path, "run.json")
        if not exists(self.fs, run_json):
            raise RunConflict(f"{self.uri} is not a slimpipe run (it has no run.json)")
        self.state = read_json(self.fs, run_json)
        if self.state.get("status") != "done":
            raise RunConflict(
                f"{self.uri} has not finished (status: {self.state.get('status')}); "
                "run `slimpipe run` on it again to resume it"
            )
        return self.state

    def save(self) -> None:
        write_json_atomic(self.fs, join(self.path, "run.json"), self.state)

    def set_stage(self, name: str, **info) -> None:
        self.state["stages"].setdefault(name, {}).update(info)
        self.save()

    # --- read plan and chunk completion -----------------------------------------------------

    def load_plan(self) -> list[Chunk] | None:
        path = join(self.work, "plan.json")
        if not exists(self.fs, path):
            return None
        return [Chunk.from_dict(d) for d in read_json(self.fs, path)["chunks"]]

    def save_plan(self, chunks: list[Chunk]) -> None:
        write_json_atomic(self.fs, join(self.work, "plan.json"), {"chunks": [c.to_dict() for c in chunks]})

    def chunk_read_recorder(self) -> Callable[[Chunk, int], None]:
        """What the read stage calls in its tasks once a chunk is read to its end."""
        return partial(_record_chunk_read, self.uri_of("_work"))

    def chunk_records(self) -> dict[str, int]:
        """Records read per chunk, for chunks whose read finished."""
        return {key: r["records"] for key, r in Markers(self.fs, join(self.work, "chunks")).records().items()}

    def part_rows(self) -> dict[str, int]:
        """Rows covered by the parts written so far, per chunk."""
        out: dict[str, int] = {}
        for info in list_files(self.fs, join(self.path, *PARTS), recursive=True):
            if name := parse_part_file_name(info.base_name):
                key = info.path.rsplit("/", 2)[-2]
                out[key] = out.get(key, 0) + name.rows
        return out

    def complete_chunks(self, chunks: list[Chunk]) -> set[str]:
        """Chunks whose read finished and whose parts account for every record; the outputs of
        any other chunk are removed so that it is redone from scratch."""
        records = self.chunk_records()
        rows = self.part_rows()
        complete = {c.key for c in chunks if c.key in records and rows.get(c.key, 0) == records[c.key]}
        incomplete = {c.key for c in chunks} - complete
        if incomplete:
            self._forget_chunks(incomplete)
        return complete

    def _forget_chunks(self, keys: set[str]) -> None:
        for key in keys:
            marker = join(self.work, "chunks", f"{key}.json")
            if exists(self.fs, marker):
                self.fs.delete_file(marker)
            part_dir = join(self.path, *PARTS, key)
            if exists(self.fs, part_dir):
                self.fs.delete_dir(part_dir)
        for info in list_files(self.fs, join(self.path, REJECTED)):
            if info.base_name.rsplit("-", 1)[0] in keys:  # CHUNK-LINE.parquet
                self.fs.delete_file(info.path)

    def removed_lines_uris(self, kinds: tuple[tuple[str, ...], ...] = REMOVED_LINES) -> list[str]:
        """The folders whose CHUNK.parquet files list lines of a chunk a stage removed."""
        return [self.uri_of(*kind) for kind in kinds]

    def kept_parts(self) -> dict[str, KeptPart]:
        """The parts that hold kept rows, read off their names (one listing, no file opened)."""
        out = {}
        for info in list_files(self.fs, join(self.path, *PARTS), recursive=True):
            if (name := parse_part_file_name(info.base_name)) and name.kept > 0:
                out[info.path] = KeptPart(name.first_line, name.kept, name.kept_bytes)
        return out

    @staticmethod
    def in_input_order(parts: dict[str, KeptPart], chunks: list[Chunk]) -> list[tuple[str, str, int]]:
        """(chunk, part path, text bytes) for the given parts, in input order."""
        rank = {c.key: i for i, c in enumerate(chunks)}
        ordered = sorted(parts.items(), key=lambda kv: (rank[kv[0].rsplit("/", 2)[-2]], kv[1].first_line))
        return [(path.rsplit("/", 2)[-2], path, part.text_bytes) for path, part in ordered]

    # --- documents shards -------------------------------------------------------------------

    def shard_recorder(self) -> Callable[[int, dict], None]:
        """What the documents writer calls in its tasks once a shard is in place."""
        return partial(_record_shard, self.uri_of("_work"))

    def done_shards(self) -> dict[int, dict]:
        return {int(index): r for index, r in Markers(self.fs, join(self.work, "shards")).records().items()}

    def clear(self, *sub: str) -> None:
        path = join(self.path, *sub)
        if exists(self.fs, path):
            self.fs.delete_dir(path)

    def files(self, sub: str) -> list[str]:
        return parquet_files(self.fs, join(self.path, sub))

    # --- split and decontamination ----------------------------------------------------------

    def decontaminated_uri(self) -> str:
        return self.uri_of(*DECONTAMINATED)

    def clear_split(self, reject_stage: str) -> None:
        """Forget an earlier attempt at the split: its rejected files (REJECT_STAGE-CHUNK.parquet), the
        lines it removed and its matches."""
        for info in list_files(self.fs, join(self.path, "rejected")):
            if info.base_name.startswith(f"{reject_stage}-"):
                self.fs.delete_file(info.path)
        self.clear(*DECONTAMINATED)
        self.clear(*SPLIT_WORK)

    # --- near-dedup -------------------------------------------------------------------------

    def clear_near_outputs(self) -> None:
        """Forget an unfinished survivors step: its duplicates and clusters files, the lines it removed."""
        for path in self.files("duplicates") + self.files("clusters"):
            if path.rsplit("/", 1)[-1].startswith(NEAR_PREFIX):
                self.fs.delete_file(path)
        self.clear(*NEAR_DUPSETS)

    # --- tokenizer and tokens ---------------------------------------------------------------

    def has_tokenizer(self) -> bool:
        return exists(self.fs, join(self.path, *TOKENIZER_MODEL))

    def document_uris(self) -> list[str]:
        return [self.uri_of(DOCUMENTS, path.rsplit("/", 1)[-1]) for path in self.files(DOCUMENTS)]

    def tokens_uri(self, unit: str) -> str:
        return self.uri_of(TOKENS, f"{unit}.arrow")

    def tokens_names(self) -> list[str]:
        """The units (groups, to export) that have a tokens file."""
        return [
            i.base_name.removesuffix(".arrow")
            for i in list_files(self.fs, join(self.path, TOKENS))
            if i.base_name.endswith(".arrow")
        ]

    def tokens_done(self) -> Markers:
        return Markers(self.fs, join(self.path, *TOKENS_DONE))


def run_lock(command: str, when: Callable[..., bool] | None = None) -> Callable:
    """Decorate a step whose first argument is the run's URI: it runs holding RUN/.lock (when
    `when(*args, **kwargs)` says so, if given)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(run_uri: str, *args, **kwargs):
            rd = RunDir(run_uri)
            if (when is not None and not when(run_uri, *args, **kwargs)) or not exists(rd.fs, rd.path):
                return fn(run_uri, *args, **kwargs)  # no run there: the step says so, nothing is created
            with rd.locked(command):
                return fn(run_uri, *args, **kwargs)

        return wrapper

    return decorate


def inside(uri: str, run_uri: str) -> bool:
    """Whether uri is the run directory or lies under it."""
    fs_a, a = resolve(uri)
    fs_b, b = resolve(run_uri)
    return type(fs_a) is type(fs_b) and (a.rstrip("/") + "/").startswith(b.rstrip("/") + "/")


def versions() -> dict:
    import ftfy
    import ray

    return {
        "slimpipe": __version__,
        "python": platform.python_version(),
        "ray": ray.__version__,
        "pyarrow": pa.__version__,
        "ftfy": ftfy.__version__,
    }


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if (
            key in ("ray", "preset")
            and not prefix
            or (prefix == "input." and key == "paths")
            or (prefix == "output." and key == "path")
        ):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
