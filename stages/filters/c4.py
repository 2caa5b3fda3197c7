"""The C4 rules (Raffel et al. 2020, section 2.2, and its reference code), with their defaults.
Line rules mark a line bad (no terminal punctuation or an ellipsis at the end, under 3 words, a
word over 1000 characters, "javascript", cookie and terms-of-use notices); document rules drop
the page ("lorem ipsum", a curly bracket, fewer than 5 sentences on its good lines). With
`remove_bad_lines` (as C4 itself and FineWeb ran it) a kept page loses its bad lines: its text
becomes its good lines, stripped and without citation marks, one per line. Otherwise the bad
lines only count against the sentence rule and the text is left as it is."""
from __future__ import annotations

import re

from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc

_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
TERMINAL = (".", "?", "!", '"', "'")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Quality(Filter):
    name = "c4"

    def __init__(self, min_sentences: int = 5, min_words_per_line: int = 3, max_word_length: int = 1000,
                 filter_lorem_ipsum: bool = True, filter_curly_bracket: bool = True,
                 filter_javascript: bool = True, filter_policy: bool = True, remove_citations: bool = True,
                 remove_bad_lines: bool = False):
        self.min_sentences, self.min_words = min_sentences, min_words_per_line
        self.max_word_length = max_word_length
        self.lorem, self.curly = filter_lorem_ipsum, filter_curly_bracket
        self.javascript, self.policy, self.citations = filter_javascript, filter_policy, remove_citations
        self.remove_bad_lines = remove_bad_lines

    def _good_line(self, line: str) -> tuple[str | None, int]:
        """(the line as C4 keeps it, its sentences), or (None, 0) for a line the rules reject."""
        line = line.strip()
        words = line.split()
        if len(words) < self.min_words or (
                len(line) > self.max_word_length and max(map(len, words)) > self.max_word_length):
            return None, 0
        if self.citations:
            line = _CITATION.sub("", line)
        if not line.endswith(TERMINAL) or line.endswith("..."):
            return None, 0
        lower = line.lower()
        if (self.javascript and "javascript" in lower) or (self.policy and any(p in lower for p in POLICY)):
            return None, 0
        return line, max(1, len(_SENTENCE_END.findall(line)))

    def check(self, doc: Doc) -> Rejection | None:
        lower = doc.text.lower()
        if self.lorem and "lorem ipsum" in lower:
            return self.reject("lorem_ipsum", 1, 'the page contains "lorem ipsum"')
        if self.curly and "{" in doc.text:
            return self.reject("curly_bracket", 1, "the page contains a curly bracket")
        sentences = 0
        for line in doc.lines:
            sentences += self._good_line(line)[1]
            if sentences >= self.min_sentences and not self.remove_bad_lines:
                return None  # the page rules were checked above; enough sentences seen
        if sentences < self.min_sentences:
            return self.reject("too_few_sentences", sentences,
                               f"{sentences} sentences on lines that pass C4's line rules, under {self.min_sentences}")
        return None

    def edit(self, doc: Doc) -> str | None:
        if not self.remove_bad_lines:
            return None
        kept = [line for line in (self._good_line(line)[0] for line in doc.lines) if line is not None]
        text = "\n".join(kept)
        return None if text == doc.text else text
