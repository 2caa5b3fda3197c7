"""Runs MinHash near-dedup on Ray over the signatures the filter stage stored in the parts:

    parts -> (band, bucket key, node) rows -> shuffle on the bucket -> edges to representatives
    edges -> shuffle on u's part (attach u's text) -> shuffle on v's part (true Jaccard) -> verified
    edges -> union-find on integer arrays (one task) -> (node, component)
    components -> shuffle on the part (attach id, source, bytes, signature) -> shuffle on the
        component (survivor policy) -> duplicates (kind near), clusters, lines to leave out

Every step writes its output under _work/near/ (or the run's outputs) and is recorded in
run.json when complete, so a killed run resumes at the first unfinished step. Earlier runs named
in `dedup.near.against` join with their stored signatures (nothing is recomputed); their
documents take part in buckets and clusters but are never removed.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from slimpipe.errors import ConfigError
from slimpipe.rundir import RunDir
from slimpipe.stages.lsh import band_rows, bucket_edges, resolve_bands
from slimpipe.stages.minhash import MinHashParams
from slimpipe.stages.near_dedup import (attach_texts, choose_survivors, components, node_numbers, part_of,
                                        row_of, verify)
from slimpipe.stages.write import removed_lines
from slimpipe.io.fs import exists, join, list_files, read_json, resolve, write_json_atomic, write_parquet_atomic
from slimpipe.stages.datasource import read_own_files

STEPS = ("lsh", "verify", "components", "survivors")
MEMBER_COLUMNS = ["id", "source", "bytes_clean", "file", "line", "chunk", "minhash"]


# --- per-block functions (run in Ray tasks) ---------------------------------------------------


def _bands_of_parts(batch: pa.Table, parts: list[dict], bands: int, rows: int, partitions: int) -> pa.Table:
    out = []
    for index in batch["part"].to_pylist():
        part = parts[index]
        fs, work = resolve(part["work"])
        t = pq.read_table(part["path"], filesystem=fs, columns=["line", "minhash", "shingles"])
        live = pc.and_(pc.greater(t["shingles"], 0),
                       pc.invert(pc.is_in(t["line"], removed_lines(fs, work, part["chunk"]))))
        idx = np.flatnonzero(live.to_numpy(zero_copy_only=False))
        if len(idx):
            sigs = np.frombuffer(b"".join(t["minhash"].take(pa.array(idx)).to_pylist()), "<u4").reshape(len(idx), -1)
            out.append(band_rows(node_numbers(index, idx), sigs, bands, rows, partitions))
    return pa.concat_tables(out) if out else band_rows(np.zeros(0, np.int64), np.zeros((0, bands * rows), np.uint32),
                                                       bands, rows, partitions)


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


def _verify_part(group: pa.Table, parts: list[dict], near: dict, threshold: float, out_uri: str) -> pa.Table:
    """Edges whose v lies in one part: attach v's text, keep those that verify."""
    index = int(group["part"][0].as_py())
    verified = verify(_texts_of_part(group, parts, "v"), MinHashParams.from_config(near), threshold)
    if verified.num_rows:
        fs, out = resolve(out_uri)
        write_parquet_atomic(fs, join(out, f"part-{index:08d}.parquet"), verified)
    return pa.table({"candidates": [group.num_rows], "verified": [verified.num_rows]})


@ray.remote(num_cpus=1)
def _components_task(edge_uri: str, out_uri: str) -> dict:
    fs, edge_dir = resolve(edge_uri)
    files = [i.path for i in list_files(fs, edge_dir) if i.base_name.endswith(".parquet")]
    tables = [pq.read_table(f, filesystem=fs, columns=["u", "v"]) for f in files]
    u = np.concatenate([t["u"].to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)
    v = np.concatenate([t["v"].to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)
    nodes, comp = components(u, v)
    fs, out = resolve(out_uri)
    write_parquet_atomic(fs, out, pa.table({"node": nodes, "component": comp}))
    return {"edges": len(u), "nodes": len(nodes), "components": int(len(np.unique(comp)))}


def _members_of_part(group: pa.Table, parts: list[dict], partitions: int) -> pa.Table:
    part = parts[int(group["part"][0].as_py())]
    fs, _ = resolve(part["work"])
    t = pq.read_table(part["path"], filesystem=fs, columns=MEMBER_COLUMNS)
    members = t.take(pa.array(row_of(group["node"].to_numpy()))).rename_columns(
        ["id", "source", "bytes", "file", "line", "chunk", "minhash"])
    comp = group["component"].to_numpy()
    return (members.append_column("node", group["node"]).append_column("component", group["component"])
            .append_column("reference", pa.array(np.full(len(comp), part["reference"]), pa.bool_()))
            .append_column("partition", pa.array(comp % partitions, pa.int64())))


def _survivors_of_partition(members: pa.Table, policy: str, priority: list[str], run_uri: str,
                            level: int) -> pa.Table:
    dups, clusters = choose_survivors(members.drop_columns(["partition"]), policy, priority)
    fs, run = resolve(run_uri)
    name = f"near-{int(members['partition'][0].as_py()):05d}.parquet"
    if dups.num_rows:
        write_parquet_atomic(fs, join(run, "duplicates", name), dups.drop_columns(["chunk"]), level)
    write_parquet_atomic(fs, join(run, "clusters", name), clusters, level)
    return dups.select(["chunk", "line"])


def _write_near_dupset(lines: pa.Table, work_uri: str) -> pa.Table:
    chunk = lines["chunk"][0].as_py()
    fs, work = resolve(work_uri)
    write_parquet_atomic(fs, join(work, "near_dupsets", f"{chunk}.parquet"), lines.select(["line"]).sort_by("line"))
    return pa.table({"chunk": [chunk]})


# --- the stage ------------------------------------------------------------------------------


def _run_parts(rd: RunDir, chunks) -> list[dict]:
    return [{"path": path, "chunk": chunk, "work": rd.uri_of("_work"), "reference": False}
            for chunk, path, _ in rd.in_input_order(rd.kept_parts(), chunks)]


def reference_parts(against: list[str], near: dict) -> list[dict]:
    """The parts of earlier runs, whose signatures must have been made the same way."""
    mine = MinHashParams.from_config(near)
    out = []
    for uri in against:
        ref = RunDir(uri)
        if not exists(ref.fs, join(ref.path, "run.json")):
            raise ConfigError(f"dedup.near.against: {uri} is not a slimpipe run directory")
        state = read_json(ref.fs, join(ref.path, "run.json"))
        if state.get("status") != "done":
            raise ConfigError(f"dedup.near.against: {uri} has not finished")
        ref_near = state["config"]["dedup"].get("near", {})
        if not ref_near.get("enabled") or MinHashParams.from_config(ref_near) != mine:
            raise ConfigError(f"dedup.near.against: {uri} has no signatures made with these MinHash "
                              "settings (shingle, ngram, num_perm, seed, hash, scheme, short_docs)")
        chunks = ref.load_plan() or []
        out += [{"path": path, "chunk": chunk, "work": ref.uri_of("_work"), "reference": True}
                for chunk, path, _ in ref.in_input_order(ref.kept_parts(), chunks)]
    return out


def banding_of(near: dict) -> dict:
    """The run's banding; a banding the settings cannot give is a config error (checked before Ray)."""
    try:
        return resolve_bands(near)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _consume(ds) -> list[dict]:
    return [row for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow")
            for row in batch.to_pylist()]


def _lsh(rd: RunDir, parts: list[dict], banding: dict, docs: int, reducers: int) -> dict:
    # about 5 million bucket rows (100 MB) per shuffle partition
    partitions = max(1, math.ceil(docs * banding["bands"] / 5_000_000))
    if not parts:
        return {"partitions": 0, "candidate_edges": 0}
    ds = ray.data.from_items([{"part": i} for i in range(len(parts))],
                             override_num_blocks=max(1, min(len(parts), 4 * reducers)))
    ds = ds.map_batches(_bands_of_parts, fn_kwargs={"parts": parts, "bands": banding["bands"],
                                                    "rows": banding["rows"], "partitions": partitions},
                        batch_format="pyarrow", batch_size=1)
    ds = ds.groupby("partition", num_partitions=min(partitions, reducers)).map_groups(
        _edges_of_partition, fn_kwargs={"out_uri": rd.uri_of("_work", "near", "edges")}, batch_format="pyarrow")
    return {"partitions": partitions, "candidate_edges": sum(r["edges"] for r in _consume(ds))}


def _verify(rd: RunDir, parts: list[dict], near: dict, reducers: int) -> dict:
    threshold = near["verify_threshold"] if near["verify_threshold"] is not None else near["threshold"]
    files = rd.files("_work/near/edges")
    rows = []
    if files:
        ds = read_own_files(rd.uri_of(), files, columns=["u", "v"])
        ds = ds.map_batches(_with_part_of, fn_kwargs={"side": "u"}, batch_format="pyarrow", batch_size=None)
        ds = ds.groupby("part", num_partitions=reducers).map_groups(
            _texts_of_part, fn_kwargs={"parts": parts, "side": "u"}, batch_format="pyarrow")
        ds = ds.map_batches(_with_part_of, fn_kwargs={"side": "v"}, batch_format="pyarrow", batch_size=None)
        ds = ds.groupby("part", num_partitions=reducers).map_groups(
            _verify_part, fn_kwargs={"parts": parts, "near": near, "threshold": threshold,
                                     "out_uri": rd.uri_of("_work", "near", "verified")},
            batch_format="pyarrow")
        rows = _consume(ds)
    return {"threshold": threshold, "candidates": sum(r["candidates"] for r in rows),
            "verified": sum(r["verified"] for r in rows)}


def _survivors(rd: RunDir, parts: list[dict], near: dict, nodes: int, reducers: int, level: int) -> dict:
    for path in rd.files("duplicates") + rd.files("clusters"):
        if path.rsplit("/", 1)[-1].startswith("near-"):
            rd.fs.delete_file(path)
    rd.clear("_work", "near_dupsets")
    if not nodes:
        return {"partitions": 0}
    partitions = max(1, math.ceil(nodes / 1_000_000))
    ds = read_own_files(rd.uri_of(), [join(rd.work, "near", "components.parquet")])
    ds = ds.map_batches(_with_part_of, fn_kwargs={"side": "node"}, batch_format="pyarrow", batch_size=None)
    ds = ds.groupby("part", num_partitions=reducers).map_groups(
        _members_of_part, fn_kwargs={"parts": parts, "partitions": partitions}, batch_format="pyarrow")
    ds = ds.groupby("partition", num_partitions=min(partitions, reducers)).map_groups(
        _survivors_of_partition, fn_kwargs={"policy": near["survivor"], "priority": near["source_priority"],
                                            "run_uri": rd.uri_of(), "level": level}, batch_format="pyarrow")
    ds = ds.groupby("chunk", num_partitions=reducers).map_groups(
        _write_near_dupset, fn_kwargs={"work_uri": rd.uri_of("_work")}, batch_format="pyarrow")
    _consume(ds)
    return {"partitions": partitions}


def stage_near_dedup(rd: RunDir, chunks, config: dict, reducers: int) -> None:
    near = config["dedup"]["near"]
    info = rd.state["stages"].get("near_dedup", {})
    if not near["enabled"] or info.get("status") == "done":
        rd.set_stage("near_dedup", status="done")
        return
    banding = banding_of(near)
    parts_path = join(rd.work, "near", "parts.json")
    if not exists(rd.fs, parts_path):  # fixed at the first attempt: node numbers depend on it
        write_json_atomic(rd.fs, parts_path, {"parts": _run_parts(rd, chunks) + reference_parts(near["against"], near)})
    parts = read_json(rd.fs, parts_path)["parts"]
    done = set(info.get("steps_done", []))
    rd.set_stage("near_dedup", banding=banding, parts=len(parts))

    def step(name: str, run, *clear) -> None:
        if name in done:
            return
        if clear:
            rd.clear(*clear)
        t = time.time()
        figures = {**run(), "seconds": round(time.time() - t, 2)}
        done.add(name)
        rd.set_stage("near_dedup", steps_done=[s for s in STEPS if s in done], **{name: figures})

    docs = sum(p.rows for p in rd.kept_parts().values())
    step("lsh", lambda: _lsh(rd, parts, banding, docs, reducers), "_work", "near", "edges")
    if near["verify"]:
        step("verify", lambda: _verify(rd, parts, near, reducers), "_work", "near", "verified")
    edges_uri = rd.uri_of("_work", "near", "verified" if near["verify"] else "edges")
    step("components", lambda: ray.get(_components_task.remote(edges_uri, rd.uri_of("_work", "near",
                                                                                     "components.parquet"))))
    nodes = rd.state["stages"]["near_dedup"]["components"]["nodes"]
    step("survivors", lambda: _survivors(rd, parts, near, nodes, reducers, config["output"]["compression_level"]))
    rd.set_stage("near_dedup", status="done")
