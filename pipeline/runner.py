"""Runs the stages on Ray in order, resuming from what the run directory already holds:

    read -> clean -> normalise -> filter -> parts      (streaming, one fused task per chunk)
    parts -> shuffle on text hash -> exact dedup -> documents + duplicates shards
    outputs -> statistics (Ray aggregations) -> stats.json, report.html, manifest
"""
from __future__ import annotations

import logging
import math
import os
import time

import pyarrow as pa
import pyarrow.compute as pc
import ray

from slimpipe import inputs as inputs_mod
from slimpipe.rundir import RunDir
from slimpipe.stages.clean import Cleaner
from slimpipe.stages.exact_dedup import add_partition, dedup_partition
from slimpipe.stages.filter import FilterStage
from slimpipe.stages.normalize import Normalizer
from slimpipe.stages.read import read_dataset
from slimpipe.stages.write import PartWriter, write_shards
from slimpipe.stats import collect_stats, write_reports
from slimpipe.storage import join, read_parquet_files, resolve, write_json_atomic, write_parquet_atomic

log = logging.getLogger("slimpipe")


class ConservationError(RuntimeError):
    """Records went missing or were counted twice: the run's output cannot be trusted."""


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


# --- the per-batch stage functions (run inside Ray tasks) ------------------------------------


def _clean(table: pa.Table, clean_cfg: dict) -> pa.Table:
    return Cleaner(clean_cfg)(table)


def _normalize(table: pa.Table, hash_normalized: bool) -> pa.Table:
    return Normalizer(hash_normalized)(table)


def _filter(table: pa.Table, filters_cfg: dict) -> pa.Table:
    return FilterStage(filters_cfg)(table)


def _write_parts(table: pa.Table, run_uri: str, work_uri: str, level: int) -> pa.Table:
    return PartWriter(run_uri, work_uri, level)(table)


def _partition(table: pa.Table, partitions: int, skip: list[int]) -> pa.Table:
    table = add_partition(table, partitions)
    if skip:
        table = table.filter(pc.invert(pc.is_in(table["partition"], pa.array(skip, pa.int64()))))
    return table


def _dedup_and_write(table: pa.Table, run_uri: str, work_uri: str, dedup: bool,
                     shard_bytes: int, level: int) -> pa.Table:
    """One hash partition: pick survivors, write its duplicates and documents shards, then mark
    it done (last, so a partition is either wholly written or redone)."""
    partition = int(table["partition"][0].as_py())
    if dedup:
        survivors, duplicates = dedup_partition(table)
    else:
        survivors = table.take(pc.sort_indices(table, [("file", "ascending"), ("line", "ascending")]))
        duplicates = None
    fs, run = resolve(run_uri)
    dup_info = None
    if duplicates is not None and duplicates.num_rows:
        dup_info = write_parquet_atomic(fs, join(run, "duplicates", f"part-{partition:05d}.parquet"),
                                        duplicates, level)
    shards = write_shards(survivors, partition, run_uri, shard_bytes, level)
    _, work = resolve(work_uri)
    write_json_atomic(fs, join(work, "partitions", f"{partition:05d}.json"),
                      {"shards": shards, "duplicates": dup_info})
    return pa.table({"partition": [partition], "documents": [survivors.num_rows],
                     "duplicates": [0 if duplicates is None else duplicates.num_rows]})


# --- the run --------------------------------------------------------------------------------


def run(config: dict) -> dict:
    """Run (or resume) the pipeline into config.output.path; returns the statistics."""
    files = inputs_mod.discover(config["input"]["paths"], config["input"])  # errors before Ray
    rd = RunDir(config["output"]["path"])
    resumed = rd.open(config, inputs_mod.input_fingerprint(files))
    started = init_ray(config["ray"])
    t0 = time.time()
    try:
        timings = {}
        t = time.time()
        chunks = _plan(rd, files, config)
        _stage_filter(rd, chunks, config)
        timings["read_clean_filter"] = time.time() - t
        t = time.time()
        _stage_dedup(rd, config)
        timings["exact_dedup_write"] = time.time() - t
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
    ds = read_dataset(todo, config["input"], rd.uri_of("_work"))
    common = dict(batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
    ds = ds.map_batches(_clean, fn_kwargs={"clean_cfg": config["clean"]}, **common)
    ds = ds.map_batches(_normalize, fn_kwargs={"hash_normalized": config["dedup"]["exact"]["normalized"]},
                        **common)
    ds = ds.map_batches(_filter, fn_kwargs={"filters_cfg": config["filters"]}, **common)
    ds = ds.map_batches(_write_parts, fn_kwargs={"run_uri": rd.uri_of(), "work_uri": rd.uri_of("_work"),
                                                 "level": config["output"]["compression_level"]}, **common)
    for _ in ds.iter_batches(batch_size=None):
        pass
    complete = rd.complete_chunks(todo)
    missing = [c.key for c in todo if c.key not in complete]
    if missing:
        raise RuntimeError(f"chunks did not complete: {missing[:5]}")
    rd.set_stage("read_clean_filter", status="done")


def _stage_dedup(rd: RunDir, config) -> None:
    kept_parts = rd.kept_parts()
    parts = sorted(kept_parts)
    stage = rd.state["stages"].get("exact_dedup", {})
    if stage.get("status") == "done":
        return
    if "partitions" not in stage:
        kept_bytes = sum(kept_parts.values())
        partitions = max(1, math.ceil(kept_bytes / config["output"]["shard_bytes"]))
        rd.set_stage("exact_dedup", partitions=partitions, kept_bytes=int(kept_bytes))
        stage = rd.state["stages"]["exact_dedup"]
    partitions = stage["partitions"]
    done = sorted(rd.done_partitions())
    if parts and len(done) < partitions:
        ds = read_parquet_files(rd.uri_of(), parts)
        ds = ds.map_batches(_partition, fn_kwargs={"partitions": partitions, "skip": done},
                            batch_format="pyarrow", batch_size=None)
        reducers = max(1, min(partitions, int(ray.cluster_resources().get("CPU", 1))))
        ds = ds.groupby("partition", num_partitions=reducers).map_groups(
            _dedup_and_write,
            fn_kwargs={"run_uri": rd.uri_of(), "work_uri": rd.uri_of("_work"),
                       "dedup": config["dedup"]["exact"]["enabled"],
                       "shard_bytes": config["output"]["shard_bytes"],
                       "level": config["output"]["compression_level"]},
            batch_format="pyarrow",
        )
        for _ in ds.iter_batches(batch_size=None):
            pass
    rd.set_stage("exact_dedup", status="done")
    entries = [s for p in sorted(rd.done_partitions().values(), key=lambda d: d["shards"][0]["file"])
               for s in p["shards"]]
    write_json_atomic(rd.fs, join(rd.path, "documents", "_manifest.json"),
                      {"shards": entries, "rows": sum(e["rows"] for e in entries),
                       "text_bytes": sum(e["text_bytes"] for e in entries)})


