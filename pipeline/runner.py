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
import math
import os
import time

import ray
from ray.data.context import ShuffleStrategy

from slimpipe.errors import ConservationError
from slimpipe.io import inputs as inputs_mod
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
    RunDir,
)
from slimpipe.split import stage_split
from slimpipe.stages.clean import clean
from slimpipe.stages.exact_dedup import find_exact_duplicates
from slimpipe.stages.filters import FilterStage, filter_documents
from slimpipe.stages.minhash import sign
from slimpipe.stages.normalize import normalize
from slimpipe.stages.read import read_dataset
from slimpipe.stages.unique_ids import make_ids_unique
from slimpipe.stages.write import plan_shards, write_parts, write_shards
from slimpipe.stats import collect_stats, write_reports

log = logging.getLogger("slimpipe")


def init_ray(ray_cfg: dict) -> bool:
    """Connect to --address/RAY_ADDRESS, or start a local Ray. Returns True if we started it."""
    if ray.is_initialized():
        return False
    address = ray_cfg.get("address") or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {"address": address, "log_to_driver": True, "include_dashboard": False}
    if address == "local" and ray_cfg.get("num_cpus"):
        kwargs["num_cpus"] = ray_cfg["num_cpus"]
    ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(ray_cfg.get("progress_bars", True))
    ctx.print_on_execution_start = False
    return True


@ray.remote(num_cpus=0.5)
def _count_newlines(uri: str, start: int, end: int) -> int:
    return inputs_mod.count_newlines_in_range(uri, start, end)


def _count_newlines_on_cluster(jobs):
    return ray.get([_count_newlines.remote(*job) for job in jobs])


# --- the run --------------------------------------------------------------------------------


def run(config: dict) -> dict:
    """Run (or resume) the pipeline into config.output.path; returns the statistics."""
    files = inputs_mod.discover(config["input"]["paths"], config["input"])  # errors before Ray
    FilterStage(config["filters"])  # a missing model file, say, is an error before Ray too
    if config["split"]["eval_files"]:
        inputs_mod.discover(config["split"]["eval_files"], config["input"])  # missing files: an error now
    if config["dedup"]["near"]["enabled"]:
        reference_parts(config["dedup"]["near"]["against"], config["dedup"]["near"])  # earlier runs usable?
        banding_of(config["dedup"]["near"])  # bands and rows the settings can give?
    rd = RunDir(config["output"]["path"])
    resumed = rd.open(config, inputs_mod.input_fingerprint(files))
    started = init_ray(config["ray"])
    # Shuffles as plain tasks. Ray Data's default hash shuffle keeps aggregator actors holding
    # CPUs until the whole dataset ends: three shuffles in a row (near-dedup survivors) then held
    # more than the 2 CPUs of a small machine and the next map waited forever. Task-based sort
    # shuffles also measured 3-8x faster on our small shuffles (exact dedup 4.2 s -> 0.5 s).
    ray.data.DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    t0 = time.time()
    try:
        timings = {}
        t = time.time()
        chunks = _plan(rd, files, config)
        _stage_filter(rd, chunks, config)
        timings["read_clean_filter"] = time.time() - t
        t = time.time()
        _stage_dedup(rd, config)
        timings["exact_dedup"] = time.time() - t
        t = time.time()
        _stage_unique_ids(rd, config)
        timings["unique_ids"] = time.time() - t
        t = time.time()
        stage_near_dedup(rd, chunks, config, _cpus())
        timings["near_dedup"] = time.time() - t
        t = time.time()
        stage_split(rd, chunks, config)
        timings["split"] = time.time() - t
        t = time.time()
        _stage_write(rd, chunks, config)
        timings["write"] = time.time() - t
        t = time.time()
        stats = collect_stats(rd, chunks)
        stats["resumed"] = resumed
        stats["timings_s"] = {**timings, "stats": time.time() - t, "total": time.time() - t0}
        write_reports(rd, stats)
        c = stats["conservation"]
        if not c["holds"]:
            rd.state["status"] = "failed: conservation"
            rd.save()
            raise ConservationError(
                f"input records {c['input_records']} != kept {c['kept']} + rejected "
                f"{c['rejected']} + duplicates {c['duplicates']}"
            )
        rd.state["status"] = "done"
        rd.save()
        return stats
    finally:
        if started:
            ray.shutdown()


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


def _cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _reducers(partitions: int) -> int:
    return max(1, min(partitions, _cpus()))


def _stage_dedup(rd: RunDir, config) -> None:
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
    # Bound each reducer's share of the index to about a million rows (~100 MB).
    partitions = max(1, math.ceil(sum(p.rows for p in kept.values()) / 1_000_000))
    find_exact_duplicates(
        rd.uri_of(),
        parts,
        partitions,
        _reducers(partitions),
        rd.uri_of("duplicates"),
        rd.uri_of(*EXACT_DUPSETS),
        config["output"]["compression_level"],
    )
    rd.set_stage("exact_dedup", status="done", partitions=partitions)


def _stage_unique_ids(rd: RunDir, config) -> None:
    """Give rows whose input id repeats a unique id; all or nothing on resume. Ids the reader
    derives (file and line) are unique already, so with no id field there is nothing to do."""
    if rd.state["stages"].get("unique_ids", {}).get("status") == "done":
        return
    rd.clear(*ID_RENAMES)
    kept = rd.kept_parts()
    if not config["input"].get("id_field") or not kept:
        rd.set_stage("unique_ids", status="done", renamed=0)
        return
    partitions = max(1, math.ceil(sum(p.rows for p in kept.values()) / 1_000_000))
    renamed = make_ids_unique(rd.uri_of(), sorted(kept), partitions, _reducers(partitions), rd.uri_of(*ID_RENAMES))
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
