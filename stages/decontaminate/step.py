"""The split and decontamination on Ray, over the documents dedup kept (one task per chunk):

    holdout documents' exact hashes (and n-grams, with split.holdout_ngrams)
    evaluation files (read and cleaned like inputs) -> their exact hashes and n-grams
        -> one task merges them into the index file it is given            (build_index)
    train documents -> per task, how many contain each index n-gram -> summed per n-gram in
        partitions of the n-grams (a Ray groupby) -> one task writes the index without those
        above split.max_ngram_doc_freq                                     (cap_index)
    train documents checked against the index -> rejected rows (STAGE-CHUNK.parquet) and the
        lines the documents writer leaves out (CHUNK.parquet), each into the folder it is given
                                                                           (decontaminate)

A worker caches an index by its URI: give each attempt's index files new names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from slimpipe.io.fs import join, resolve, write_parquet_atomic
from slimpipe.io.inputs import Chunk, InputFile, plan_chunks
from slimpipe.io.parts import removed_lines
from slimpipe.schemas import FREQUENT_NGRAM, REMOVED_LINES
from slimpipe.stages.clean import Cleaner
from slimpipe.stages.decontaminate.rules import (
    EVAL,
    HOLDOUT,
    Contaminants,
    contaminant_hashes,
    frequent_ngrams,
    holdout_mask,
    ngram_doc_freq,
)
from slimpipe.stages.minhash import ngram_hashes
from slimpipe.stages.normalize import normalize_text
from slimpipe.stages.read import read_chunk
from slimpipe.stages.shuffle import Shuffle
from slimpipe.stages.write import rejected_rows

STAGE = "decontaminate"  # its rejected rows' stage, and their files' prefix
# What a kept part holds that a rejected row needs: the split reads no more of it.
_COLUMNS_READ = [
    "id",
    "text",
    "source",
    "url",
    "meta",
    "file",
    "line",
    "chunk",
    "bytes_read",
    "utf8_repaired",
    "language",
    "language_score",
    "quality_score",
]
COUNT_ROW_BYTES = 24  # an (n-gram, count, partition) row
_PER_CHUNK = {"batch_format": "pyarrow", "batch_size": 1}  # each item is one chunk: one task each


@dataclass(frozen=True)
class KeptDocuments:
    """The documents dedup kept: each chunk's part files, in input order, less the lines listed in
    FOLDER/CHUNK.parquet for each of the `removed` folders."""

    parts: dict[str, list[str]]
    work_uri: str
    removed: tuple[str, ...]

    def dataset(self) -> ray.data.Dataset:
        items = [{"chunk": c, "paths": p} for c, p in self.parts.items()]
        return ray.data.from_items(items, override_num_blocks=len(items))

    def of_chunk(self, chunk: str, paths: list[str], split: dict, holdout: bool) -> pa.Table:
        """The chunk's holdout or train documents."""
        fs, _ = resolve(self.work_uri)
        table = pa.concat_tables([pq.read_table(p, filesystem=fs, columns=_COLUMNS_READ) for p in paths])
        table = table.filter(pc.invert(pc.is_in(table["line"], removed_lines(fs, self.removed, chunk))))
        held = holdout_mask(table["id"].to_pylist(), split["holdout_ratio"], split["seed"])
        return table.filter(pa.array(held if holdout else ~held))


def _chunk_documents(batch: pa.Table, kept: KeptDocuments, split: dict, holdout: bool):
    """(chunk, documents) for each chunk of a batch of (chunk, paths) items."""
    for chunk, paths in zip(batch["chunk"].to_pylist(), batch["paths"].to_pylist()):
        yield chunk, kept.of_chunk(chunk, paths, split, holdout)


def _holdout_contaminants(batch: pa.Table, kept: KeptDocuments, split: dict) -> pa.Table:
    ngram = split["ngram"] if split["holdout_ngrams"] else 0
    return pa.concat_tables(
        [
            contaminant_hashes([normalize_text(t) for t in held["text"].to_pylist()], ngram, HOLDOUT)
            for _, held in _chunk_documents(batch, kept, split, holdout=True)
        ]
    )


def _eval_contaminants(batch: pa.Table, input_cfg: dict, clean_cfg: dict, split: dict) -> pa.Table:
    """Evaluation texts cleaned as the corpus was (ftfy uncurls quotes, say), so that a copy matches."""
    out = [contaminant_hashes([], 0, EVAL)]
    cleaner = Cleaner(clean_cfg)
    for chunk in batch["chunk"].to_pylist():
        for table in read_chunk(Chunk.from_dict(chunk), input_cfg):
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


def build_index(
    kept: KeptDocuments,
    split: dict,
    holdout: bool,
    eval_files: list[InputFile],
    eval_input: dict,
    clean_cfg: dict,
    index_uri: str,
) -> dict:
    """Write the contaminant index to `index_uri`: the holdout's hashes where `holdout` asks for them, and
    the evaluation files' (read with `eval_input`); returns how many exact hashes and n-grams it holds."""
    tables = []
    if kept.parts and holdout:
        ds = kept.dataset().map_batches(_holdout_contaminants, fn_kwargs={"kept": kept, "split": split}, **_PER_CHUNK)
        tables += ds.to_arrow_refs()  # the driver passes references on; the data stays in Ray
    if eval_files:
        eval_chunks = [c.to_dict() for c in plan_chunks(eval_files, 1 << 62, lambda jobs: [])]  # a task per file
        ds = ray.data.from_items([{"chunk": c} for c in eval_chunks], override_num_blocks=len(eval_chunks)).map_batches(
            _eval_contaminants,
            fn_kwargs={"input_cfg": eval_input, "clean_cfg": clean_cfg, "split": split},
            **_PER_CHUNK,
        )
        tables += ds.to_arrow_refs()
    return ray.get(_merge_index.remote(tables, index_uri))


def _read_index(index_uri: str) -> Contaminants:
    fs, path = resolve(index_uri)
    return Contaminants(pq.read_table(path, filesystem=fs))


_load_index = lru_cache(maxsize=2)(_read_index)  # read once per worker process, for all its chunks


def _doc_freq_of_chunks(batch: pa.Table, kept: KeptDocuments, index_uri: str, split: dict, partitions: int) -> pa.Table:
    """Per contaminant n-gram, how many train documents of these chunks contain it, with the
    partition that sums it."""
    ngrams = _load_index(index_uri).ngrams
    counts = pa.concat_tables(
        [
            ngram_doc_freq((ngram_hashes(normalize_text(t), split["ngram"]) for t in train["text"].to_pylist()), ngrams)
            for _, train in _chunk_documents(batch, kept, split, holdout=False)
        ]
    )
    return counts.append_column("partition", pa.array(counts["hash"].to_numpy() % np.uint64(partitions), pa.int64()))


@ray.remote(num_cpus=1)
def _cap_index(refs: list, index_uri: str, out_uri: str) -> dict:
    """The index without the n-grams too common in train to be evidence of contamination."""
    capped = _read_index(index_uri)  # its own copy: ignore() changes it
    found = [t for t in ray.get(refs) if t.num_rows]  # where none is found, a block may come without columns
    frequent = pa.concat_tables([FREQUENT_NGRAM.empty_table(), *found])
    ignored = capped.ignore(frequent["hash"].to_numpy())
    fs, out = resolve(out_uri)
    write_parquet_atomic(fs, out, capped.table())
    return {"ngrams": len(capped.ngrams), "ngrams_ignored": ignored}


def cap_index(kept: KeptDocuments, split: dict, index_uri: str, ngrams: int, capped_uri: str, shuffle: Shuffle) -> dict:
    """Write to `capped_uri` the index of `index_uri` (holding `ngrams` n-grams) without the n-grams that
    more than split.max_ngram_doc_freq train documents contain, counted per n-gram across chunks in
    partitions of the n-grams (a shuffle); returns how many n-grams it keeps and ignores."""
    # partitions of the index's n-grams; each comes once from every chunk that holds it
    rows = ngrams
    partitions = shuffle.partitions(rows, COUNT_ROW_BYTES)
    ds = kept.dataset().map_batches(
        _doc_freq_of_chunks,
        fn_kwargs={"kept": kept, "index_uri": index_uri, "split": split, "partitions": partitions},
        **_PER_CHUNK,
    )
    ds = shuffle.group(
        ds, "partition", frequent_ngrams, rows, COUNT_ROW_BYTES, partitions, max_doc_freq=split["max_ngram_doc_freq"]
    )
    return ray.get(_cap_index.remote(ds.to_arrow_refs(), index_uri, capped_uri))


def _as_rejected(train: pa.Table, hits: list[tuple[int, tuple[str, float, str]]]) -> pa.Table:
    """The contaminated documents, as the records a filter would have rejected."""
    reasons, values, details = zip(*(hit for _, hit in hits))
    rows = train.take(pa.array([i for i, _ in hits]))
    return (
        rows.append_column("raw", pa.nulls(rows.num_rows, pa.large_binary()))
        .append_column("bytes_clean", pc.binary_length(rows["text"]))
        .append_column("reject_stage", pa.array([STAGE] * rows.num_rows, pa.string()))
        .append_column("reject_reason", pa.array(reasons, pa.string()))
        .append_column("reject_value", pa.array(values, pa.float64()))
        .append_column("reject_detail", pa.array(details, pa.string()))
    )


def _decontaminate_chunks(
    batch: pa.Table, kept: KeptDocuments, index_uri: str, split: dict, rejected_uri: str, removed_uri: str, level: int
) -> pa.Table:
    fs, rejected_dir = resolve(rejected_uri)
    _, removed_dir = resolve(removed_uri)
    index = _load_index(index_uri)
    removed, spared = [], []
    for chunk, train in _chunk_documents(batch, kept, split, holdout=False):
        hits, spared_here = [], 0
        for i, norm in enumerate(map(normalize_text, train["text"].to_pylist())):
            if hit := index.check(norm, split["ngram"], split["min_shared_ngrams"]):
                hits.append((i, hit))
            else:
                spared_here += index.spared(norm, split["ngram"])
        spared.append(spared_here)
        if hits:
            rows = _as_rejected(train, hits)
            write_parquet_atomic(fs, join(rejected_dir, f"{STAGE}-{chunk}.parquet"), rejected_rows(rows), level)
            write_parquet_atomic(
                fs, join(removed_dir, f"{chunk}.parquet"), rows.select(["line"]).sort_by("line").cast(REMOVED_LINES)
            )
        removed.append(len(hits))
    return pa.table({"removed": removed, "spared_by_cap": spared})


def decontaminate(
    kept: KeptDocuments, split: dict, index_uri: str, rejected_uri: str, removed_uri: str, compression_level: int
) -> dict:
    """Check the train documents against the index of `index_uri`: the contaminated ones go to
    `rejected_uri` as rejected rows and their lines to `removed_uri`, per chunk. Returns how many it
    removed and how many it spared only because the cap ignored the n-grams they share."""
    removed = spared = 0
    if kept.parts:
        ds = kept.dataset().map_batches(
            _decontaminate_chunks,
            fn_kwargs={
                "kept": kept,
                "index_uri": index_uri,
                "split": split,
                "rejected_uri": rejected_uri,
                "removed_uri": removed_uri,
                "level": compression_level,
            },
            **_PER_CHUNK,
        )
        for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            removed += sum(b["removed"].to_pylist())
            spared += sum(b["spared_by_cap"].to_pylist())
    return {"decontaminated": removed, "spared_by_cap": spared}
