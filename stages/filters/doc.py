"""The statistics filters share, computed at most once per document and only when a filter asks:
lines, paragraphs, words and word n-gram repetition.

Layout does not change a statistic: lines are the non-blank lines without trailing whitespace,
paragraphs are the runs of lines between blank lines, and every fraction of "characters" is over
the text those lines spell joined by single newlines (`size`). So a page whose paragraphs are
separated by blank lines, CRLF line ends or trailing spaces gets the decisions of the same page
with single newlines, which are the reference's (datatrove's). Words are counted as the
reference's tokenizer counts them (see `words`).
"""

from __future__ import annotations

import re
import string
from functools import cached_property

import numba as nb
import numpy as np

from slimpipe.stages.charclass import char_class
from slimpipe.stages.filters.words import TERMINAL_PUNCTUATION, words

# The characters the reference (datatrove) counts as punctuation: a word made of them alone is no
# word to the Gopher rules. ("‘" is not among them, "１" is: kept as the reference has them.)
PUNCTUATION = (
    frozenset(
        string.punctuation
        + "—”％１〈、━【「」，】；“《„’∶´．（–？！：～«〉》）。…►»"
        + "".join(map(chr, [*range(0, 9), 11, 12, *range(13, 32), *range(127, 160)]))
    )
    | TERMINAL_PUNCTUATION
)


_SYMBOL_WORD = re.compile(f"^{char_class(map(ord, PUNCTUATION - {chr(10)}))}+$", re.M)
_WORD_WITHOUT_LETTER = re.compile(r"^(?:[^\w\n]|[\d_])+$", re.M)
# What Python's \w holds besides letters, digits and "_": number signs ("²", "½", "Ⅻ"), which the
# reference (str.isalpha) does not count as letters. Rare: pages with one are counted word by word.
_NUMBER_SIGNS = frozenset(
    c for c in map(chr, range(0x80, 0x110000)) if c.isnumeric() and not c.isdecimal() and not c.isalpha()
)
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
        # what a filter worked out about this document and may need again (keyed by who asks)
        self.memo: dict = {}

    @cached_property
    def _layout(self) -> tuple[list[str], list[str]]:
        lines: list[str] = []
        paragraphs: list[str] = []
        current: list[str] = []
        for raw in self.text.split("\n"):
            line = raw.rstrip()
            if line:
                lines.append(line)
                current.append(line)
            elif current:
                paragraphs.append("\n".join(current))
                current = []
        if current:
            paragraphs.append("\n".join(current))
        return lines, paragraphs

    @property
    def lines(self) -> list[str]:
        return self._layout[0]

    @property
    def paragraphs(self) -> list[str]:
        return self._layout[1]

    @cached_property
    def size(self) -> int:
        """Characters of the lines joined by single newlines: the text without its layout."""
        return sum(map(len, self.lines)) + max(0, len(self.lines) - 1)

    @cached_property
    def words(self) -> list[str]:
        return words(self.text)

    @cached_property
    def _word_lines(self) -> str:
        return "\n".join(self.words)

    @cached_property
    def content_words(self) -> tuple[int, int]:
        """(count, total characters) of the words not made of punctuation alone."""
        symbols = _SYMBOL_WORD.findall(self._word_lines)
        return len(self.words) - len(symbols), sum(map(len, self.words)) - sum(map(len, symbols))

    @cached_property
    def alpha_words(self) -> int:
        """How many words hold a letter."""
        if self.text.isascii() or _NUMBER_SIGNS.isdisjoint(self.text):
            return len(self.words) - len(_WORD_WITHOUT_LETTER.findall(self._word_lines))
        return sum(any(c.isalpha() for c in word) for word in self.words)

    @cached_property
    def _ngram_base(self) -> tuple[np.ndarray, np.ndarray]:
        """Word hashes, and the character offsets of word starts in the space-joined word list.
        (Python's str hash: two different words share one with odds of 2**-64.)"""
        n = len(self.words)
        ids = np.fromiter(map(hash, self.words), np.int64, n).view(np.uint64)
        lengths = np.fromiter(map(len, self.words), np.int64, n)
        return ids, np.concatenate([[0], np.cumsum(lengths)])

    def ngram_repetition(self, top_ns: tuple[int, ...], dup_ns: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """For each n of `top_ns`, the characters covered by the most frequent word n-gram (its
        length as "w1 ... wn" times its count; the first to occur wins a tie), and for each n of
        `dup_ns`, the characters of n-grams that repeat an earlier one, scanning left to right
        and skipping past each repeat, counted without the spaces between the words (Gopher's
        definitions as the reference computes them). One compiled pass per n."""
        key = ("ngram_repetition", top_ns, dup_ns)
        if key not in self.memo:
            ids, cum = self._ngram_base
            top, dup = _repetition(ids, cum, np.array(top_ns, np.int64), np.array(dup_ns, np.int64))
            self.memo[key] = (top.tolist(), dup.tolist())
        return self.memo[key]


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
                    total += cum[i + n] - cum[i]
                    i += n
                else:
                    used[s], keys[s] = True, h[i]
                    i += 1
            dup[k] = total
    return top, dup
