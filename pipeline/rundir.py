"""The run directory: run.json (config, versions, fingerprints, stage status), the plan, and
the bookkeeping that lets a killed run resume without redoing or mixing finished work."""
from __future__ import annotations

import platform
import re
import time
from typing import NamedTuple

import pyarrow as pa

from slimpipe import __version__
from slimpipe.config import fingerprint
from slimpipe.io.inputs import Chunk
from slimpipe.io.fs import exists, join, list_files, read_json, remove_stale_tmp, resolve, write_json_atomic
from slimpipe.errors import RunConflict

_PART = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)\.parquet$")  # first line, rows, kept rows, kept bytes


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
        base = self.uri.rstrip("/") if "://" in self.uri else self.path
        return join(base, *parts)

    # --- run.json ---------------------------------------------------------------------------

    def open(self, config: dict, input_fp: str) -> bool:
        """Create the run, or check that an existing one has the same config and input.
        Returns True when resuming."""
        run_json = join(self.path, "run.json")
        config_fp = fingerprint(config)
        if exists(self.fs, run_json):
            state = read_json(self.fs, run_json)
            if state.get("config_fingerprint") != config_fp:
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
            self.state = state
            self.state["config"] = config  # where it runs (ray.address) may change on resume
            self.state["resumed"] = self.state.get("resumed", 0) + 1
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

    def load_finished(self) -> dict:
        """The state of a finished run, for the steps that follow `slimpipe run`."""
        run_json = join(self.path, "run.json")
        if not exists(self.fs, run_json):
            raise RunConflict(f"{self.uri} is not a slimpipe run (it has no run.json)")
        self.state = read_json(self.fs, run_json)
        if self.state.get("status") != "done":
            raise RunConflict(f"{self.uri} has not finished (status: {self.state.get('status')}); "
                              "run `slimpipe run` on it again to resume it")
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

    def chunk_records(self) -> dict[str, int]:
        """Records read per chunk, for chunks whose read finished."""
        out = {}
        for info in list_files(self.fs, join(self.work, "chunks")):
            if info.base_name.endswith(".json"):
                out[info.base_name[:-5]] = read_json(self.fs, info.path)["records"]
        return out

    def part_rows(self) -> dict[str, int]:
        """Rows covered by the parts written so far, per chunk."""
        out: dict[str, int] = {}
        for info in list_files(self.fs, join(self.work, "filtered"), recursive=True):
            m = _PART.match(info.base_name)
            if m:
                key = info.path.rsplit("/", 2)[-2]
                out[key] = out.get(key, 0) + int(m.group(2))
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
            part_dir = join(self.work, "filtered", key)
            if exists(self.fs, part_dir):
                self.fs.delete_dir(part_dir)
        for info in list_files(self.fs, join(self.path, "rejected")):
            if info.base_name.rsplit("-", 1)[0] in keys:  # CHUNK-LINE.parquet
                self.fs.delete_file(info.path)

    def kept_parts(self) -> dict[str, KeptPart]:
        """The parts that hold kept rows, read off their names (one listing, no file opened)."""
        out = {}
        for info in list_files(self.fs, join(self.work, "filtered"), recursive=True):
            m = _PART.match(info.base_name)
            if m and int(m.group(3)) > 0:
                out[info.path] = KeptPart(int(m.group(1)), int(m.group(3)), int(m.group(4)))
        return out

    @staticmethod
    def in_input_order(parts: dict[str, KeptPart], chunks: list[Chunk]) -> list[tuple[str, str, int]]:
        """(chunk, part path, text bytes) for the given parts, in input order."""
        rank = {c.key: i for i, c in enumerate(chunks)}
        ordered = sorted(parts.items(), key=lambda kv: (rank[kv[0].rsplit("/", 2)[-2]], kv[1].first_line))
        return [(path.rsplit("/", 2)[-2], path, part.text_bytes) for path, part in ordered]

    # --- documents shards -------------------------------------------------------------------

    def done_shards(self) -> dict[int, dict]:
        out = {}
        for info in list_files(self.fs, join(self.work, "shards")):
            if info.base_name.endswith(".json"):
                out[int(info.base_name[:-5])] = read_json(self.fs, info.path)
        return out

    def clear(self, *sub: str) -> None:
        path = join(self.path, *sub)
        if exists(self.fs, path):
            self.fs.delete_dir(path)

    def files(self, sub: str) -> list[str]:
        return [i.path for i in list_files(self.fs, join(self.path, sub)) if i.base_name.endswith(".parquet")]


def versions() -> dict:
    import ftfy
    import ray

    return {"slimpipe": __version__, "python": platform.python_version(), "ray": ray.__version__,
            "pyarrow": pa.__version__, "ftfy": ftfy.__version__}


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key in ("ray", "preset") and not prefix or (prefix == "input." and key == "paths") \
                or (prefix == "output." and key == "path"):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out



