"""The split and decontamination on Ray, over the documents dedup kept (one task per chunk), as a
join on the hash:

    holdout documents' exact hashes (and n-grams, with split.holdout_ngrams)
    evaluation files (read and cleaned like inputs) -> their exact hashes and n-grams
    train documents -> each one's exact hash and distinct n-grams, naming it (chunk, line)
        -> all of them shuffled on the hash: in each partition, the train documents holding a
           contaminant, the n-grams more than split.max_ngram_doc_freq of them hold ignored;
           written per partition into the folder it is given
        -> those matches shuffled on the chunk: the contaminated documents -> rejected rows
           (STAGE-CHUNK.parquet) and the lines the documents writer leaves out (CHUNK.parquet)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from slimpipe.io.fs import join, parquet_files, resolve, write_parquet_atomic
from slimpipe.io.inputs import Chunk, InputFile, plan_chunks
from slimpipe.io.parts import removed_lines
from slimpipe.schemas import REMOVED_LINES
from slimpipe.stages.clean import Cleaner
from slimpipe.stages.datasource import read_own_files
from slimpipe.stages.decontaminate.rules import (
    EVAL,
    HOLDOUT,
    contaminant_hashes,
    holdout_mask,
    matches,
    train_hashes,
    verdicts,
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
CHECK_ROW_BYTES = 40  # a hash to check: kind, hash, origin, chunk, line, partition
MATCH_ROW_BYTES = 40  # a match: chunk, line, kind, origin, ignored
_PER_CHUNK = {"batch_format": "pyarrow", "batch_size": 1}  # each item is one chunk: one task each


class DecontaminationOutputs(NamedTuple):
    """Where decontamination writes (URIs of folders)."""

    matches: str  # work: the matches of each partition of the hashes (part-P.parquet)
    rejected: str  # STAGE-CHUNK.parquet: the contaminated documents as rejected rows
    removed_lines: str  # CHUNK.parquet: their lines, which the documents writer leaves out


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


def _holdout_contaminants(batch: pa.Table, kept: KeptDocuments, split: dict, partitions: int) -> pa.Table:
    ngram = split["ngram"] if split["holdout_ngrams"] else 0
    tables = [
        contaminant_hashes([normalize_text(t) for t in held["text"].to_pylist()], ngram, HOLDOUT)
        for _, held in _chunk_documents(batch, kept, split, holdout=True)
    ]
    return _keyed(pa.concat_tables(tables), partitions)


def _eval_contaminants(batch: pa.Table, input_cfg: dict, clean_cfg: dict, split: dict, partitions: int) -> pa.Table:
    """Evaluation texts cleaned as the corpus was (ftfy uncurls quotes, say), so that a copy matches."""
    out = [contaminant_hashes([], 0, EVAL)]
    cleaner = Cleaner(clean_cfg)
    for chunk in batch["chunk"].to_pylist():
        for table in read_chunk(Chunk.from_dict(chunk), input_cfg):
            table = cleaner(table)
            texts = table.filter(pc.is_null(table["reject_stage"]))["text"].to_pylist()
            out.append(contaminant_hashes([normalize_text(t) for t in texts], split["ngram"], EVAL))
    return _keyed(pa.concat_tables(out), partitions)


def _train_hashes(batch: pa.Table, kept: KeptDocuments, split: dict, partitions: int) -> pa.Table:
    tables = [
        train_hashes(
            [normalize_text(t) for t in train["text"].to_pylist()], train["line"].to_pylist(), chunk, split["ngram"]
        )
        for chunk, train in _chunk_documents(batch, kept, split, holdout=False)
    ]
    return _keyed(pa.concat_tables(tables), partitions)


def _keyed(rows: pa.Table, partitions: int) -> pa.Table:
    return rows.append_column("partition", pa.array(rows["hash"].to_numpy() % np.uint64(partitions), pa.int64()))


def _matches_of_partition(rows: pa.Table, max_doc_freq: int | None, out_uri: str) -> pa.Table:
    partition = int(rows["partition"][0].as_py())
    found, figures = matches(rows.drop_columns(["partition"]), max_doc_freq)
    if found.num_rows:
        fs, out = resolve(out_uri)
        write_parquet_atomic(fs, join(out, f"part-{partition:05d}.parquet"), found)
    return pa.table({**{k: [v] for k, v in figures.items()}, "matches": [found.num_rows]})


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


def _decontaminate_chunk(
    found: pa.Table, kept: KeptDocuments, split: dict, rejected_uri: str, removed_uri: str, level: int
) -> pa.Table:
    """A chunk's matches: its contaminated train documents become rejected rows and removed lines."""
    chunk = found["chunk"][0].as_py()
    train = kept.of_chunk(chunk, kept.parts[chunk], split, holdout=False)
    row_of = {line: i for i, line in enumerate(train["line"].to_pylist())}
    texts = train["text"]

    def grams_of(line: int) -> int:
        return len(ngram_hashes(normalize_text(texts[row_of[line]].as_py()), split["ngram"]))

    hits, spared = verdicts(found, grams_of, split["ngram"], split["min_shared_ngrams"])
    if hits:
        rows = _as_rejected(train, [(row_of[line], verdict) for line, verdict in hits])
        fs, rejected_dir = resolve(rejected_uri)
        _, removed_dir = resolve(removed_uri)
        write_parquet_atomic(fs, join(rejected_dir, f"{STAGE}-{chunk}.parquet"), rejected_rows(rows), level)
        write_parquet_atomic(
            fs, join(removed_dir, f"{chunk}.parquet"), rows.select(["line"]).sort_by("line").cast(REMOVED_LINES)
        )
    return pa.table({"removed": [len(hits)], "spared_by_cap": [spared]})


def decontaminate(
    kept: KeptDocuments,
    split: dict,
    holdout: bool,
    eval_files: list[InputFile],
    eval_input: dict,
    clean_cfg: dict,
    train_rows: int,
    shuffle: Shuffle,
    outputs: DecontaminationOutputs,
    compression_level: int,
) -> dict:
    """Check the train documents (about `train_rows` hashes) against the holdout's hashes where
    `holdout` asks for them and the evaluation files' (read with `eval_input`); the contaminated
    ones go to the rejected rows and removed lines of `outputs`. Returns the index's figures (exact
    hashes, n-grams kept and ignored), how many documents it removed and how many it spared only
    because the cap ignored the n-grams they share."""
    figures = {"exact_hashes": 0, "ngrams": 0, "ngrams_ignored": 0, "decontaminated": 0, "spared_by_cap": 0}
    if not kept.parts or not (holdout or eval_files):
        return figures
    # about a hash per word (4 bytes) of the evaluation data beside the train documents'
    rows = train_rows + sum(f.size for f in eval_files) // 4
    partitions = shuffle.partitions(rows, CHECK_ROW_BYTES)
    sides = []
    if holdout:
        sides.append(
            kept.dataset().map_batches(
                _holdout_contaminants, fn_kwargs={"kept": kept, "split": split, "partitions": partitions}, **_PER_CHUNK
            )
        )
    if eval_files:
        eval_chunks = [c.to_dict() for c in plan_chunks(eval_files, 1 << 62, lambda jobs: [])]  # a task per file
        sides.append(
            ray.data.from_items([{"chunk": c} for c in eval_chunks], override_num_blocks=len(eval_chunks)).map_batches(
                _eval_contaminants,
                fn_kwargs={"input_cfg": eval_input, "clean_cfg": clean_cfg, "split": split, "partitions": partitions},
                **_PER_CHUNK,
            )
        )
    train = kept.dataset().map_batches(
        _train_hashes, fn_kwargs={"kept": kept, "split": split, "partitions": partitions}, **_PER_CHUNK
    )
    ds = shuffle.group(
        train.union(*sides),
        "partition",
        _matches_of_partition,
        rows,
        CHECK_ROW_BYTES,
        partitions,
        max_doc_freq=split["max_ngram_doc_freq"] if split["ngram"] else None,
        out_uri=outputs.matches,
    )
    found = 0
    for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for key in ("exact_hashes", "ngrams", "ngrams_ignored"):
            figures[key] += int(pc.sum(b[key]).as_py() or 0)
        found += int(pc.sum(b["matches"]).as_py() or 0)
    files = parquet_files(*resolve(outputs.matches))
    if files:
        ds = shuffle.group(
            read_own_files(outputs.matches, files),
            "chunk",
            _decontaminate_chunk,
            found,
            MATCH_ROW_BYTES,
            kept=kept,
            split=split,
            rejected_uri=outputs.rejected,
            removed_uri=outputs.removed_lines,
            level=compression_level,
        )
        for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            figures["decontaminated"] += int(pc.sum(b["removed"]).as_py() or 0)
            figures["spared_by_cap"] += int(pc.sum(b["spared_by_cap"]).as_py() or 0)
    return figures
