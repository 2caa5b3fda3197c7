"""Train/holdout split and decontamination.

A kept document is held out when a hash of (seed, id) falls below `holdout_ratio`: the same
document lands on the same side in every run, whatever else the corpus holds. Train then
loses every document that matches the holdout or the user's evaluation files, by the exact
hash of the normalised text (`decontaminate.exact`) or by sharing a word n-gram
(`decontaminate.ngram`, value: how many distinct n-grams it shares). The n-grams are 64-bit
hashes; a text shorter than one n-gram counts as one n-gram of itself.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from slimpipe.stages.minhash import ngram_hashes


def holdout_mask(ids: list[str], ratio: float, seed: int) -> np.ndarray:
    if ratio <= 0:
        return np.zeros(len(ids), bool)
    cut = int(ratio * 2**64)
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little") < cut
                     for i in ids], dtype=bool)


def split_names(ids: list[str], ratio: float, seed: int) -> pa.Array:
    return pa.array(np.where(holdout_mask(ids, ratio, seed), "holdout", "train"), pa.string())


def contaminant_hashes(norm_texts: list[str], text_hashes: list[bytes], ngram: int) -> pa.Table:
    """What train must not contain, from some holdout or evaluation texts: rows of (kind, hash)."""
    exact = [int.from_bytes(h[:8], "little") for h in text_hashes]
    grams = [ngram_hashes(t, ngram) for t in norm_texts] if ngram else []
    grams = np.unique(np.concatenate(grams)) if grams else np.zeros(0, np.uint64)
    return pa.table({"kind": pa.array(["exact"] * len(exact) + ["ngram"] * len(grams), pa.string()),
                     "hash": pa.array(np.concatenate([np.array(exact, np.uint64), grams]), pa.uint64())})


class Contaminants:
    """The merged index: sorted distinct exact hashes and n-gram hashes."""

    def __init__(self, table: pa.Table):
        kind = table["kind"].to_numpy(zero_copy_only=False)
        hashes = table["hash"].to_numpy()
        self.exact = np.unique(hashes[kind == "exact"])
        self.ngrams = np.unique(hashes[kind == "ngram"])

    def check(self, norm_text: str, text_hash: bytes, ngram: int) -> tuple[str, float] | None:
        """(reason, value) if this train text is contaminated, else None."""
        h = np.uint64(int.from_bytes(text_hash[:8], "little"))
        i = np.searchsorted(self.exact, h)
        if i < len(self.exact) and self.exact[i] == h:
            return "decontaminate.exact", 1.0
        if ngram and len(self.ngrams):
            grams = ngram_hashes(norm_text, ngram)
            pos = np.minimum(np.searchsorted(self.ngrams, grams), len(self.ngrams) - 1)
            shared = int(np.count_nonzero(self.ngrams[pos] == grams))
            if shared:
                return "decontaminate.ngram", float(shared)
        return None
