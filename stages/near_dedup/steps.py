"""Near-dedup's Ray steps. Each applies the batch functions of lsh, verify, components and
survivors to a Ray Dataset with the shuffle it needs, writes where it is told and returns its
figures. A part is a dict: `path` (a Parquet file of kept rows with their signatures), `chunk`,
`work` (the URI the lines removed before near-dedup are read from) and `reference` (a part of an
earlier run: its documents join buckets and clusters but are never removed); a node is a row of
a part, numbered by nodes.node_numbers over the parts' list, which must not change between steps.
"""

from __future__ import annotations

import math
import uuid
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from slimpipe.io.fs import join, list_files, resolve, write_parquet_atomic
from slimpipe.io.parts import removed_lines
from slimpipe.schemas import NEAR_COMPONENT, NEAR_MEMBER, REMOVED_LINES
from slimpipe.stages.datasource import read_own_files
from slimpipe.stages.minhash import MinHashParams
from slimpipe.stages.near_dedup.components import (
    both_ways,
    components,
    distinct_edges,
    distinct_members,
    edge_ends,
    keyed,
    large_star,
    normalised_edges,
    small_star,
    star_breaches,
    star_members,
)
from slimpipe.stages.near_dedup.lsh import band_rows, bucket_edges
from slimpipe.stages.near_dedup.nodes import node_numbers, part_of, row_of
from slimpipe.stages.near_dedup.survivors import choose_survivors
from slimpipe.stages.near_dedup.verify import attach_texts, verify

MAX_ROUNDS = 100  # large-star/small-star converge in O(log^2 n) rounds at worst, about log n in practice
MEMBER_COLUMNS = ["id", "source", "bytes_clean", "file", "line", "chunk", "minhash"]


class SurvivorOutputs(NamedTuple):
    """Where the survivors step writes (URIs of folders)."""

    duplicates: str  # duplicate rows (kind near), one file per shuffle partition
    clusters: str  # cluster rows, named as the duplicates' files
    prefix: str  # of those files' names, which the folders share with other stages' files
    removed_lines: str  # per chunk, the lines removed (CHUNK.parquet)


# --- per-block functions (run in Ray tasks) ---------------------------------------------------


def _bands_of_parts(batch: pa.Table, parts: list[dict], bands: int, rows: int, partitions: int) -> pa.Table:
    out = []
    for index in batch["part"].to_pylist():
        part = parts[index]
        fs, _ = resolve(part["work"])
        t = pq.read_table(part["path"], filesystem=fs, columns=["line", "minhash", "shingles"])
        live = pc.and_(
            pc.greater(t["shingles"], 0),
            pc.invert(pc.is_in(t["line"], removed_lines(fs, part["removed"], part["chunk"]))),
        )
        idx = np.flatnonzero(live.to_numpy(zero_copy_only=False))
        if len(idx):
            sigs = np.frombuffer(b"".join(t["minhash"].take(pa.array(idx)).to_pylist()), "<u4").reshape(len(idx), -1)
            out.append(band_rows(node_numbers(index, idx), sigs, bands, rows, partitions))
    return (
        pa.concat_tables(out)
        if out
        else band_rows(np.zeros(0, np.int64), np.zeros((0, bands * rows), np.uint32), bands, rows, partitions)
    )


def _edges_of_partition(rows: pa.Table, out_uri: str) -> pa.Table:
    edges = bucket_edges(rows)
    if edges.num_rows:  # no file for no edges: later shuffles then never see an empty block
        fs, out = resolve(out_uri)
        write_parquet_atomic(fs, join(out, f"part-{int(rows['partition'][0].as_py()):05d}.parquet"), edges)
    return pa.table({"edges": [edges.num_rows]})


def _with_part_of(batch: pa.Table, side: str) -> pa.Table:
    return batch.append_column("part", pa.array(part_of(batch[side].to_numpy()), pa.int64()))


def _texts_of_part(group: pa.Table, parts: list[dict], side: str) -> pa.Table:
    part = parts[int(group["part"][0].as_py())]
    fs, _ = resolve(part["work"])
    texts = pq.read_table(part["path"], filesystem=fs, columns=["text"])["text"]
    return attach_texts(group.drop_columns(["part"]), texts, side)


def _verify_part(group: pa.Table, parts: list[dict], params: MinHashParams, threshold: float, out_uri: str) -> pa.Table:
    """Edges whose v lies in one part: attach v's text, keep those that verify."""
    index = int(group["part"][0].as_py())
    verified = verify(_texts_of_part(group, parts, "v"), params, threshold)
    if verified.num_rows:
        fs, out = resolve(out_uri)
        write_parquet_atomic(fs, join(out, f"part-{index:08d}.parquet"), verified)
    return pa.table({"candidates": [group.num_rows], "verified": [verified.num_rows]})


def _parquet_files(uri: str) -> list[str]:
    fs, path = resolve(uri)
    return [i.path for i in list_files(fs, path) if i.base_name.endswith(".parquet")]


@ray.remote(num_cpus=1)
def _components_task(edges_uri: str, out_uri: str) -> dict:
    fs, _ = resolve(edges_uri)
    tables = [pq.read_table(f, filesystem=fs, columns=["u", "v"]) for f in _parquet_files(edges_uri)]
    u = np.concatenate([t["u"].to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)
    v = np.concatenate([t["v"].to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)
    nodes, comp = components(u, v)
    fs, out = resolve(out_uri)
    write_parquet_atomic(
        fs, join(out, "part-00000.parquet"), pa.table({"node": nodes, "component": comp}, schema=NEAR_COMPONENT)
    )
    return {"edges": len(u), "nodes": len(nodes), "components": int(len(np.unique(comp))), "rounds": 0}


def _batches(ds, fn, **kwargs) -> ray.data.Dataset:
    return ds.map_batches(fn, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=None)


def _shuffled(ds: ray.data.Dataset, column: str, fn, partitions: int) -> ray.data.Dataset:
    """`fn` over each partition of the rows keyed on `column` (all rows of a key in one call)."""
    ds = _batches(ds, keyed, column=column, partitions=partitions)
    return ds.groupby("partition", num_partitions=partitions).map_groups(
        lambda rows: fn(rows.drop_columns(["partition"])), batch_format="pyarrow"
    )


def _write_block(block: pa.Table, out_uri: str) -> pa.Table:
    if block.num_rows:
        fs, out = resolve(out_uri)
        write_parquet_atomic(fs, join(out, f"part-{uuid.uuid4().hex}.parquet"), block)
    return pa.table({"rows": [block.num_rows]})


def _stored(ds: ray.data.Dataset, uri: str) -> tuple[ray.data.Dataset, int]:
    """Write a dataset's blocks under `uri` and read them back (each round starts from files, not
    lineage); and its rows. Our own reader: Ray's Parquet reader resizes pyarrow's thread pools
    in the driver, which breaks pyarrow's group_by there later."""
    rows = sum(r["rows"] for r in _consume(_batches(ds, _write_block, out_uri=uri)))
    return read_own_files(uri, _parquet_files(uri)), rows


def _components_in_rounds(edges_uri: str, out_uri: str, rounds_uri: str, partitions: int) -> dict:
    fs, rounds_path = resolve(rounds_uri)
    fs.delete_dir_contents(rounds_path, missing_dir_ok=True)  # what a killed attempt left
    edges = _batches(read_own_files(edges_uri, _parquet_files(edges_uri), ["u", "v"]), normalised_edges)
    edges, total = _stored(_shuffled(edges, "hi", distinct_edges, partitions), join(rounds_uri, "0"))
    rounds = 0
    while True:
        rounds += 1
        edges = _shuffled(_batches(edges, both_ways), "u", large_star, partitions)
        edges = _shuffled(edges, "hi", small_star, partitions)  # large-star's output, keyed on hi
        edges = _shuffled(edges, "hi", distinct_edges, partitions)
        edges, count = _stored(edges, join(rounds_uri, str(rounds)))
        fs.delete_dir(join(rounds_path, str(rounds - 1)))
        breaches = _shuffled(_batches(edges, edge_ends), "node", star_breaches, partitions)
        if not sum(r["breaches"] for r in _consume(breaches)):
            break
        if rounds >= MAX_ROUNDS:
            raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
    _, nodes = _stored(_shuffled(_batches(edges, star_members), "node", distinct_members, partitions), out_uri)
    fs.delete_dir(rounds_path)
    # at the fixed point every node but a root has one edge
    return {"edges": total, "nodes": nodes, "components": nodes - count, "rounds": rounds}


def _members_of_part(group: pa.Table, parts: list[dict], partitions: int) -> pa.Table:
    part = parts[int(group["part"][0].as_py())]
    fs, _ = resolve(part["work"])
    t = pq.read_table(part["path"], filesystem=fs, columns=MEMBER_COLUMNS)
    t = t.take(pa.array(row_of(group["node"].to_numpy())))
    comp = group["component"].to_numpy()
    return pa.table(
        {
            "id": t["id"],
            "source": t["source"],
            "bytes": t["bytes_clean"],
            "file": t["file"],
            "line": t["line"],
            "chunk": t["chunk"],
            "minhash": t["minhash"],
            "node": group["node"],
            "component": group["component"],
            "reference": np.full(len(comp), part["reference"]),
            "partition": comp % partitions,
        },
        schema=NEAR_MEMBER,
    )


def _survivors_of_partition(
    members: pa.Table, policy: str, priority: list[str], out: SurvivorOutputs, level: int
) -> pa.Table:
    dups, clusters = choose_survivors(members.drop_columns(["partition"]), policy, priority)
    name = f"{out.prefix}{int(members['partition'][0].as_py()):05d}.parquet"
    if dups.num_rows:
        fs, path = resolve(out.duplicates)
        write_parquet_atomic(fs, join(path, name), dups.drop_columns(["chunk"]), level)
    fs, path = resolve(out.clusters)
    write_parquet_atomic(fs, join(path, name), clusters, level)
    return dups.select(["chunk", "line"])


def _write_removed_lines(lines: pa.Table, out_uri: str) -> pa.Table:
    chunk = lines["chunk"][0].as_py()
    fs, out = resolve(out_uri)
    write_parquet_atomic(
        fs, join(out, f"{chunk}.parquet"), pa.table({"line": lines["line"]}, schema=REMOVED_LINES).sort_by("line")
    )
    return pa.table({"chunk": [chunk]})


def _consume(ds) -> list[dict]:
    return [row for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow") for row in batch.to_pylist()]


# --- the steps ------------------------------------------------------------------------------


def find_candidate_edges(parts: list[dict], banding: dict, docs: int, reducers: int, edges_uri: str) -> dict:
    """LSH: the band rows of every live signature of the parts (`docs` documents in all), a
    shuffle on the bucket, and per bucket an edge from each member to its representative, written
    under `edges_uri`."""
    # about 5 million bucket rows (100 MB) per shuffle partition
    partitions = max(1, math.ceil(docs * banding["bands"] / 5_000_000))
    if not parts:
        return {"partitions": 0, "candidate_edges": 0}
    ds = ray.data.from_items(
        [{"part": i} for i in range(len(parts))], override_num_blocks=max(1, min(len(parts), 4 * reducers))
    )
    ds = ds.map_batches(
        _bands_of_parts,
        fn_kwargs={"parts": parts, "bands": banding["bands"], "rows": banding["rows"], "partitions": partitions},
        batch_format="pyarrow",
        batch_size=1,
    )
    ds = ds.groupby("partition", num_partitions=min(partitions, reducers)).map_groups(
        _edges_of_partition, fn_kwargs={"out_uri": edges_uri}, batch_format="pyarrow"
    )
    return {"partitions": partitions, "candidate_edges": sum(r["edges"] for r in _consume(ds))}


def verify_edges(
    parts: list[dict], params: MinHashParams, threshold: float, reducers: int, edges_uri: str, verified_uri: str
) -> dict:
    """The candidate edges under `edges_uri` whose true Jaccard reaches the threshold, written
    under `verified_uri`: a shuffle on u's part attaches u's text, one on v's part v's text and
    verifies."""
    files = _parquet_files(edges_uri)
    if not files:
        return {"candidates": 0, "verified": 0}
    ds = read_own_files(edges_uri, files, columns=["u", "v"])
    ds = ds.map_batches(_with_part_of, fn_kwargs={"side": "u"}, batch_format="pyarrow", batch_size=None)
    ds = ds.groupby("part", num_partitions=reducers).map_groups(
        _texts_of_part, fn_kwargs={"parts": parts, "side": "u"}, batch_format="pyarrow"
    )
    ds = ds.map_batches(_with_part_of, fn_kwargs={"side": "v"}, batch_format="pyarrow", batch_size=None)
    ds = ds.groupby("part", num_partitions=reducers).map_groups(
        _verify_part,
        fn_kwargs={"parts": parts, "params": params, "threshold": threshold, "out_uri": verified_uri},
        batch_format="pyarrow",
    )
    rows = _consume(ds)
    return {"candidates": sum(r["candidates"] for r in rows), "verified": sum(r["verified"] for r in rows)}


def find_components(edges_uri: str, edges: int, components_uri: str, task_edges: int, rounds_uri: str) -> dict:
    """Connected components of the `edges` edges under `edges_uri`, as (node, component) files
    under `components_uri`, a component named by its lowest node. At most `task_edges` edges: in
    one task (compact integer arrays: see components.components). More: in rounds of large-star
    and small-star over Ray Data in partitions of about `task_edges` edges, each round's edges
    kept under `rounds_uri`, so that no task holds all edges or all nodes."""
    if edges <= task_edges:
        return ray.get(_components_task.remote(edges_uri, components_uri))
    return _components_in_rounds(edges_uri, components_uri, rounds_uri, math.ceil(edges / task_edges))


def write_survivors(
    parts: list[dict],
    components_uri: str,
    nodes: int,
    policy: str,
    priority: list[str],
    reducers: int,
    out: SurvivorOutputs,
    level: int,
) -> dict:
    """One survivor per component of the `nodes` nodes in `components_uri`, by `policy`: a
    shuffle on the part attaches each member's id, source, bytes and signature, one on the
    component chooses survivors and writes duplicate and cluster rows, one on the chunk writes
    the lines removed."""
    if not nodes:
        return {"partitions": 0}
    partitions = max(1, math.ceil(nodes / 1_000_000))
    ds = read_own_files(components_uri, _parquet_files(components_uri))
    ds = ds.map_batches(_with_part_of, fn_kwargs={"side": "node"}, batch_format="pyarrow", batch_size=None)
    ds = ds.groupby("part", num_partitions=reducers).map_groups(
        _members_of_part, fn_kwargs={"parts": parts, "partitions": partitions}, batch_format="pyarrow"
    )
    ds = ds.groupby("partition", num_partitions=min(partitions, reducers)).map_groups(
        _survivors_of_partition,
        fn_kwargs={"policy": policy, "priority": priority, "out": out, "level": level},
        batch_format="pyarrow",
    )
    ds = ds.groupby("chunk", num_partitions=reducers).map_groups(
        _write_removed_lines, fn_kwargs={"out_uri": out.removed_lines}, batch_format="pyarrow"
    )
    _consume(ds)
    return {"partitions": partitions}
