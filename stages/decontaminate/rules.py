"""Train/holdout split and decontamination: the rules, over batches and texts.

A kept document is held out when a hash of (seed, id) falls below `holdout_ratio`: the same
document lands on the same side in every run, whatever else the corpus holds. Train then
loses what matches the holdout or the user's evaluation files:

- `decontaminate.exact`: the same normalised text (SlimPajama's rule), against both;
- `decontaminate.ngram` (value: how many distinct n-grams it shares): at least
  `min_shared_ngrams` word n-grams shared with the evaluation files (and with the holdout only
  when `holdout_ngrams` asks for it: a holdout drawn from the same crawl shares site templates
  and footers with its sibling pages, which is not contamination).

An n-gram that more than `max_ngram_doc_freq` train documents contain (a template, a footer,
legal text, a common phrase) is not evidence that a page copied the evaluation data: it is
ignored. The n-grams are 64-bit hashes; a text shorter than one n-gram counts as one n-gram
of itself.

The check is a join on the hash: contaminants and every train document's hashes meet in shuffle
partitions of the hashes (matches), where each n-gram's train documents are counted for the cap;
the matches then meet per chunk (verdicts). No task holds the whole index.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from slimpipe.schemas import CHECK_ROW, MATCH
from slimpipe.stages.minhash import ngram_hashes
from slimpipe.stages.normalize import text_hash

HOLDOUT, EVAL = 1, 2  # where a contaminant came from, as bits: one text may be in both (0: a train document)
EXACT, NGRAM = 0, 1  # what a hash is of: a whole normalised text, or one of its word n-grams
_ORIGIN_NAMES = ((HOLDOUT, "the holdout"), (EVAL, "the evaluation data"))


def holdout_mask(ids: list[str], ratio: float, seed: int) -> np.ndarray:
    if ratio <= 0:
        return np.zeros(len(ids), bool)
    cut = int(ratio * 2**64)
    return np.array(
        [int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little") < cut for i in ids],
        dtype=bool,
    )


def split_names(ids: list[str], ratio: float, seed: int) -> pa.Array:
    return pa.array(np.where(holdout_mask(ids, ratio, seed), "holdout", "train"), pa.string())


def exact_hash(norm_text: str) -> np.uint64:
    """The normalised text's hash, whatever exact dedup was configured to hash."""
    return np.uint64(int.from_bytes(text_hash(norm_text)[:8], "little"))


def _check_rows(kind: np.ndarray, hashes: np.ndarray, origin: np.ndarray, chunk: str | None, lines) -> pa.Table:
    return pa.table(
        {
            "kind": pa.array(kind, pa.int8()),
            "hash": pa.array(hashes, pa.uint64()),
            "origin": pa.array(origin, pa.uint8()),
            "chunk": pa.array([chunk] * len(hashes), pa.string()),
            "line": pa.array(lines, pa.int64()),
        },
        schema=CHECK_ROW,
    )


def _kinds(exact: int, grams: int) -> np.ndarray:
    return np.concatenate([np.full(exact, EXACT, np.int8), np.full(grams, NGRAM, np.int8)])


def contaminant_hashes(norm_texts: list[str], ngram: int, origin: int) -> pa.Table:
    """What train must not contain, from some holdout or evaluation texts: their exact hashes
    and distinct n-grams as CHECK_ROW rows of that origin; `ngram` 0 gives the exact hashes alone."""
    exact = np.array([exact_hash(t) for t in norm_texts], np.uint64)
    grams = (
        np.unique(np.concatenate([ngram_hashes(t, ngram) for t in norm_texts]))
        if ngram and norm_texts
        else np.zeros(0, np.uint64)
    )
    n = len(exact) + len(grams)
    return _check_rows(
        _kinds(len(exact), len(grams)), np.concatenate([exact, grams]), np.full(n, origin), None, [-1] * n
    )


def train_hashes(norm_texts: list[str], lines: list[int], chunk: str, ngram: int) -> pa.Table:
    """What a chunk's train documents are checked by: each one's exact hash and its distinct
    n-grams, as CHECK_ROW rows of origin 0 naming the document (chunk, line)."""
    exact = np.array([exact_hash(t) for t in norm_texts], np.uint64)
    per_doc = [ngram_hashes(t, ngram) for t in norm_texts] if ngram else []
    grams = np.concatenate(per_doc) if per_doc else np.zeros(0, np.uint64)
    gram_lines = np.repeat(np.array(lines, np.int64), [len(g) for g in per_doc]) if per_doc else np.zeros(0, np.int64)
    n = len(exact) + len(grams)
    return _check_rows(
        _kinds(len(exact), len(grams)),
        np.concatenate([exact, grams]),
        np.zeros(n, np.uint8),
        chunk,
        np.concatenate([np.array(lines, np.int64), gram_lines]),
    )


def _distinct(hashes: np.ndarray, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct hashes, each with the origins of all its copies or-ed together."""
    keys, inverse = np.unique(hashes, return_inverse=True)
    merged = np.zeros(len(keys), np.uint8)
    np.bitwise_or.at(merged, inverse, origins)
    return keys, merged


def _found(index: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of `hashes`: whether the sorted `index` holds it, and where."""
    if not len(index):
        return np.zeros(len(hashes), bool), np.zeros(len(hashes), np.int64)
    pos = np.minimum(np.searchsorted(index, hashes), len(index) - 1)
    return index[pos] == hashes, pos


def matches(rows: pa.Table, max_doc_freq: int | None) -> tuple[pa.Table, dict]:
    """CHECK_ROW rows holding every row of their hashes (one shuffle partition: contaminants and
    train documents alike) -> MATCH rows, one per train document and contaminant it holds, and
    this partition's figures. An n-gram that more than `max_doc_freq` train documents hold is
    ignored (its matches kept, marked, to count the documents the cap spared)."""
    kind, hashes = rows["kind"].to_numpy(), rows["hash"].to_numpy()
    origin = rows["origin"].to_numpy()
    train = origin == 0
    out, figures = [], {"exact_hashes": 0, "ngrams": 0, "ngrams_ignored": 0}
    for k, name in ((EXACT, "exact_hashes"), (NGRAM, "ngrams")):
        index, index_origin = _distinct(hashes[~train & (kind == k)], origin[~train & (kind == k)])
        rows_k = np.flatnonzero(train & (kind == k))
        hit, pos = _found(index, hashes[rows_k])
        rows_k, pos = rows_k[hit], pos[hit]
        ignored = np.zeros(len(index), bool)
        if k == NGRAM and max_doc_freq is not None:  # train rows are distinct per document and n-gram
            ignored = np.bincount(pos, minlength=len(index)) > max_doc_freq
            figures["ngrams_ignored"] = int(ignored.sum())
        figures[name] = len(index) - int(ignored.sum())
        out.append(
            pa.table(
                {
                    "chunk": rows["chunk"].take(pa.array(rows_k, pa.int64())),
                    "line": rows["line"].take(pa.array(rows_k, pa.int64())),
                    "kind": pa.array(np.full(len(rows_k), k, np.int8)),
                    "origin": pa.array(index_origin[pos], pa.uint8()),
                    "ignored": pa.array(ignored[pos]),
                },
                schema=MATCH,
            )
        )
    return pa.concat_tables(out), figures


def verdicts(found: pa.Table, grams_of, ngram: int, min_shared: int) -> tuple[list[tuple[int, tuple]], int]:
    """A chunk's MATCH rows -> ((line, (reason, value, detail)) for each contaminated train
    document, in line order; how many others share only n-grams the cap ignored). `grams_of(line)`:
    how many distinct n-grams that document has (for the detail)."""
    found = found.sort_by("line")  # each document's matches in one run of rows
    line, kind = found["line"].to_numpy(), found["kind"].to_numpy()
    origin, ignored = found["origin"].to_numpy(), found["ignored"].to_numpy(zero_copy_only=False)
    docs, starts = np.unique(line, return_index=True)
    hits, spared = [], 0
    for doc, lo, hi in zip(docs.tolist(), starts, np.append(starts[1:], len(line))):
        k, o, ign = kind[lo:hi], origin[lo:hi], ignored[lo:hi]
        exact = o[k == EXACT]
        shared = o[(k == NGRAM) & ~ign]
        if len(exact):
            hits.append((doc, _exact_verdict(int(exact[0]))))
        elif ngram and len(shared) and len(shared) >= min_shared:
            hits.append((doc, _ngram_verdict(shared, grams_of(doc), ngram)))
        elif ign.any():
            spared += 1
    return hits, spared


def _exact_verdict(origin: int) -> tuple[str, float, str]:
    return ("decontaminate.exact", 1.0, f"the same normalised text as a document in {_origins(origin)}")


def _ngram_verdict(shared: np.ndarray, grams: int, ngram: int) -> tuple[str, float, str]:
    return (
        "decontaminate.ngram",
        float(len(shared)),
        f"shares {len(shared)} of its {grams} word {ngram}-grams with "
        f"{_origins(int(np.bitwise_or.reduce(shared)))}" + _per_origin(shared),
    )


def _origins(bits: int) -> str:
    return " and ".join(name for bit, name in _ORIGIN_NAMES if bits & bit)


def _per_origin(shared: np.ndarray) -> str:
    """How many with each, where the n-grams came from both."""
    counts = [(np.count_nonzero(shared & bit), name) for bit, name in _ORIGIN_NAMES]
    return "" if sum(1 for c, _ in counts if c) < 2 else " (" + ", ".join(f"{c} with {n}" for c, n in counts) + ")"
