"""The Gopher rules (Rae et al. 2021, "Scaling Language Models", appendix A1), decided as the
reference implementation (datatrove's, which FineWeb ran) decides them: words as its tokenizer
counts them, stop words counted once each and with their case, bullets "•" and "-", and the
published thresholds. Lines and characters are taken without layout (see `Doc`)."""

from __future__ import annotations

import re

from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc, count_duplicates

# The reference's own splits, for `count_blank_lines`: lines between runs of newlines (lines of
# spaces among them), paragraphs between runs of two or more.
_LINES = re.compile("\n+")
_PARAGRAPHS = re.compile("\n{2,}")


class GopherQuality(Filter):
    name = "gopher_quality"

    def __init__(
        self,
        min_words: int,
        max_words: int,
        min_mean_word_length: float,
        max_mean_word_length: float,
        max_symbol_word_ratio: float,
        max_bullet_lines_ratio: float,
        max_ellipsis_lines_ratio: float,
        min_alpha_words_ratio: float,
        min_stop_words: int,
        stop_words: list[str],
        bullets: list[str],
        count_blank_lines: bool,
    ):
        self.min_words, self.max_words = min_words, max_words
        self.min_mean, self.max_mean = min_mean_word_length, max_mean_word_length
        self.max_symbol_ratio = max_symbol_word_ratio
        self.max_bullet_lines = max_bullet_lines_ratio
        self.max_ellipsis_lines = max_ellipsis_lines_ratio
        self.min_alpha = min_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = frozenset(stop_words)
        self.bullets = tuple(bullets)
        # The reference counts blank lines among the lines of the bullet and ellipsis ratios, so
        # blank lines between list items hide a list from it; off, a list is a list however laid out.
        self.count_blank_lines = count_blank_lines

    def check(self, doc: Doc) -> Rejection | None:
        n, chars = doc.content_words
        text, tokens = doc.text, len(doc.words)  # the ratios below count punctuation as words too
        if n < self.min_words or not tokens:
            return self.reject("too_few_words", n, f"{n} words, under {max(1, self.min_words)}")
        if n > self.max_words:
            return self.reject("too_many_words", n, f"{n} words, over {self.max_words}")
        mean = chars / n if n else float("nan")  # no mean: the reference's comparisons let it pass
        if mean < self.min_mean:
            return self.reject("short_words", mean, f"mean word length {mean:.2f}, under {self.min_mean}")
        if mean > self.max_mean:
            return self.reject("long_words", mean, f"mean word length {mean:.2f}, over {self.max_mean}")
        ratio = text.count("#") / tokens
        if ratio > self.max_symbol_ratio:
            return self.reject("hash_ratio", ratio, f"{ratio:.3f} '#' per word, over {self.max_symbol_ratio}")
        ratio = (text.count("...") + text.count("…")) / tokens
        if ratio > self.max_symbol_ratio:
            return self.reject("ellipsis_ratio", ratio, f"{ratio:.3f} ellipses per word, over {self.max_symbol_ratio}")
        lines = text.splitlines() if self.count_blank_lines else doc.lines
        ratio = sum(1 for line in lines if line.lstrip().startswith(self.bullets)) / len(lines)
        if ratio > self.max_bullet_lines:
            return self.reject("bullet_lines", ratio, f"{ratio:.0%} of lines start with a bullet")
        ratio = sum(1 for line in lines if line.rstrip().endswith(("...", "…"))) / len(lines)
        if ratio > self.max_ellipsis_lines:
            return self.reject("ellipsis_lines", ratio, f"{ratio:.0%} of lines end with an ellipsis")
        ratio = doc.alpha_words / tokens
        if ratio < self.min_alpha:
            return self.reject(
                "few_alpha_words", ratio, f"{ratio:.0%} of words have a letter, under {self.min_alpha:.0%}"
            )
        stops = len(self.stop_words.intersection(doc.words))
        if stops < self.min_stop_words:
            return self.reject("few_stop_words", stops, f"{stops} distinct stop words, under {self.min_stop_words}")
        return None


class GopherRepetition(Filter):
    name = "gopher_repetition"

    def __init__(
        self,
        max_dup_line_frac: float,
        max_dup_para_frac: float,
        max_dup_line_char_frac: float,
        max_dup_para_char_frac: float,
        max_top_ngram_char_frac: dict,
        max_dup_ngram_char_frac: dict,
        count_blank_lines: bool,
    ):
        self.max_dup_line, self.max_dup_para = max_dup_line_frac, max_dup_para_frac
        self.max_dup_line_chars, self.max_dup_para_chars = max_dup_line_char_frac, max_dup_para_char_frac
        self.top = sorted((int(n), float(v)) for n, v in max_top_ngram_char_frac.items())
        self.dup = sorted((int(n), float(v)) for n, v in max_dup_ngram_char_frac.items())
        # The reference divides by the text's whole length, blank lines and trailing spaces
        # included, so the same page with blank lines between paragraphs repeats "less".
        self.count_blank_lines = count_blank_lines

    def check(self, doc: Doc) -> Rejection | None:
        if doc.size == 0:
            return self.reject("empty", 0, "the text has no visible characters")
        if self.count_blank_lines:
            size, lines, paragraphs = len(doc.text), _LINES.split(doc.text), _PARAGRAPHS.split(doc.text.strip())
        else:
            size, lines, paragraphs = doc.size, doc.lines, doc.paragraphs
        for unit, items, max_frac, max_char_frac in (
            ("paragraph", paragraphs, self.max_dup_para, self.max_dup_para_chars),
            ("line", lines, self.max_dup_line, self.max_dup_line_chars),
        ):
            dups, chars = count_duplicates(items)
            if dups / len(items) > max_frac:
                return self.reject(f"dup_{unit}s", dups / len(items), f"{dups} of {len(items)} {unit}s repeat")
            if chars / size > max_char_frac:
                return self.reject(
                    f"dup_{unit}_chars", chars / size, f"{chars / size:.0%} of characters in repeated {unit}s"
                )
        top, dup = doc.ngram_repetition(tuple(n for n, _ in self.top), tuple(n for n, _ in self.dup))
        for (n, limit), chars in zip(self.top, top):
            if chars / size > limit:
                return self.reject(
                    f"top_{n}gram", chars / size, f"the most frequent {n}-gram covers {chars / size:.0%} of characters"
                )
        for (n, limit), chars in zip(self.dup, dup):
            if chars / size > limit:
                return self.reject(
                    f"dup_{n}grams", chars / size, f"repeated {n}-grams cover {chars / size:.0%} of characters"
                )
        return None
