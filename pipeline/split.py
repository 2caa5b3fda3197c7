"""Runs the train/holdout split and decontamination on Ray, after dedup:

    chunks' kept parts (minus duplicates) -> holdout documents' exact hashes (and n-grams, with
        split.holdout_ngrams)
    evaluation files (read and cleaned like inputs) -> their exact hashes and n-grams
        -> one task merges them into _work/split/contaminants-ATTEMPT.parquet
    with split.max_ngram_doc_freq: chunks' train documents -> per task, how many of its documents
        contain each contaminant n-gram -> summed per n-gram in partitions of the n-grams (a Ray
        groupby) -> one task drops those above the cap from the index (_work/split/index-ATTEMPT.parquet)
    chunks' kept parts -> train documents checked against the index -> rejected rows (stage
        decontaminate) and the lines the documents writer leaves out (_work/decontaminated)

All or nothing on resume: an interrupted split is redone whole (it is cheap beside dedup).
"""
from __future__ import annotations

import math
import uuid
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from slimpipe.io import inputs as inputs_mod
from slimpipe.rundir import RunDir
from slimpipe.stages.clean import Cleaner
from slimpipe.stages.decontaminate import (EVAL, HOLDOUT, Contaminants, contaminant_hashes, frequent_ngrams,
                                           holdout_mask, ngram_doc_freq)
from slimpipe.stages.minhash import ngram_hashes
from slimpipe.stages.normalize import normalize_text
from slimpipe.stages.read import read_chunk
from slimpipe.stages.write import DUPSET_DIRS, rejected_rows, removed_lines
from slimpipe.io.fs import join, list_files, resolve, write_parquet_atomic

PART_COLUMNS = ["id", "text", "source", "url", "meta", "file", "line", "chunk", "bytes_read", "utf8_repaired",
                "language", "language_score", "quality_score"]


def _documents_of_chunk(fs, work: str, chunk: str, paths: list[str], split: dict, holdout: bool) -> pa.Table:
    """The chunk's holdout or train documents after dedup (earlier decontamination excluded: it is
    redone whole)."""
    table = pa.concat_tables([pq.read_table(p, filesystem=fs, columns=PART_COLUMNS) for p in paths])
    dedup_dirs = [d for d in DUPSET_DIRS if d != "decontaminated"]
    table = table.filter(pc.invert(pc.is_in(table["line"], removed_lines(fs, work, chunk, dedup_dirs))))
    held = holdout_mask(table["id"].to_pylist(), split["holdout_ratio"], split["seed"])
    return table.filter(pa.array(held if holdout else ~held))


def _chunk_documents(batch: pa.Table, work_uri: str, split: dict, holdout: bool):
    """(chunk, documents) for each chunk of a batch of (chunk, paths) items."""
    fs, work = resolve(work_uri)
    for chunk, paths in zip(batch["chunk"].to_pylist(), batch["paths"].to_pylist()):
        yield chunk, _documents_of_chunk(fs, work, chunk, paths, split, holdout)


def _holdout_contaminants(batch: pa.Table, work_uri: str, split: dict) -> pa.Table:
    ngram = split["ngram"] if split["holdout_ngrams"] else 0
    return pa.concat_tables([contaminant_hashes([normalize_text(t) for t in held["text"].to_pylist()], ngram, HOLDOUT)
                             for _, held in _chunk_documents(batch, work_uri, split, holdout=True)])


def _eval_contaminants(batch: pa.Table, input_cfg: dict, clean_cfg: dict, split: dict) -> pa.Table:
    """Evaluation texts cleaned as the corpus was (ftfy uncurls quotes, say), so that a copy matches."""
    out = [contaminant_hashes([], 0, EVAL)]
    cleaner = Cleaner(clean_cfg)
    for chunk in batch["chunk"].to_pylist():
        for table in read_chunk(inputs_mod.Chunk.from_dict(chunk), input_cfg):
            table = cleaner(table)
            texts = table.filter(pc.is_null(table["reject_stage"]))["text"].to_pylist()
            out.append(contaminant_hashes([normalize_text(t) for t in texts], split["ngram"], EVAL))
    return pa.concat_tables(out)


@ray.remote(num_cpus=1)
def _merge_index(refs: list, out_uri: str) -> dict:
    index = Contaminants(pa.concat_tables([contaminant_hashes([], 0, EVAL), *ray.get(refs)]))
    fs, out = resolve(out_uri)
    write_parquet_atomic(fs, out, index.table())
    return {"exact_hashes": len(index.exact), "ngrams": len(index.ngrams)}


def _read_index(index_uri: str) -> Contaminants:
    fs, path = resolve(index_uri)
    return Contaminants(pq.read_table(path, filesystem=fs))


_load_index = lru_cache(maxsize=2)(_read_index)  # read once per worker process, for all its chunks


def _doc_freq_of_chunks(batch: pa.Table, work_uri: str, index_uri: str, split: dict, partitions: int) -> pa.Table:
    """Per contaminant n-gram, how many train documents of these chunks contain it, with the
    partition that sums it."""
    ngrams = _load_index(index_uri).ngrams
    counts = pa.concat_tables([
        ngram_doc_freq((ngram_hashes(normalize_text(t), split["ngram"]) for t in train["text"].to_pylist()), ngrams)
        for _, train in _chunk_documents(batch, work_uri, split, holdout=False)])
    return counts.append_column("partition", pa.array(counts["hash"].to_numpy() % np.uint64(partitions), pa.int64()))


@ray.remote(num_cpus=1)
def _cap_index(refs: list, index_uri: str, out_uri: str) -> dict:
    """The index without the n-grams too common in train to be evidence of contamination."""
    capped = _read_index(index_uri)  # its own copy: ignore() changes it
    found = [t for t in ray.get(refs) if t.num_rows]  # where none is found, a block may come without columns
    frequent = pa.concat_tables([pa.table({"hash": pa.array([], pa.uint64())}), *found])
    ignored = capped.ignore(frequent["hash"].to_numpy())
    fs, out = resolve(out_uri)
    write_parquet_atomic(fs, out, capped.table())
    return {"ngrams": len(capped.ngrams), "ngrams_ignored": ignored}


def _decontaminate_chunks(batch: pa.Table, run_uri: str, work_uri: str, index_uri: str, split: dict,
                          level: int) -> pa.Table:
    fs, run = resolve(run_uri)
    _, work = resolve(work_uri)
    index = _load_index(index_uri)
    removed, spared = [], []
    for chunk, train in _chunk_documents(batch, work_uri, split, holdout=False):
        hits, spared_here = [], 0
        for i, norm in enumerate(map(normalize_text, train["text"].to_pylist())):
            if hit := index.check(norm, split["ngram"], split["min_shared_ngrams"]):
                hits.append((i, hit))
            else:
                spared_here += index.spared(norm, split["ngram"])
        spared.append(spared_here)
        if hits:
            reasons, values, details = zip(*(hit for _, hit in hits))
            rows = train.take(pa.array([i for i, _ in hits]))
            rows = rows.append_column("raw", pa.nulls(rows.num_rows, pa.large_binary())).append_column(
                "bytes_clean", pc.binary_length(rows["text"])).append_column(
                "reject_stage", pa.array(["decontaminate"] * rows.num_rows, pa.string())).append_column(
                "reject_reason", pa.array(reasons, pa.string())).append_column(
                "reject_value", pa.array(values, pa.float64())).append_column(
                "reject_detail", pa.array(details, pa.string()))
            write_parquet_atomic(fs, join(run, "rejected", f"decontaminate-{chunk}.parquet"),
                                 rejected_rows(rows), level)
            write_parquet_atomic(fs, join(work, "decontaminated", f"{chunk}.parquet"),
                                 rows.select(["line"]).sort_by("line"))
        removed.append(len(hits))
    return pa.table({"removed": removed, "spared_by_cap": spared})


def _capped_index(rd: RunDir, items: list[dict], split: dict, ngrams: int, common: dict, attempt: str) -> dict:
    """Document frequency of the index's n-grams in train, summed per n-gram across chunks in
    partitions of the n-grams (a shuffle); the figures of the index without the frequent ones
    (_work/split/index-ATTEMPT.parquet)."""
    contaminants = rd.uri_of("_work", "split", f"contaminants-{attempt}.parquet")
    partitions = max(1, math.ceil(ngrams / 1_000_000))  # a million n-grams per reducer, times the chunks that hold them
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _doc_freq_of_chunks, fn_kwargs={"work_uri": rd.uri_of("_work"), "index_uri": contaminants, "split": split,
                                        "partitions": partitions}, **common)
    ds = ds.groupby("partition", num_partitions=partitions).map_groups(
        frequent_ngrams, fn_kwargs={"max_doc_freq": split["max_ngram_doc_freq"]}, batch_format="pyarrow")
    capped = rd.uri_of("_work", "split", f"index-{attempt}.parquet")
    return ray.get(_cap_index.remote(ds.to_arrow_refs(), contaminants, capped))


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
    # After exact dedup of the normalised text no train document has the text of a holdout one, so
    # the holdout adds nothing unless its n-grams count (the writer still marks each document's split)
    exact_dedup = config["dedup"]["exact"]
    holdout = split["holdout_ratio"] > 0 and (split["holdout_ngrams"] and split["ngram"] > 0
                                              or not (exact_dedup["enabled"] and exact_dedup["normalized"]))
    if not split["decontaminate"] or not evals and not holdout:
        rd.set_stage("split", status="done", holdout_ratio=split["holdout_ratio"], decontaminated=0)
        return
    by_chunk: dict[str, list[str]] = {}
    for chunk, path, _ in rd.in_input_order(rd.kept_parts(), chunks):
        by_chunk.setdefault(chunk, []).append(path)
    items = [{"chunk": c, "paths": p} for c, p in by_chunk.items()]
    common = dict(batch_format="pyarrow", batch_size=1)
    tables = []
    if items and holdout:
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _holdout_contaminants, fn_kwargs={"work_uri": rd.uri_of("_work"), "split": split}, **common)
        tables += ds.to_arrow_refs()  # the driver passes references on; the data stays in Ray
    if evals:
        eval_chunks = [c.to_dict() for c in inputs_mod.plan_chunks(evals, 1 << 62, lambda jobs: [])]
        ds = ray.data.from_items([{"chunk": c} for c in eval_chunks], override_num_blocks=len(eval_chunks)).map_batches(
            _eval_contaminants, fn_kwargs={"input_cfg": eval_input, "clean_cfg": config["clean"], "split": split},
            **common)
        tables += ds.to_arrow_refs()
    # Index files named for this attempt: a worker of a long-lived cluster caches the index it read
    # by its path, and must not reuse one from an earlier attempt of the same run.
    attempt = uuid.uuid4().hex[:12]
    index_uri = rd.uri_of("_work", "split", f"contaminants-{attempt}.parquet")
    figures = {**ray.get(_merge_index.remote(tables, index_uri)), "ngrams_ignored": 0}
    if split["max_ngram_doc_freq"] is not None and figures["ngrams"] and items:
        figures.update(_capped_index(rd, items, split, figures["ngrams"], common, attempt))
        index_uri = rd.uri_of("_work", "split", f"index-{attempt}.parquet")
    removed = spared = 0
    if items:
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _decontaminate_chunks, fn_kwargs={"run_uri": rd.uri_of(), "work_uri": rd.uri_of("_work"),
                                              "index_uri": index_uri, "split": split,
                                              "level": config["output"]["compression_level"]}, **common)
        for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            removed += sum(b["removed"].to_pylist())
            spared += sum(b["spared_by_cap"].to_pylist())
    rd.set_stage("split", status="done", holdout_ratio=split["holdout_ratio"], eval_files=len(evals),
                 decontaminated=removed, spared_by_cap=spared, **figures)
