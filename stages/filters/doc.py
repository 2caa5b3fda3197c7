"""The statistics filters share, computed at most once per document and only when a filter asks:
lines, paragraphs, words and word n-gram repetition. Words are whitespace-separated tokens (as
in the Gopher paper), so no filter re-tokenizes the text."""
from __future__ import annotations

import re
from functools import cached_property

import numpy as np

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
# Whole whitespace-separated tokens without a letter or digit, and without a letter: the regex
# engine only lingers on the few tokens that qualify.
_TOKEN_WITHOUT_WORD_CHAR = re.compile(r"(?<!\S)[^\w\s]+(?!\S)")
_TOKEN_WITHOUT_LETTER = re.compile(r"(?<!\S)(?:[^\s\w]|[\d_])+(?!\S)")
# Odd 64-bit multiplier of the rolling n-gram hash (wraps around modulo 2**64).
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


def count_duplicates(items: list[str]) -> tuple[int, int]:
    """(items that repeat an earlier one, their characters)."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


class Doc:
    def __init__(self, text: str, norm_chars: int = 0, annotations: dict | None = None):
        self.text = text
        self.norm_chars = norm_chars
        self.annotations = annotations or {}

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def paragraphs(self) -> list[str]:
        return _PARAGRAPH_BREAK.split(self.text.strip())

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def content_words(self) -> tuple[int, int]:
        """(count, total characters) of the words with a letter or digit (tokens of punctuation
        alone left out)."""
        punct = _TOKEN_WITHOUT_WORD_CHAR.findall(self.text)
        return len(self.words) - len(punct), sum(map(len, self.words)) - sum(map(len, punct))

    @cached_property
    def alpha_words(self) -> int:
        """How many words hold a letter."""
        return len(self.words) - len(_TOKEN_WITHOUT_LETTER.findall(self.text))

    @cached_property
    def _ngram_base(self) -> tuple[np.ndarray, np.ndarray]:
        """Word hashes, and the character offsets of word starts in the space-joined word list.
        (Python's str hash: two different words share one with odds of 2**-64.)"""
        n = len(self.words)
        ids = np.fromiter(map(hash, self.words), np.int64, n).view(np.uint64)
        lengths = np.fromiter(map(len, self.words), np.int64, n)
        return ids, np.concatenate([[0], np.cumsum(lengths)])

    @cached_property
    def _repeats_from(self) -> int:
        """The smallest n from which no word n-gram repeats (a repeated n-gram repeats its
        prefixes, so none repeats beyond)."""
        for n in (2, 5):
            if self.max_ngram_count(n) <= 1:
                return n
        return 11

    @cached_property
    def _ngrams(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return {}

    def ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(hash, character length as "w1 w2 ... wn") of every word n-gram, in order. Each n's
        hashes extend the (n-1)-grams' by one word."""
        if n not in self._ngrams:
            ids, cum = self._ngram_base
            count = max(0, len(ids) - n + 1)
            if n == 1:
                h = ids
            else:
                h = self.ngrams(n - 1)[0][:count] * _HASH_MUL + ids[n - 1 : n - 1 + count]
            self._ngrams[n] = (h, cum[n : n + count] - cum[:count] + (n - 1))
        return self._ngrams[n]

    @cached_property
    def _max_counts(self) -> dict[int, int]:
        return {}

    def max_ngram_count(self, n: int) -> int:
        """How often the most frequent n-gram occurs."""
        if n not in self._max_counts:
            h, _ = self.ngrams(n)
            if len(h) < 2:
                self._max_counts[n] = len(h)
            else:
                ordered = np.sort(h)
                edges = np.flatnonzero(ordered[1:] != ordered[:-1])
                self._max_counts[n] = int(np.diff(np.concatenate(([-1], edges, [len(ordered) - 1]))).max())
        return self._max_counts[n]

    def top_ngram_bound(self, n: int) -> int:
        """An upper bound of top_ngram_chars(n), cheap: the highest count of any n-gram times the
        longest n-gram."""
        h, chars = self.ngrams(n)
        return self.max_ngram_count(n) * int(chars.max()) if len(h) else 0

    def top_ngram_chars(self, n: int) -> int:
        """Characters covered by the most frequent n-gram: its length times its count (the first
        to occur wins a tie)."""
        h, chars = self.ngrams(n)
        if not len(h):
            return 0
        if n >= self._repeats_from:
            return int(chars[0])  # every n-gram occurs once: the first one wins
        uniq, first, counts = np.unique(h, return_index=True, return_counts=True)
        best = counts.max()
        i = first[counts == best].min()
        return int(chars[i] * best)

    def duplicate_ngram_chars(self, n: int) -> int:
        """Characters of n-grams that repeat an earlier n-gram, scanning left to right and
        skipping past each repeat (so overlapping repeats are not counted twice).

        The scan visits only the positions whose n-gram occurred before: every other position
        holds the first of its kind and is simply remembered, unless a skip covers it."""
        if n >= self._repeats_from:
            return 0
        h, chars = self.ngrams(n)
        _, first_index, inverse = np.unique(h, return_index=True, return_inverse=True)
        first = first_index[inverse]  # where each position's n-gram first occurs
        repeats = np.flatnonzero(first < np.arange(len(h)))
        hashes, firsts = h.tolist(), first.tolist()
        skipped_firsts: set[int] = set()  # n-grams whose first occurrence a skip passed over
        remembered_later: set[int] = set()  # n-grams remembered at a later occurrence
        total, skip_until = 0, 0
        for p in repeats.tolist():
            if p < skip_until:
                continue
            x = hashes[p]
            if x in remembered_later or x not in skipped_firsts:
                total += int(chars[p])
                skip_until = p + n
                for q in range(p + 1, min(skip_until, len(hashes))):
                    if firsts[q] == q:
                        skipped_firsts.add(hashes[q])
            else:
                remembered_later.add(x)
        return total
