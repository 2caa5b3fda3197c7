"""The statistics filters share, computed at most once per document and only when a filter asks:
lines, paragraphs, words and word n-gram repetition. Words are whitespace-separated tokens (as
in the Gopher paper), so no filter re-tokenizes the text."""
from __future__ import annotations

import re
from functools import cached_property

import numba as nb
import numpy as np

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
# Whole whitespace-separated tokens without a letter: the regex engine only lingers on the few
# tokens that qualify, and those without a letter or digit are among them.
_TOKEN_WITHOUT_LETTER = re.compile(r"(?<!\S)(?:[^\s\w]|[\d_])+(?!\S)")
_WORD_CHAR = re.compile(r"\w")
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
        punct = [token for token in self._letterless_tokens if not _WORD_CHAR.search(token)]
        return len(self.words) - len(punct), sum(map(len, self.words)) - sum(map(len, punct))

    @cached_property
    def alpha_words(self) -> int:
        """How many words hold a letter."""
        return len(self.words) - len(self._letterless_tokens)

    @cached_property
    def _letterless_tokens(self) -> list[str]:
        return _TOKEN_WITHOUT_LETTER.findall(self.text)

    @cached_property
    def _ngram_base(self) -> tuple[np.ndarray, np.ndarray]:
        """Word hashes, and the character offsets of word starts in the space-joined word list.
        (Python's str hash: two different words share one with odds of 2**-64.)"""
        n = len(self.words)
        ids = np.fromiter(map(hash, self.words), np.int64, n).view(np.uint64)
        lengths = np.fromiter(map(len, self.words), np.int64, n)
        return ids, np.concatenate([[0], np.cumsum(lengths)])

    @cached_property
    def _repetition_cache(self) -> dict:
        return {}

    def ngram_repetition(self, top_ns: tuple[int, ...], dup_ns: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """For each n of `top_ns`, the characters covered by the most frequent word n-gram (its
        length as "w1 ... wn" times its count; the first to occur wins a tie), and for each n of
        `dup_ns`, the characters of n-grams that repeat an earlier one, scanning left to right
        and skipping past each repeat (Gopher's definitions). One compiled pass per n."""
        key = (top_ns, dup_ns)
        if key not in self._repetition_cache:
            ids, cum = self._ngram_base
            top, dup = _repetition(ids, cum, np.array(top_ns, np.int64), np.array(dup_ns, np.int64))
            self._repetition_cache[key] = (top.tolist(), dup.tolist())
        return self._repetition_cache[key]

    def top_ngram_chars(self, n: int) -> int:
        return self.ngram_repetition((n,), ())[0][0]

    def duplicate_ngram_chars(self, n: int) -> int:
        return self.ngram_repetition((), (n,))[1][0]


@nb.njit(cache=True)
def _slot(h, mask):
    return (h ^ (h >> np.uint64(29))) & mask


@nb.njit(cache=True)
def _repetition(ids, cum, top_ns, dup_ns):
    n_words = len(ids)
    top = np.zeros(len(top_ns), np.int64)
    dup = np.zeros(len(dup_ns), np.int64)
    max_n = 0
    for n in top_ns:
        max_n = max(max_n, n)
    for n in dup_ns:
        max_n = max(max_n, n)
    size = 2
    while size < 2 * n_words:
        size *= 2
    mask = np.uint64(size - 1)
    keys = np.zeros(size, np.uint64)
    used = np.zeros(size, np.bool_)
    counts = np.zeros(size, np.int64)
    first = np.zeros(size, np.int64)
    h = ids.copy()  # the n-gram hashes, extended by one word per n
    for n in range(1, max_n + 1):
        count = n_words - n + 1
        if count <= 0:
            break
        if n > 1:
            for i in range(count):
                h[i] = h[i] * _HASH_MUL + ids[i + n - 1]
        for k in range(len(top_ns)):
            if top_ns[k] != n:
                continue
            used[:] = False
            for i in range(count):
                s = _slot(h[i], mask)
                while used[s] and keys[s] != h[i]:
                    s = (s + np.uint64(1)) & mask
                if used[s]:
                    counts[s] += 1
                else:
                    used[s], keys[s], counts[s], first[s] = True, h[i], 1, i
            best, at = 0, 0
            for s in range(size):
                if used[s] and (counts[s] > best or (counts[s] == best and first[s] < at)):
                    best, at = counts[s], first[s]
            top[k] = (cum[at + n] - cum[at] + n - 1) * best
        for k in range(len(dup_ns)):
            if dup_ns[k] != n:
                continue
            used[:] = False
            total, i = 0, 0
            while i < count:
                s = _slot(h[i], mask)
                while used[s] and keys[s] != h[i]:
                    s = (s + np.uint64(1)) & mask
                if used[s]:
                    total += cum[i + n] - cum[i] + n - 1
                    i += n
                else:
                    used[s], keys[s] = True, h[i]
                    i += 1
            dup[k] = total
    return top, dup
