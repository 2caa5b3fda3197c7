"""`slimpipe export`: RUN/tokens -> training shards in OUT (default RUN/export/FORMAT), one Ray
task per tokens file, and OUT/manifest.json written last. A killed export resumes: a folder that
holds only an unfinished export with the same settings is carried on, any other non-empty
folder is refused."""

from __future__ import annotations

import json
import logging
import time

import ray

from slimpipe.config import later_config
from slimpipe.errors import ConfigError, RunConflict
from slimpipe.io.fs import child_uri, exists, join, list_files, read_json, remove_stale_tmp, resolve, write_json_atomic
from slimpipe.io.markers import Markers
from slimpipe.rundir import EXPORT, AlreadyComplete, RunDir, inside, run_lock
from slimpipe.stages.export import FORMATS, SPLITS, ExportFormat, export_groups

log = logging.getLogger("slimpipe")


class ExportDir:
    """An export folder: SPLIT/GROUP.* shards, the settings of the export under way, a completion
    record per group, and the manifest, written last."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.path = resolve(uri)
        self.state = join(self.path, ".export.json")
        self.manifest = join(self.path, "manifest.json")
        self.done = Markers(self.fs, join(self.path, ".work"))

    @staticmethod
    def shard_name(split: str, group: str) -> str:
        """How the manifest names a group's shard of a split (before the format's suffix)."""
        return f"{split}/{group}"

    def shard_prefix(self, split: str, group: str) -> str:
        return child_uri(self.uri, self.path, self.shard_name(split, group))


def _into_run(run_uri: str, fmt: str, out_uri: str | None = None, *args, **kwargs) -> bool:
    return out_uri is None or inside(out_uri, run_uri)


@run_lock("export", when=_into_run)  # the run's lock when it writes into the run
def export(
    run_uri: str, fmt: str, out_uri: str | None = None, overrides: list[str] | None = None, address: str | None = None
) -> dict:
    """Export the run's tokens; returns the manifest."""
    from slimpipe.runner import init_ray

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    fmt_cls = FORMATS[fmt]
    rd = RunDir(run_uri)
    state = rd.load_finished()
    tok = state["stages"].get("tokenize", {})
    if tok.get("status") != "done":
        raise RunConflict(f"{run_uri} has no finished tokens: run `slimpipe tokenize {run_uri}` first")
    config = later_config(state["config"], overrides)
    pack = config["pack"]
    out = ExportDir(out_uri or rd.uri_of(EXPORT, fmt))
    settings = {
        "format": fmt,
        "seq_len": None,
        "method": None,
        "seed": pack["seed"],
        "tokenizer_sha256": tok["model_sha256"],
        "pad_id": _pad_id(tok),
        **fmt_cls.settings_of(pack, tok["vocab_size"]),
    }
    if _claim(out, settings):
        return AlreadyComplete(read_json(out.fs, out.manifest))

    groups = rd.tokens_names()
    done = out.done.done()
    todo = [
        {
            "group": g,
            "tokens": rd.tokens_uri(g),
            "outputs": [{"split": s, "prefix": out.shard_prefix(s, g)} for s in SPLITS],
        }
        for g in groups
        if g not in done
    ]
    t0 = time.time()
    if todo:
        started = init_ray(dict(config["ray"], address=address or config["ray"].get("address")))
        try:
            for row in export_groups(todo, fmt, settings, pack["device"]):
                out.done.write(row["group"], _group_record(row, fmt_cls))
        finally:
            if started:
                ray.shutdown()
    manifest = _manifest(settings, out.done.read(groups), fmt_cls, rd, state, tok)
    manifest["seconds"] = round(time.time() - t0, 3)
    write_json_atomic(out.fs, out.manifest, manifest)
    return manifest


def _pad_id(tok: dict) -> int:
    ids = tok["special_ids"]
    return next(i for i in (ids["pad"], ids["eos"], 0) if i >= 0)


def _group_record(row: dict, fmt_cls: type[ExportFormat]) -> dict:
    """A finished group's EXPORT_DONE row as its completion record: per split, its counts and
    the file the manifest names."""
    splits = {}
    for s in row["splits"]:
        record = {
            "documents": s["documents"],
            "empty": s["empty"],
            "tokens": s["tokens"],
            "sources": dict(s["sources"]),
            **dict(s["counters"]),
        }
        if s["documents"]:  # a split without documents writes no file
            record["file"] = ExportDir.shard_name(s["split"], row["group"]) + fmt_cls.suffix
        splits[s["split"]] = record
    return {"group": row["group"], "splits": splits}


def _claim(out: ExportDir, settings: dict) -> bool:
    """Refuse a non-empty folder unless it holds an export with the same settings: True when
    that export is finished (nothing to do), False when there is work (a new or resumed export)."""
    if list_files(out.fs, out.path, recursive=True):
        if exists(out.fs, out.manifest):
            if exists(out.fs, out.state) and read_json(out.fs, out.state) == settings:
                return True
            raise RunConflict(f"{out.uri} already holds a finished export with other settings; choose an empty folder")
        if not exists(out.fs, out.state):
            raise RunConflict(f"{out.uri} is not empty and holds no slimpipe export; choose an empty folder")
        previous = read_json(out.fs, out.state)
        if previous != settings:
            raise RunConflict(
                f"{out.uri} holds an unfinished export with other settings "
                f"({json.dumps(previous, sort_keys=True)}); choose an empty folder"
            )
        log.info("export: resuming the unfinished export in %s", out.uri)
        remove_stale_tmp(out.fs, out.path)  # what a killed export left half-written
    write_json_atomic(out.fs, out.state, settings)
    return False


def _manifest(
    settings: dict, groups: list[dict], fmt_cls: type[ExportFormat], rd: RunDir, state: dict, tok: dict
) -> dict:
    groups = sorted(groups, key=lambda g: g["group"])
    splits = {}
    shards = {}
    for split in SPLITS:
        acc = {
            "documents": 0,
            "empty_skipped": 0,
            "tokens": 0,
            "files": [],
            "sources": {},
            **dict.fromkeys(fmt_cls.counters, 0),
        }
        written = [g["splits"][split] for g in groups if g["splits"][split]["documents"]]
        for g in groups:
            c = g["splits"][split]
            acc["documents"] += c["documents"]
            acc["empty_skipped"] += c["empty"]
            for source, n in c["sources"].items():
                acc["sources"][source] = acc["sources"].get(source, 0) + n
        for c in written:
            acc["tokens"] += c["tokens"]
            acc["files"].append(c["file"])
            for key in fmt_cls.counters:
                acc[key] += c[key]
        splits[split] = acc
        shards[split] = [(c["file"], c["tokens"]) for c in written]
    return {
        **{k: settings[k] for k in ("format", "seq_len", "method", "seed")},
        "tokenizer": {
            "sha256": settings["tokenizer_sha256"],
            "vocab_size": tok["vocab_size"],
            "model": tok["model"],
            "bos": tok["bos"],
            "eos": tok["eos"],
            "special_ids": tok["special_ids"],
            "pad_id": settings["pad_id"],
        },
        "source_run": {
            "path": rd.uri,
            "config_fingerprint": state["config_fingerprint"],
            "input_fingerprint": state["input_fingerprint"],
        },
        "splits": splits,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fmt_cls.manifest_entries(settings, shards),
    }
