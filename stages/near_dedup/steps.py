"""Near-dedup's Ray steps. Each applies the batch functions of lsh, verify, components and
survivors to a Ray Dataset with the shuffle it needs, writes where it is told and returns its
figures. A part is a dict: `path` (a Parquet file of kept rows with their signatures), `chunk`,
`work` (the URI the lines removed before near-dedup are read from) and `reference` (a part of an
earlier run: its documents join buckets and clusters but are never removed); a node is a row of
a part, numbered by nodes.node_numbers over the parts' list, which must not change between steps.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from slimpipe.io.fs import join, parquet_files, resolve, write_parquet_atomic
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
    partition_of,
    small_star,
    star_breaches,
    star_members,
)
from slimpipe.stages.near_dedup.lsh import band_rows, bucket_edges
from slimpipe.stages.near_dedup.nodes import node_numbers, part_of, row_of
from slimpipe.stages.near_dedup.survivors import component_partials, component_survivors, duplicates_of
from slimpipe.stages.near_dedup.verify import requests, texts_of, verify
from slimpipe.stages.shuffle import Shuffle

MAX_ROUNDS = 100  # large-star/small-star converge in O(log^2 n) rounds at worst, about log n in practice
MEMBER_COLUMNS = ["id", "source", "bytes_clean", "file", "line", "chunk", "minhash"]
# Rows in Arrow at each shuffle, which partitions and the memory tasks declare are sized from
BAND_ROW_BYTES = 32  # (band, key, node, partition)
EDGE_ROW_BYTES = 24  # (hi, lo, partition); a request (node, partition, part) likewise
MEMBER_ROW_BYTES = 1024  # ids, source, file, chunk, line, bytes, node, component and a signature (128 x 4 bytes)
LINE_ROW_BYTES = 40  # a (chunk, line) row


class SurvivorOutputs(NamedTuple):
    """Where the survivors step writes (URIs of folders)."""

    duplicates: str  # duplicate rows (kind near), one file per shuffle partition
    clusters: str  # cluster rows, named as the duplicates' files
    prefix: str  # of those files' names, which the folders share with other stages' files
    removed_lines: str  # per chunk, the lines removed (CHUNK.parquet)
    members: str  # work folder: each partition's members, between choosing and naming survivors


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


def _partition_file(uri: str, partition: int) -> tuple:
    fs, path = resolve(uri)
    return fs, join(path, f"part-{partition:05d}.parquet")


def _edges_of_partition(rows: pa.Table, out_uri: str) -> pa.Table:
    edges = bucket_edges(rows)
    if edges.num_rows:  # no file for no edges: later shuffles then never see an empty block
        write_parquet_atomic(*_partition_file(out_uri, int(rows["partition"][0].as_py())), edges)
    return pa.table({"edges": [edges.num_rows]})


def _with_part_of(batch: pa.Table, side: str) -> pa.Table:
    return batch.append_column("part", pa.array(part_of(batch[side].to_numpy()), pa.int64()))


def _unique_edges_of_partition(rows: pa.Table, out_uri: str) -> pa.Table:
    """A partition of the candidate edges (keyed on hi, so all copies of an edge are here): each
    once, kept in a file for verification; out go the texts the partition needs."""
    partition = int(rows["partition"][0].as_py())
    edges = distinct_edges(rows)
    write_parquet_atomic(*_partition_file(out_uri, partition), edges)
    return requests(edges, partition)


def _texts_of_part(wanted: pa.Table, parts: list[dict]) -> pa.Table:
    part = parts[int(wanted["part"][0].as_py())]
    fs, _ = resolve(part["work"])
    return texts_of(wanted, pq.read_table(part["path"], filesystem=fs, columns=["text"])["text"])


def _verify_partition(
    texts: pa.Table, params: MinHashParams, threshold: float, edges_uri: str, out_uri: str
) -> pa.Table:
    """A partition's unique edges (from its file) and its nodes' texts: the edges that verify."""
    partition = int(texts["partition"][0].as_py())
    fs, path = _partition_file(edges_uri, partition)
    edges = pq.read_table(path, filesystem=fs)
    verified = verify(edges, texts, params, threshold)
    if verified.num_rows:
        write_parquet_atomic(*_partition_file(out_uri, partition), verified)
    return pa.table({"candidates": [edges.num_rows], "verified": [verified.num_rows]})


def _parquet_files(uri: str) -> list[str]:
    return parquet_files(*resolve(uri))


def _clear(uri: str) -> None:
    """Empty a work folder (what a killed attempt left)."""
    fs, path = resolve(uri)
    fs.delete_dir_contents(path, missing_dir_ok=True)


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


def _shuffled(ds: ray.data.Dataset, column: str, fn, shuffle: Shuffle, rows: int) -> ray.data.Dataset:
    """`fn` over each partition of the `rows` edge rows keyed on `column` (all rows of a key in one call)."""
    partitions = shuffle.partitions(rows, EDGE_ROW_BYTES)
    ds = _batches(ds, keyed, column=column, partitions=partitions)
    return shuffle.group(ds, "partition", _without_partition, rows, EDGE_ROW_BYTES, partitions, step=fn)


def _without_partition(rows: pa.Table, step) -> pa.Table:
    return step(rows.drop_columns(["partition"]))


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


def _components_in_rounds(edges_uri: str, edges: int, out_uri: str, rounds_uri: str, shuffle: Shuffle) -> dict:
    fs, rounds_path = resolve(rounds_uri)
    _clear(rounds_uri)
    ds = _batches(read_own_files(edges_uri, _parquet_files(edges_uri), ["u", "v"]), normalised_edges)
    ds, total = _stored(_shuffled(ds, "hi", distinct_edges, shuffle, edges), join(rounds_uri, "0"))
    rounds, count = 0, total
    while True:
        rounds += 1
        ds = _shuffled(_batches(ds, both_ways), "u", large_star, shuffle, 2 * count)
        ds = _shuffled(ds, "hi", small_star, shuffle, 2 * count)  # large-star's output, keyed on hi
        ds = _shuffled(ds, "hi", distinct_edges, shuffle, 2 * count)
        ds, count = _stored(ds, join(rounds_uri, str(rounds)))
        fs.delete_dir(join(rounds_path, str(rounds - 1)))
        breaches = _shuffled(_batches(ds, edge_ends), "node", star_breaches, shuffle, 2 * count)
        if not sum(r["breaches"] for r in _consume(breaches)):
            break
        if rounds >= MAX_ROUNDS:
            raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
    members = _shuffled(_batches(ds, star_members), "node", distinct_members, shuffle, 2 * count)
    _, nodes = _stored(members, out_uri)
    fs.delete_dir(rounds_path)
    # at the fixed point every node but a root has one edge
    return {"edges": total, "nodes": nodes, "components": nodes - count, "rounds": rounds}


def _members_of_part(group: pa.Table, parts: list[dict], member_partitions: int) -> pa.Table:
    """Members of one part, with what the policy and the duplicate rows need, keyed on the node."""
    part = parts[int(group["part"][0].as_py())]
    fs, _ = resolve(part["work"])
    t = pq.read_table(part["path"], filesystem=fs, columns=MEMBER_COLUMNS)
    t = t.take(pa.array(row_of(group["node"].to_numpy())))
    node = group["node"].to_numpy()
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
            "reference": np.full(len(node), part["reference"]),
            "partition": partition_of(node, member_partitions),
        },
        schema=NEAR_MEMBER,
    )


def _partials_of_partition(members: pa.Table, policy: str, priority: list[str], members_uri: str) -> pa.Table:
    """Keep a partition's members for the last pass; out go its best and counts per component,
    keyed on the component."""
    partition = int(members["partition"][0].as_py())
    members = members.drop_columns(["partition"])
    write_parquet_atomic(*_partition_file(members_uri, partition), members)
    return component_partials(members, policy, priority, partition)


def _survivors_of_components(
    partials: pa.Table, policy: str, priority: list[str], out: SurvivorOutputs, level: int
) -> pa.Table:
    """A partition of the components: their cluster rows; out go their survivors, keyed on each
    partition of members they have."""
    partition = int(partials["partition"][0].as_py())
    clusters, survivors = component_survivors(partials.drop_columns(["partition"]), policy, priority)
    fs, path = resolve(out.clusters)
    write_parquet_atomic(fs, join(path, f"{out.prefix}{partition:05d}.parquet"), clusters, level)
    return survivors


def _duplicates_of_partition(survivors: pa.Table, out: SurvivorOutputs, level: int) -> pa.Table:
    """A partition's members against their survivors: its duplicate rows; out go their lines."""
    partition = int(survivors["partition"][0].as_py())
    fs, path = _partition_file(out.members, partition)
    dups = duplicates_of(pq.read_table(path, filesystem=fs), survivors)
    if dups.num_rows:
        fs, path = resolve(out.duplicates)
        write_parquet_atomic(
            fs, join(path, f"{out.prefix}{partition:05d}.parquet"), dups.drop_columns(["chunk"]), level
        )
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


def find_candidate_edges(parts: list[dict], banding: dict, docs: int, shuffle: Shuffle, edges_uri: str) -> dict:
    """LSH: the band rows of every live signature of the parts (`docs` documents in all), a
    shuffle on the bucket, and per bucket an edge from each member to its representative, written
    under `edges_uri`."""
    if not parts:
        return {"partitions": 0, "candidate_edges": 0}
    rows = docs * banding["bands"]
    partitions = shuffle.partitions(rows, BAND_ROW_BYTES)
    ds = ray.data.from_items([{"part": i} for i in range(len(parts))], override_num_blocks=len(parts))
    ds = ds.map_batches(
        _bands_of_parts,
        fn_kwargs={"parts": parts, "bands": banding["bands"], "rows": banding["rows"], "partitions": partitions},
        batch_format="pyarrow",
        batch_size=1,
    )
    ds = shuffle.group(ds, "partition", _edges_of_partition, rows, BAND_ROW_BYTES, partitions, out_uri=edges_uri)
    return {"partitions": partitions, "candidate_edges": sum(r["edges"] for r in _consume(ds))}


def verify_edges(
    parts: list[dict],
    params: MinHashParams,
    threshold: float,
    candidates: int,
    text_bytes: int,
    shuffle: Shuffle,
    edges_uri: str,
    unique_uri: str,
    verified_uri: str,
) -> dict:
    """The `candidates` candidate edges under `edges_uri` (copies included) whose true Jaccard
    reaches the threshold, written under `verified_uri`: a shuffle on hi makes them unique (kept
    under `unique_uri` by partition), one on the part reads the texts each partition asks for
    (documents of about `text_bytes`), one on the partition verifies its edges with them."""
    files = _parquet_files(edges_uri)
    if not files:
        return {"partitions": 0, "candidates": 0, "verified": 0}
    _clear(unique_uri)
    # a partition holds its edges and the texts of their ends
    partitions = shuffle.partitions(candidates, EDGE_ROW_BYTES + 2 * text_bytes)
    ds = _batches(read_own_files(edges_uri, files, columns=["u", "v"]), normalised_edges)
    ds = _batches(ds, keyed, column="hi", partitions=partitions)
    ds = shuffle.group(
        ds, "partition", _unique_edges_of_partition, candidates, EDGE_ROW_BYTES, partitions, out_uri=unique_uri
    )
    ds = _batches(ds, _with_part_of, side="node")
    ds = shuffle.group(ds, "part", _texts_of_part, 2 * candidates, EDGE_ROW_BYTES + text_bytes, parts=parts)
    ds = shuffle.group(
        ds,
        "partition",
        _verify_partition,
        2 * candidates,
        EDGE_ROW_BYTES + text_bytes,
        partitions,
        params=params,
        threshold=threshold,
        edges_uri=unique_uri,
        out_uri=verified_uri,
    )
    rows = _consume(ds)
    _clear(unique_uri)
    return {
        "partitions": partitions,
        "candidates": sum(r["candidates"] for r in rows),
        "verified": sum(r["verified"] for r in rows),
    }


def find_components(
    edges_uri: str, edges: int, components_uri: str, task_edges: int, rounds_uri: str, shuffle: Shuffle
) -> dict:
    """Connected components of the `edges` edges under `edges_uri`, as (node, component) files
    under `components_uri`, a component named by its lowest node. At most `task_edges` edges: in
    one task (compact integer arrays: see components.components). More: in rounds of large-star
    and small-star over Ray Data, each round's edges kept under `rounds_uri`, so that no task
    holds more than its shuffle partition."""
    if edges <= task_edges:
        return ray.get(_components_task.remote(edges_uri, components_uri))
    return _components_in_rounds(edges_uri, edges, components_uri, rounds_uri, shuffle)


def write_survivors(
    parts: list[dict],
    components_uri: str,
    nodes: int,
    policy: str,
    priority: list[str],
    shuffle: Shuffle,
    out: SurvivorOutputs,
    level: int,
) -> dict:
    """One survivor per component of the `nodes` nodes in `components_uri`, by `policy`, a
    component's members spread over partitions by node: a shuffle on the part attaches each
    member's id, source, bytes and signature; one on the member partition keeps the members and
    finds each component's best there; one on the component chooses among those and writes the
    cluster rows; one on the member partition again writes the duplicate rows; one on the chunk
    the lines removed."""
    if not nodes:
        return {"partitions": 0}
    _clear(out.members)
    partitions = shuffle.partitions(nodes, MEMBER_ROW_BYTES)
    ds = read_own_files(components_uri, _parquet_files(components_uri))
    ds = _batches(ds, _with_part_of, side="node")
    ds = shuffle.group(ds, "part", _members_of_part, nodes, MEMBER_ROW_BYTES, parts=parts, member_partitions=partitions)
    ds = shuffle.group(
        ds,
        "partition",
        _partials_of_partition,
        nodes,
        MEMBER_ROW_BYTES,
        partitions,
        policy=policy,
        priority=priority,
        members_uri=out.members,
    )
    ds = _batches(ds, keyed, column="component", partitions=partitions)
    ds = shuffle.group(
        ds,
        "partition",
        _survivors_of_components,
        nodes,
        MEMBER_ROW_BYTES,
        partitions,
        policy=policy,
        priority=priority,
        out=out,
        level=level,
    )
    ds = shuffle.group(
        ds, "partition", _duplicates_of_partition, nodes, MEMBER_ROW_BYTES, partitions, out=out, level=level
    )
    ds = shuffle.group(ds, "chunk", _write_removed_lines, nodes, LINE_ROW_BYTES, out_uri=out.removed_lines)
    _consume(ds)
    _clear(out.members)
    return {"partitions": partitions}
