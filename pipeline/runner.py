"""Runs the stages on Ray in order, resuming from what the run directory already holds:

read -> clean -> normalise -> filter -> MinHash signatures -> parts   (streaming, one fused
    task per chunk)
index of parts -> shuffle on text hash -> duplicates, and per chunk the lines they hold
signatures in the parts -> LSH, verification, components, survivors (pipeline/near.py, stages/near_dedup)
parts minus duplicate lines -> documents shards (streamed, in input order)
outputs -> statistics (Ray tasks aggregating files) -> stats.json, report.html
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter

import ray

from slimpipe.errors import ConfigError, ConservationError
from slimpipe.io import inputs as inputs_mod
from slimpipe.io.discover import discover
from slimpipe.io.fs import exists, join, read_json, write_json_atomic
from slimpipe.near import banding_of, reference_parts, stage_near_dedup
from slimpipe.rundir import (
    DECONTAMINATED,
    DOCUMENTS,
    EXACT_DUPSETS,
    ID_RENAMES,
    NEAR_DUPSETS,
    NEAR_WORK,
    PARTS,
    REJECTED,
    STATS,
    RunDir,
)
from slimpipe.split import stage_split
from slimpipe.stages.clean import clean
from slimpipe.stages.exact_dedup import find_exact_duplicates
from slimpipe.stages.filters import FilterStage, filter_documents
from slimpipe.stages.minhash import sign
from slimpipe.stages.normalize import normalize
from slimpipe.stages.read import read_dataset
from slimpipe.stages.shuffle import Shuffle
from slimpipe.stages.unique_ids import make_ids_unique
from slimpipe.stages.write import plan_shards, write_parts, write_shards
from slimpipe.stats import collect_stats, write_reports

log = logging.getLogger("slimpipe")
DRIVER_INLINE_RETURN_BYTES = 1024


def init_ray(ray_cfg: dict) -> bool:
    """Connect to --address/RAY_ADDRESS, or start a local Ray. Returns True if we started it."""
    if ray.is_initialized():
        _keep_original_errors()
        return False
    # A task's return smaller than this lives in the memory of its owner, the driver, which owns
    # every block of the run: Ray's 100 KB let the driver grow with the corpus (634 MB at a
    # million documents, 220 MB with this). Read by every Ray process this one starts, and by
    # this driver when it joins a cluster.
    os.environ.setdefault("RAY_max_direct_call_object_size", str(DRIVER_INLINE_RETURN_BYTES))
    address = ray_cfg.get("address") or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {"address": address, "log_to_driver": True, "include_dashboard": False}
    if address == "local" and ray_cfg.get("num_cpus"):
        kwargs["num_cpus"] = ray_cfg["num_cpus"]
    # ray.init replaces the SIGTERM handler (its own exits at once, leaving run.json and the lock
    # as they were); keep one the caller installed, like the CLI's, which stops the run cleanly
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(**kwargs)
    if callable(sigterm):
        signal.signal(signal.SIGTERM, sigterm)
    _keep_original_errors()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(ray_cfg.get("progress_bars", True))
    ctx.print_on_execution_start = False
    return True


def _keep_original_errors() -> None:
    """Let an exception raised in a Ray Data function reach the driver as itself (inside
    RayTaskError.cause) rather than as a UserCodeException that keeps only its text, so that the
    CLI can tell a full disk or an unreadable input from a bug."""
    ray.data.DataContext.get_current().raise_original_map_exception = True


@ray.remote(num_cpus=0.5)
def _count_newlines(uri: str, start: int, end: int, separator: str = "\n") -> int:
    return inputs_mod.count_newlines_in_range(uri, start, end, separator)


def _count_newlines_on_cluster(jobs):
    return ray.get([_count_newlines.remote(*job) for job in jobs])


# --- the run --------------------------------------------------------------------------------


def run(config: dict, force: bool = False) -> dict:
    """Run (or resume) the pipeline into config.output.path; returns the statistics. A run that
    finished before with the same config and input returns its stored statistics, as an
    AlreadyComplete, without starting Ray. force: run into a non-empty folder that holds no run
    (RunDir.claim says what it clears there)."""
    # errors before Ray; a run directory inside an input folder is not read as input
    discovered = discover(config["input"]["paths"], config["input"], output=config["output"]["path"])
    files = discovered.files
    if not files:
        raise ConfigError(f"no input file holds records: {_skipped_text(discovered.skipped)}")
    FilterStage(config["filters"])  # a missing model file, say, is an error before Ray too
    if config["split"]["eval_files"]:
        discover(config["split"]["eval_files"], config["input"])  # missing files: an error now
    if config["dedup"]["near"]["enabled"]:
        reference_parts(config["dedup"]["near"]["against"], config["dedup"]["near"])  # earlier runs usable?
        banding_of(config["dedup"]["near"])  # bands and rows the settings can give?
    rd = RunDir(config["output"]["path"])
    input_fp = inputs_mod.input_fingerprint(files)
    finished = rd.finished_stats(config, input_fp)  # a finished run: its stored stats, no Ray
    if finished is not None:
        log.info("%s is already complete: nothing to do", rd.uri)
        return finished
    with rd.locked("run"):  # before anything is written: a second run here is refused at once
        rd.claim(force)
        resumed = rd.open(config, input_fp)
        return _run_stages(rd, discovered, config, resumed)


def _skipped_text(skipped: list[inputs_mod.SkippedInput]) -> str:
    reasons = Counter(s.reason for s in skipped)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) + " passed over"


def _run_stages(rd: RunDir, discovered: inputs_mod.Inputs, config: dict, resumed: bool) -> dict:
    """Run the stages on Ray, holding the run's lock. run.json's status ends `done`, `interrupted`
    (Ctrl-C, SIGTERM from the CLI) or `failed: ...`; Ray is shut down if we started it."""
    earlier = _earlier_timings(rd)
    was_running = ray.is_initialized()
    try:
        init_ray(config["ray"])
        shuffle = Shuffle.for_cluster(config["ray"])
        timings: dict[str, float] = {}
        chunks = _plan(rd, discovered.files, config)
        _timed(rd, "read_clean_filter", timings, earlier, _stage_filter, rd, chunks, config)
        _timed(rd, "exact_dedup", timings, earlier, _stage_dedup, rd, config, shuffle)
        _timed(rd, "unique_ids", timings, earlier, _stage_unique_ids, rd, config, shuffle)
        _timed(rd, "near_dedup", timings, earlier, stage_near_dedup, rd, chunks, config, shuffle)
        _timed(rd, "split", timings, earlier, stage_split, rd, chunks, config, shuffle)
        _timed(rd, "write", timings, earlier, _stage_write, rd, chunks, config)
        t = time.time()
        stats = collect_stats(rd, chunks, discovered)
        stats["resumed"] = resumed
        timings["stats"] = time.time() - t
        stats["timings_s"] = {**timings, "total": sum(timings.values())}
        write_reports(rd, stats)
        c = stats["conservation"]
        if not c["holds"]:
            _set_status(rd, "failed: conservation")
            raise ConservationError(
                f"input records {c['input_records']} != kept {c['kept']} + rejected "
                f"{c['rejected']} + duplicates {c['duplicates']}"
            )
        rd.state["status"] = "done"
        rd.save()
        return stats
    except KeyboardInterrupt:
        _set_status(rd, "interrupted")
        raise
    except ConservationError:
        raise
    except Exception as exc:
        _set_status(rd, f"failed: {type(exc).__name__}")
        raise
    finally:
        if not was_running and ray.is_initialized():
            ray.shutdown()


def _set_status(rd: RunDir, status: str) -> None:
    """Record how the run ended; a disk that refuses must not hide the error that ended it."""
    rd.state["status"] = status
    try:
        rd.save()
    except Exception as exc:
        log.warning("could not record status %r in run.json: %s", status, exc)


def _earlier_timings(rd: RunDir) -> dict:
    """timings_s of an earlier finished attempt (stats.json), for stages not redone now."""
    try:
        return read_json(rd.fs, join(rd.path, STATS)).get("timings_s", {})
    except (OSError, ValueError):
        return {}


def _timed(rd: RunDir, name: str, timings: dict, earlier: dict, fn, *args) -> None:
    """Run a stage and record its seconds in run.json. A stage done in an earlier attempt is
    skipped by its function; it keeps the seconds that attempt took rather than ~0. A stage
    redone in part counts the time of this attempt."""
    before = rd.state["stages"].get(name, {})
    kept = before.get("seconds", earlier.get(name)) if before.get("status") == "done" else None
    t = time.time()
    fn(*args)
    if kept is not None:
        timings[name] = kept
    else:
        timings[name] = time.time() - t
    if rd.state["stages"].get(name, {}).get("seconds") != timings[name]:
        rd.set_stage(name, seconds=timings[name])


def _plan(rd: RunDir, files, config) -> list:
    chunks = rd.load_plan()
    if chunks is None:
        chunks = inputs_mod.plan_chunks(files, config["input"]["split_bytes"], _count_newlines_on_cluster)
        rd.save_plan(chunks)
    return chunks


def _stage_filter(rd: RunDir, chunks, config) -> None:
    done = rd.complete_chunks(chunks)
    todo = [c for c in chunks if c.key not in done]
    rd.set_stage("read_clean_filter", chunks=len(chunks), reused=len(done), todo=len(todo))
    if not todo:
        return
    log.info("read/clean/filter: %d chunks to do, %d reused", len(todo), len(done))
    # Ray merges what a read task yields into blocks of up to target_max_block_size (128 MiB by
    # default) before the fused stages see them; keep blocks near the configured batch size so a
    # task's memory does not grow with the size of its input file.
    ctx = ray.data.DataContext.get_current()
    ctx.target_max_block_size = 2 * config["input"]["batch_bytes"]
    near = config["dedup"]["near"]
    norm = {"hash_normalized": config["dedup"]["exact"]["normalized"], "keep_normalized": near["enabled"]}
    ds = read_dataset(todo, config["input"], rd.chunk_read_recorder())
    ds = clean(ds, config["clean"])
    ds = normalize(ds, **norm)
    ds = filter_documents(ds, config["filters"], **norm)
    if near["enabled"]:
        ds = sign(ds, near, gpus=int(ray.cluster_resources().get("GPU", 0)))
    ds = write_parts(ds, rd.uri_of(*PARTS), rd.uri_of(REJECTED), config["output"]["compression_level"])
    for _ in ds.iter_batches(batch_size=None):
        pass
    complete = rd.complete_chunks(todo)
    missing = [c.key for c in todo if c.key not in complete]
    if missing:
        raise RuntimeError(f"chunks did not complete: {missing[:5]}")
    rd.set_stage("read_clean_filter", status="done")


def _stage_dedup(rd: RunDir, config, shuffle: Shuffle) -> None:
    """Find exact duplicates with a shuffle of the narrow index; all or nothing on resume."""
    if rd.state["stages"].get("exact_dedup", {}).get("status") == "done":
        return
    rd.clear("duplicates")
    rd.clear("clusters")
    rd.clear(*EXACT_DUPSETS)
    rd.clear(*NEAR_DUPSETS)
    rd.clear(*NEAR_WORK)
    rd.clear(*DECONTAMINATED)
    for later in ("unique_ids", "near_dedup", "split"):  # they work on what exact dedup leaves
        rd.state["stages"].pop(later, None)
    kept = rd.kept_parts()
    parts = sorted(kept)
    if not config["dedup"]["exact"]["enabled"] or not parts:
        rd.set_stage("exact_dedup", status="done", partitions=0)
        return
    partitions = find_exact_duplicates(
        rd.uri_of(),
        parts,
        sum(p.rows for p in kept.values()),
        shuffle,
        rd.uri_of("duplicates"),
        rd.uri_of(*EXACT_DUPSETS),
        config["output"]["compression_level"],
    )
    rd.set_stage("exact_dedup", status="done", partitions=partitions)


def _stage_unique_ids(rd: RunDir, config, shuffle: Shuffle) -> None:
    """Give rows whose input id repeats a unique id; all or nothing on resume. Ids the reader
    derives (file and line) are unique already, so with no id field there is nothing to do."""
    if rd.state["stages"].get("unique_ids", {}).get("status") == "done":
        return
    rd.clear(*ID_RENAMES)
    kept = rd.kept_parts()
    if not config["input"].get("id_field") or not kept:
        rd.set_stage("unique_ids", status="done", renamed=0)
        return
    rows = sum(p.rows for p in kept.values())
    partitions, renamed = make_ids_unique(rd.uri_of(), sorted(kept), rows, shuffle, rd.uri_of(*ID_RENAMES))
    rd.set_stage("unique_ids", status="done", partitions=partitions, renamed=renamed)


def _stage_write(rd: RunDir, chunks, config) -> None:
    """Stream kept parts, minus duplicates, into documents shards; finished shards are reused."""
    plan_path = join(rd.work, "shards.json")
    if exists(rd.fs, plan_path):
        shards = read_json(rd.fs, plan_path)["shards"]
    else:
        shards = plan_shards(rd.in_input_order(rd.kept_parts(), chunks), config["output"]["shard_bytes"])
        write_json_atomic(rd.fs, plan_path, {"shards": shards})
    done = rd.done_shards()
    todo = [s for s in shards if s["index"] not in done]
    rd.set_stage("write", shards=len(shards), reused=len(done), todo=len(todo))
    if todo:
        write_shards(
            todo,
            rd.uri_of(DOCUMENTS),
            rd.removed_lines_uris(),
            rd.uri_of(*ID_RENAMES),
            config["output"]["compression_level"],
            config["split"],
            rd.shard_recorder(),
        )
    done = rd.done_shards()
    entries = [done[s["index"]] for s in shards]
    write_json_atomic(
        rd.fs,
        join(rd.path, "documents", "_manifest.json"),
        {
            "shards": entries,
            "rows": sum(e["rows"] for e in entries),
            "holdout_rows": sum(e["holdout_rows"] for e in entries),
            "text_bytes": sum(e["text_bytes"] for e in entries),
        },
    )
    rd.set_stage("write", status="done")
