"""Which shuffle the stages use (ray.shuffle): exact dedup's own shuffle (a narrow index of 16-byte
text hashes, ids and positions, 10% of rows copies, keyed on the hash, grouped into partitions
of ray.partition_rows rows, each partition's duplicates found) under each of Ray Data's
strategies, and as hash-partitioned files (`files`: each map task writes one Parquet file with a
row group per partition, each reducer reads its row group of every file), at two sizes, in one
Ray session on every core: wall time, the tasks run and the peak of objects alive at once
(sampled from Ray's state API every 0.5 s).

    python bench/shuffle_bench.py [--rows 1000000 4000000] [--partition-rows 250000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.util.state import list_objects, list_tasks

from slimpipe.stages.exact_dedup import INDEX_ROW_BYTES, add_partition, find_duplicates
from slimpipe.stages.shuffle import STRATEGIES, Shuffle

BLOCK_ROWS = 50_000


def index_block(batch: dict) -> pa.Table:
    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]))
    # every tenth row repeats the text of the row nine before it
    text = np.where(ids % 10 == 9, ids - 9, ids).astype(np.uint64)
    hashes = np.stack([text * np.uint64(0x9E3779B97F4A7C15), text], axis=1).astype("<u8")
    return pa.table(
        {
            "id": pa.array([f"doc-{i}" for i in ids]),
            "source": pa.array(["crawl"] * len(ids)),
            "file": pa.array([f"part-{i // 100_000:05d}.jsonl.zst" for i in ids]),
            "line": pa.array(ids % 100_000, pa.int64()),
            "chunk": pa.array([f"c{i // 100_000:05d}" for i in ids]),
            "bytes_clean": pa.array(rng.integers(200, 5000, len(ids)), pa.int64()),
            "text_hash": pa.array([h.tobytes() for h in hashes], pa.binary(16)),
        }
    )


def duplicates_count(index: pa.Table) -> pa.Table:
    return pa.table({"duplicates": [find_duplicates(index.drop_columns(["partition"])).num_rows]})


def write_partitioned(block: pa.Table, folder: str, partitions: int) -> pa.Table:
    """A map block as one file, a row group per partition (empty ones too, so row group i is
    partition i)."""
    block = block.sort_by("partition")
    part = block["partition"].to_numpy()
    path = f"{folder}/{uuid.uuid4().hex}.parquet"
    with pq.ParquetWriter(path, block.schema) as w:
        for p in range(partitions):
            lo, hi = np.searchsorted(part, p), np.searchsorted(part, p, side="right")
            w.write_table(block.slice(lo, hi - lo), row_group_size=max(1, hi - lo))
    return pa.table({"path": [path]})


def reduce_partition(batch: pa.Table, files: list[str]) -> pa.Table:
    p = int(batch["partition"][0].as_py())
    index = pa.concat_tables([pq.ParquetFile(f).read_row_group(p) for f in files])
    return duplicates_count(index)


def files_shuffle(ds: ray.data.Dataset, partitions: int, folder: str) -> ray.data.Dataset:
    """The map side runs here (its files listed), the reduce side when the result is read."""
    kwargs = {"folder": folder, "partitions": partitions}
    written = ds.map_batches(write_partitioned, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=None)
    files = [r["path"] for b in written.iter_batches(batch_size=None, batch_format="pyarrow") for r in b.to_pylist()]
    reducers = ray.data.from_items([{"partition": p} for p in range(partitions)], override_num_blocks=partitions)
    return reducers.map_batches(reduce_partition, fn_kwargs={"files": files}, batch_format="pyarrow", batch_size=1)


def one(rows: int, strategy: str, partition_rows: int) -> dict:
    shuffle = Shuffle(partition_rows, 1 << 40, 4 << 30, "sort" if strategy == "files" else strategy)
    partitions = shuffle.partitions(rows, INDEX_ROW_BYTES)
    ds = ray.data.range(rows, override_num_blocks=rows // BLOCK_ROWS).map_batches(index_block, batch_format="numpy")
    ds = ds.map_batches(add_partition, fn_kwargs={"partitions": partitions}, batch_format="pyarrow", batch_size=None)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], len(list_objects(limit=1_000_000, raise_on_missing_output=False)))
            except Exception:  # the state API may time out under load: a missed sample
                pass
            done.wait(0.5)

    before = {t.task_id for t in list_tasks(limit=1_000_000, raise_on_missing_output=False)}
    sampler = threading.Thread(target=sample, daemon=True)
    t = time.perf_counter()
    sampler.start()
    if strategy == "files":
        ds = files_shuffle(ds, partitions, tempfile.mkdtemp(dir="/tmp"))
    else:
        ds = shuffle.group(ds, "partition", duplicates_count, rows, INDEX_ROW_BYTES, partitions)
    dups = sum(b["duplicates"].sum() for b in ds.iter_batches(batch_size=None, batch_format="numpy"))
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    tasks = [t for t in list_tasks(limit=1_000_000, raise_on_missing_output=False) if t.task_id not in before]
    assert dups == rows // 10, dups  # every planted copy found, whatever the strategy
    return {
        "rows": rows,
        "strategy": strategy,
        "partitions": partitions,
        "map_blocks": rows // BLOCK_ROWS,
        "wall_s": round(wall, 2),
        "tasks": len(tasks),
        "tasks_by_name": dict(Counter(t.name.split("(")[0] for t in tasks).most_common(6)),
        "peak_objects_alive": peak[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--partition-rows", type=int, default=250_000)
    ap.add_argument("--strategies", nargs="+", default=[*STRATEGIES, "files"])
    args = ap.parse_args()
    os.environ.setdefault("RAY_MAX_LIMIT_FROM_API_SERVER", "2000000")  # the state API lists every object
    ray.init(include_dashboard=True, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = []
    for rows in args.rows:
        one(rows // 4, "sort", args.partition_rows)  # warm-up: workers started, imports done
        for strategy in args.strategies:
            r = one(rows, strategy, args.partition_rows)
            print(json.dumps(r), flush=True)
            results.append(r)
    print(f"\n{'rows':>9} {'strategy':>10} {'parts':>6} {'blocks':>6} {'wall s':>7} {'tasks':>6} {'objects':>8}")
    for r in results:
        print(
            f"{r['rows']:>9} {r['strategy']:>10} {r['partitions']:>6} {r['map_blocks']:>6} "
            f"{r['wall_s']:>7.2f} {r['tasks']:>6} {r['peak_objects_alive']:>8}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
