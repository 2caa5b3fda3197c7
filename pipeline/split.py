"""Runs the train/holdout split and decontamination on Ray, after dedup:

    chunks' kept parts (minus duplicates) -> holdout documents' exact hashes and n-grams
    evaluation files (read like inputs) -> their exact hashes and n-grams
        -> one task merges them into _work/split/index.parquet
    chunks' kept parts -> train documents checked against the index -> rejected rows (stage
        decontaminate) and the lines the documents writer leaves out (_work/decontaminated)

All or nothing on resume: an interrupted split is redone whole (it is cheap beside dedup).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from slimpipe import inputs as inputs_mod
from slimpipe.rundir import RunDir
from slimpipe.stages.decontaminate import Contaminants, contaminant_hashes, holdout_mask
from slimpipe.stages.normalize import normalize_text, text_hash
from slimpipe.stages.read import read_chunk
from slimpipe.stages.write import DUPSET_DIRS, rejected_rows, removed_lines
from slimpipe.storage import join, list_files, resolve, write_parquet_atomic

PART_COLUMNS = ["id", "text", "source", "url", "meta", "file", "line", "chunk", "bytes_read", "utf8_repaired",
                "language", "language_score", "quality_score", "text_hash"]


def _documents_of_chunk(fs, work: str, chunk: str, paths: list[str]) -> pa.Table:
    """The chunk's documents after dedup (earlier decontamination excluded: it is redone whole)."""
    table = pa.concat_tables([pq.read_table(p, filesystem=fs, columns=PART_COLUMNS) for p in paths])
    dedup_dirs = [d for d in DUPSET_DIRS if d != "decontaminated"]
    return table.filter(pc.invert(pc.is_in(table["line"], removed_lines(fs, work, chunk, dedup_dirs))))


def _holdout_contaminants(batch: pa.Table, work_uri: str, split: dict) -> pa.Table:
    fs, work = resolve(work_uri)
    out = []
    for chunk, paths in zip(batch["chunk"].to_pylist(), batch["paths"].to_pylist()):
        docs = _documents_of_chunk(fs, work, chunk, paths)
        held = docs.filter(pa.array(holdout_mask(docs["id"].to_pylist(), split["holdout_ratio"], split["seed"])))
        out.append(contaminant_hashes([normalize_text(t) for t in held["text"].to_pylist()],
                                      held["text_hash"].to_pylist(), split["ngram"]))
    return pa.concat_tables(out)


def _eval_contaminants(batch: pa.Table, input_cfg: dict, split: dict) -> pa.Table:
    out = []
    for chunk in batch["chunk"].to_pylist():
        for table in read_chunk(inputs_mod.Chunk.from_dict(chunk), input_cfg):
            texts = table.filter(pc.is_null(table["reject_stage"]))["text"].to_pylist()
            norms = [normalize_text(t) for t in texts]
            out.append(contaminant_hashes(norms, [text_hash(n) for n in norms], split["ngram"]))
    return pa.concat_tables(out) if out else contaminant_hashes([], [], 0)


@ray.remote(num_cpus=1)
def _merge_index(refs: list, out_uri: str) -> dict:
    merged = pa.concat_tables([contaminant_hashes([], [], 0), *ray.get(refs)])
    index = Contaminants(merged)
    fs, out = resolve(out_uri)
    write_parquet_atomic(fs, out, pa.table({
        "kind": pa.array(["exact"] * len(index.exact) + ["ngram"] * len(index.ngrams), pa.string()),
        "hash": pa.array(np.concatenate([index.exact, index.ngrams]), pa.uint64())}))
    return {"exact_hashes": len(index.exact), "ngrams": len(index.ngrams)}


@lru_cache(maxsize=2)
def _load_index(index_uri: str) -> Contaminants:
    fs, path = resolve(index_uri)
    return Contaminants(pq.read_table(path, filesystem=fs))


def _decontaminate_chunks(batch: pa.Table, run_uri: str, work_uri: str, split: dict, level: int) -> pa.Table:
    fs, run = resolve(run_uri)
    _, work = resolve(work_uri)
    index = _load_index(join(work_uri, "split", "index.parquet"))
    removed = []
    for chunk, paths in zip(batch["chunk"].to_pylist(), batch["paths"].to_pylist()):
        docs = _documents_of_chunk(fs, work, chunk, paths)
        train = docs.filter(pa.array(~holdout_mask(docs["id"].to_pylist(), split["holdout_ratio"], split["seed"])))
        hits = [(i, hit) for i, (text, h) in enumerate(zip(train["text"].to_pylist(), train["text_hash"].to_pylist()))
                if (hit := index.check(normalize_text(text), h, split["ngram"]))]
        if hits:
            rows = train.take(pa.array([i for i, _ in hits]))
            rows = rows.append_column("raw", pa.nulls(rows.num_rows, pa.large_binary())).append_column(
                "bytes_clean", pc.binary_length(rows["text"])).append_column(
                "reject_stage", pa.array(["decontaminate"] * rows.num_rows, pa.string())).append_column(
                "reject_reason", pa.array([r for _, (r, _) in hits], pa.string())).append_column(
                "reject_value", pa.array([v for _, (_, v) in hits], pa.float64())).append_column(
                "reject_detail", pa.array(["shares text with the holdout or evaluation data"] * rows.num_rows))
            write_parquet_atomic(fs, join(run, "rejected", f"decontaminate-{chunk}.parquet"),
                                 rejected_rows(rows), level)
            write_parquet_atomic(fs, join(work, "decontaminated", f"{chunk}.parquet"),
                                 rows.select(["line"]).sort_by("line"))
        removed.append(len(hits))
    return pa.table({"removed": removed})


def stage_split(rd: RunDir, chunks, config: dict) -> None:
    split = config["split"]
    if rd.state["stages"].get("split", {}).get("status") == "done":
        return
    for info in list_files(rd.fs, join(rd.path, "rejected")):
        if info.base_name.startswith("decontaminate-"):
            rd.fs.delete_file(info.path)
    rd.clear("_work", "decontaminated")
    rd.clear("_work", "split")
    eval_input = {**config["input"], "text_field": split["eval_text_field"] or config["input"]["text_field"],
                  "source": "eval"}
    evals = inputs_mod.discover(split["eval_files"], eval_input) if split["eval_files"] else []
    # After exact dedup no train document has the exact text of a holdout one, so with n-grams off
    # only evaluation files can contaminate (the writer still marks each document's split)
    if not split["decontaminate"] or not evals and (split["holdout_ratio"] <= 0 or not split["ngram"]):
        rd.set_stage("split", status="done", holdout_ratio=split["holdout_ratio"], decontaminated=0)
        return
    by_chunk: dict[str, list[str]] = {}
    for chunk, path, _ in rd.in_input_order(rd.kept_parts(), chunks):
        by_chunk.setdefault(chunk, []).append(path)
    items = [{"chunk": c, "paths": p} for c, p in by_chunk.items()]
    common = dict(batch_format="pyarrow", batch_size=1)
    tables = []
    if items and split["holdout_ratio"] > 0:
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _holdout_contaminants, fn_kwargs={"work_uri": rd.uri_of("_work"), "split": split}, **common)
        tables += ds.to_arrow_refs()  # the driver passes references on; the data stays in Ray
    if evals:
        eval_chunks = [c.to_dict() for c in inputs_mod.plan_chunks(evals, 1 << 62, lambda jobs: [])]
        ds = ray.data.from_items([{"chunk": c} for c in eval_chunks], override_num_blocks=len(eval_chunks)).map_batches(
            _eval_contaminants, fn_kwargs={"input_cfg": eval_input, "split": split}, **common)
        tables += ds.to_arrow_refs()
    figures = ray.get(_merge_index.remote(tables, rd.uri_of("_work", "split", "index.parquet")))
    removed = 0
    if items:
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _decontaminate_chunks, fn_kwargs={"run_uri": rd.uri_of(), "work_uri": rd.uri_of("_work"), "split": split,
                                              "level": config["output"]["compression_level"]}, **common)
        removed = sum(sum(b["removed"].to_pylist()) for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    rd.set_stage("split", status="done", holdout_ratio=split["holdout_ratio"], eval_files=len(evals),
                 decontaminated=removed, **figures)
