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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.schemas import CONTAMINANT, FREQUENT_NGRAM, NGRAM_DOC_FREQ
from slimpipe.stages.minhash import ngram_hashes
from slimpipe.stages.normalize import text_hash

HOLDOUT, EVAL = 1, 2  # where a contaminant came from, as bits: one text may be in both
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


def contaminant_hashes(norm_texts: list[str], ngram: int, origin: int) -> pa.Table:
    """What train must not contain, from some holdout or evaluation texts: rows of (kind, hash,
    origin); `ngram` 0 gives the exact hashes alone."""
    exact = np.array([exact_hash(t) for t in norm_texts], np.uint64)
    grams = (
        np.unique(np.concatenate([ngram_hashes(t, ngram) for t in norm_texts]))
        if ngram and norm_texts
        else np.zeros(0, np.uint64)
    )
    return pa.table(
        {
            "kind": pa.array(["exact"] * len(exact) + ["ngram"] * len(grams), pa.string()),
            "hash": pa.array(np.concatenate([exact, grams]), pa.uint64()),
            "origin": pa.array(np.full(len(exact) + len(grams), origin, np.uint8)),
        },
        schema=CONTAMINANT,
    )


def _distinct(hashes: np.ndarray, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct hashes, each with the origins of all its copies or-ed together."""
    keys, inverse = np.unique(hashes, return_inverse=True)
    merged = np.zeros(len(keys), np.uint8)
    np.bitwise_or.at(merged, inverse, origins)
    return keys, merged


def _positions(index: np.ndarray, grams: np.ndarray) -> np.ndarray:
    """Where those of `grams` that the sorted `index` holds sit in it."""
    if not len(index):
        return np.zeros(0, np.int64)
    pos = np.minimum(np.searchsorted(index, grams), len(index) - 1)
    return pos[index[pos] == grams]


def ngram_doc_freq(doc_grams: Iterable[np.ndarray], ngrams: np.ndarray) -> pa.Table:
    """How many of the documents (each given by its distinct n-gram hashes) contain each of the
    sorted `ngrams`: rows of (hash, docs), leaving out the n-grams none of them contains. Sums of
    these over parts of a corpus are its document frequencies."""
    counts = np.zeros(len(ngrams), np.uint32)
    for grams in doc_grams:
        counts[_positions(ngrams, grams)] += 1  # a document's n-grams are distinct: one count each
    found = np.flatnonzero(counts)
    return pa.table(
        {"hash": pa.array(ngrams[found], pa.uint64()), "docs": pa.array(counts[found], pa.int64())},
        schema=NGRAM_DOC_FREQ,
    )


def frequent_ngrams(doc_freq: pa.Table, max_doc_freq: int) -> pa.Table:
    """The n-grams that more than `max_doc_freq` documents contain, from the (hash, docs) rows of
    parts of a corpus (summed here per n-gram)."""
    summed = doc_freq.group_by("hash").aggregate([("docs", "sum")])
    return summed.filter(pc.greater(summed["docs_sum"], max_doc_freq)).select(["hash"]).cast(FREQUENT_NGRAM)


class Contaminants:
    """The merged index: sorted distinct exact hashes and n-gram hashes, each with its origins."""

    def __init__(self, table: pa.Table):
        kind = table["kind"].to_numpy(zero_copy_only=False)
        hashes, origins = table["hash"].to_numpy(), table["origin"].to_numpy()
        self.exact, self.exact_origin = _distinct(hashes[kind == "exact"], origins[kind == "exact"])
        self.ngrams, self.ngram_origin = _distinct(hashes[kind == "ngram"], origins[kind == "ngram"])
        self.ignored = np.unique(hashes[kind == "ignored"])  # dropped by the cap: kept to count what they spare

    def table(self) -> pa.Table:
        kinds = ["exact"] * len(self.exact) + ["ngram"] * len(self.ngrams) + ["ignored"] * len(self.ignored)
        return pa.table(
            {
                "kind": pa.array(kinds, pa.string()),
                "hash": pa.array(np.concatenate([self.exact, self.ngrams, self.ignored]), pa.uint64()),
                "origin": pa.array(
                    np.concatenate([self.exact_origin, self.ngram_origin, np.zeros(len(self.ignored), np.uint8)]),
                    pa.uint8(),
                ),
            },
            schema=CONTAMINANT,
        )

    def ignore(self, frequent: np.ndarray) -> int:
        """Drop these n-grams (too common in train to be evidence); returns how many it held."""
        keep = ~np.isin(self.ngrams, frequent)
        self.ignored = np.union1d(self.ignored, self.ngrams[~keep])
        self.ngrams, self.ngram_origin = self.ngrams[keep], self.ngram_origin[keep]
        return int(np.count_nonzero(~keep))

    def spared(self, norm_text: str, ngram: int) -> bool:
        """Whether this text shares n-grams the cap ignored: with no verdict from `check`, a
        document the cap spared (boilerplate, or an item copied onto many pages)."""
        return bool(ngram and len(self.ignored) and len(_positions(self.ignored, ngram_hashes(norm_text, ngram))))

    def check(self, norm_text: str, ngram: int, min_shared: int = 1) -> tuple[str, float, str] | None:
        """(reason, value, detail) if this train text is contaminated, else None."""
        exact = _positions(self.exact, np.array([exact_hash(norm_text)], np.uint64))
        if len(exact):
            return (
                "decontaminate.exact",
                1.0,
                (f"the same normalised text as a document in {_origins(self.exact_origin[exact[0]])}"),
            )
        if not ngram or not len(self.ngrams):
            return None
        grams = ngram_hashes(norm_text, ngram)
        shared = self.ngram_origin[_positions(self.ngrams, grams)]
        if len(shared) < min_shared:
            return None
        return (
            "decontaminate.ngram",
            float(len(shared)),
            (
                f"shares {len(shared)} of its {len(grams)} word {ngram}-grams with "
                f"{_origins(np.bitwise_or.reduce(shared))}" + _per_origin(shared)
            ),
        )


def _origins(bits: int) -> str:
    return " and ".join(name for bit, name in _ORIGIN_NAMES if bits & bit)


def _per_origin(shared: np.ndarray) -> str:
    """How many with each, where the n-grams came from both."""
    counts = [(np.count_nonzero(shared & bit), name) for bit, name in _ORIGIN_NAMES]
    return "" if sum(1 for c, _ in counts if c) < 2 else " (" + ", ".join(f"{c} with {n}" for c, n in counts) + ")"
