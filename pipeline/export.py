"""`slimpipe export`: RUN/tokens -> training shards in OUT (default RUN/export/FORMAT), one Ray
task per tokens file, and OUT/manifest.json written last. A killed export resumes: a folder that
holds only an unfinished export with the same settings is carried on, any other non-empty
folder is refused."""
from __future__ import annotations

import importlib.util
import json
import logging
import time

import ray

from slimpipe.errors import ConfigError
from slimpipe.config import later_config
from slimpipe.errors import RunConflict
from slimpipe.rundir import RunDir
from slimpipe.stages.export import FORMATS, SPLITS, ExportStage, megatron_dtype
from slimpipe.io.fs import exists, join, list_files, read_json, resolve, write_json_atomic

log = logging.getLogger("slimpipe")

STATE_FILE = ".export.json"


def export(run_uri: str, fmt: str, out_uri: str | None = None, overrides: list[str] | None = None,
           address: str | None = None) -> dict:
    """Export the run's tokens; returns the manifest."""
    from slimpipe.runner import init_ray

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rd = RunDir(run_uri)
    state = rd.load_finished()
    tok = state["stages"].get("tokenize", {})
    if tok.get("status") != "done":
        raise RunConflict(f"{run_uri} has no finished tokens: run `slimpipe tokenize {run_uri}` first")
    config = later_config(state["config"], overrides)
    pack = config["pack"]
    out_uri = out_uri or rd.uri_of("export", fmt)
    settings = {"format": fmt, "seq_len": pack["seq_len"] if fmt == "arrow" else None,
                "method": pack["method"] if fmt == "arrow" else None, "seed": pack["seed"],
                "tokenizer_sha256": tok["model_sha256"], "pad_id": _pad_id(tok),
                "megatron_dtype": megatron_dtype(tok["vocab_size"]).name}
    fs, out = resolve(out_uri)
    _claim(fs, out, out_uri, settings)

    groups = [i.base_name.removesuffix(".arrow") for i in list_files(rd.fs, join(rd.path, "tokens"))
              if i.base_name.endswith(".arrow")]
    done = {i.base_name.removesuffix(".json") for i in list_files(fs, join(out, ".work")) if i.base_name.endswith(".json")}
    todo = [g for g in groups if g not in done]
    t0 = time.time()
    if todo:
        ray_cfg = dict(config["ray"], address=address or config["ray"].get("address"))
        started = init_ray(ray_cfg)
        try:
            device = _device(pack["device"], fmt)
            stage = dict(settings, device=device)
            ds = ray.data.from_items([{"path": rd.uri_of("tokens", f"{g}.arrow")} for g in todo],
                                     override_num_blocks=len(todo))
            workers = int(ray.cluster_resources().get("GPU" if device == "cuda" else "CPU", 1))
            ds = ds.map_batches(ExportStage, batch_size=1, fn_constructor_kwargs={"settings": stage, "out_uri": out_uri},
                                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(workers, len(todo)))),
                                **({"num_gpus": 1} if device == "cuda" else {"num_cpus": 1}))
            for _ in ds.iter_rows():
                pass
        finally:
            if started:
                ray.shutdown()
    groups_done = [read_json(fs, join(out, ".work", f"{g}.json")) for g in groups]
    manifest = _manifest(settings, groups_done, rd, state, tok)
    manifest["seconds"] = round(time.time() - t0, 3)
    write_json_atomic(fs, join(out, "manifest.json"), manifest)
    return manifest


def _pad_id(tok: dict) -> int:
    ids = tok["special_ids"]
    return next(i for i in (ids["pad"], ids["eos"], 0) if i >= 0)


def _device(setting: str, fmt: str) -> str:
    """Where packing runs: the GPU path when the cluster has a GPU (auto) or it is asked for."""
    if fmt != "arrow":
        return "cpu"  # a Megatron export moves bytes; there is nothing to compute
    gpus = ray.cluster_resources().get("GPU", 0)
    if setting == "cuda" and not gpus:
        raise ConfigError("pack.device is cuda but the Ray cluster has no GPU")
    if setting == "auto" and gpus and importlib.util.find_spec("torch") is None:
        log.warning("export: the cluster has a GPU but torch is not installed (the gpu extra); packing on the CPU")
        return "cpu"
    return "cuda" if setting == "cuda" or (setting == "auto" and gpus) else "cpu"


def _claim(fs, out: str, out_uri: str, settings: dict) -> None:
    """Refuse a non-empty folder unless it holds an unfinished export with the same settings."""
    state_path = join(out, STATE_FILE)
    if list_files(fs, out, recursive=True):
        if exists(fs, join(out, "manifest.json")):
            raise RunConflict(f"{out_uri} already holds a finished export; choose an empty folder")
        if not exists(fs, state_path):
            raise RunConflict(f"{out_uri} is not empty and holds no slimpipe export; choose an empty folder")
        previous = read_json(fs, state_path)
        if previous != settings:
            raise RunConflict(f"{out_uri} holds an unfinished export with other settings "
                              f"({json.dumps(previous, sort_keys=True)}); choose an empty folder")
        log.info("export: resuming the unfinished export in %s", out_uri)
    write_json_atomic(fs, state_path, settings)


def _manifest(settings: dict, groups: list[dict], rd: RunDir, state: dict, tok: dict) -> dict:
    splits = {}
    for split in SPLITS:
        acc = {"documents": 0, "empty_skipped": 0, "tokens": 0, "files": [], "sources": {}}
        if settings["format"] == "arrow":
            acc.update(sequences=0, padding_tokens=0, documents_split=0, documents_over_seq_len=0)
        for g in sorted(groups, key=lambda g: g["group"]):
            c = g["splits"][split]
            acc["documents"] += c["documents"]
            acc["empty_skipped"] += c["empty"]
            for source, n in c["sources"].items():
                acc["sources"][source] = acc["sources"].get(source, 0) + n
            if c["documents"]:
                acc["tokens"] += c["tokens"]
                acc["files"].append(c["file"])
                if settings["format"] == "arrow":
                    acc["sequences"] += c["sequences"]
                    acc["padding_tokens"] += c["padding"]
                    acc["documents_split"] += c["documents_split"]
                    acc["documents_over_seq_len"] += c["documents_over_seq_len"]
        splits[split] = acc
    manifest = {
        **{k: settings[k] for k in ("format", "seq_len", "method", "seed")},
        "tokenizer": {"sha256": settings["tokenizer_sha256"], "vocab_size": tok["vocab_size"],
                      "model": tok["model"], "bos": tok["bos"], "eos": tok["eos"], "special_ids": tok["special_ids"],
                      "pad_id": settings["pad_id"]},
        "source_run": {"path": rd.uri, "config_fingerprint": state["config_fingerprint"],
                       "input_fingerprint": state["input_fingerprint"]},
        "splits": splits,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if settings["format"] == "megatron":
        manifest["dtype"] = settings["megatron_dtype"]
        # ready for Megatron's --data-path: weight (tokens) and prefix, per file
        manifest["megatron_data_path"] = {
            split: " ".join(f"{c['tokens']} {c['file']}" for c in
                            (g["splits"][split] for g in sorted(groups, key=lambda g: g["group"])) if c["documents"])
            for split in SPLITS}
    return manifest
