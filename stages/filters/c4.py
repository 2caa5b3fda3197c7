"""The C4 rules (Raffel et al. 2020, section 2.2), decided as the reference implementation
(datatrove's C4QualityFilter, which FineWeb ran) decides them. Each line, stripped, is dropped
if a word in it is longer than `max_word_length`, if (citations removed) it does not end in
terminal punctuation or ends in an ellipsis, if it has under `min_words_per_line` words, if it
mentions javascript or a cookie or terms-of-use notice. The page is dropped if a line that
passed the rules before it holds "lorem ipsum" or a curly bracket, or if the lines kept hold
fewer than `min_sentences` sentences (counted as the reference's sentencizer counts them).

The paper says pages of 5 sentences and lines of 3 words; the released TFDS code keeps lines of
5 words and pages of 3 sentences. Both are settings; the presets use the paper's numbers, as the
reference does. With `remove_bad_lines` (as C4 itself and FineWeb ran it) a kept page loses its
bad lines: its text becomes its kept lines, stripped and without citation marks, one per line.
Otherwise the text is left as it is and only the decision is made.
"""

from __future__ import annotations

import re

from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.doc import Doc
from slimpipe.stages.filters.words import sentence_count, words

_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
TERMINAL = (".", "?", "!", '"', "'")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Quality(Filter):
    name = "c4"

    def __init__(
        self,
        min_sentences: int,
        min_words_per_line: int,
        max_word_length: int,
        require_terminal_punct: bool,
        filter_lorem_ipsum: bool,
        filter_curly_bracket: bool,
        filter_javascript: bool,
        filter_policy: bool,
        remove_citations: bool,
        remove_bad_lines: bool,
    ):
        self.min_sentences, self.min_words = min_sentences, min_words_per_line
        self.max_word_length = max_word_length
        self.terminal = require_terminal_punct
        self.lorem, self.curly = filter_lorem_ipsum, filter_curly_bracket
        self.javascript, self.policy, self.citations = filter_javascript, filter_policy, remove_citations
        self.remove_bad_lines = remove_bad_lines

    def _judge_lines(self, doc: Doc) -> tuple[Rejection | None, list[str]]:
        """(the page's rejection or None, the lines kept). Stops early once the page has enough
        sentences, unless a later line could still drop the page or the kept lines are needed."""
        lower = doc.text.lower()
        # "lorem" alone: a citation mark may stand between the two words until it is removed
        page_rules_can_fire = (self.lorem and "lorem" in lower) or (self.curly and "{" in doc.text)
        stop_early = not page_rules_can_fire and not self.remove_bad_lines
        sentences, kept = 0, []
        for line in doc.text.splitlines():
            line = line.strip()
            line_words = line.split()
            if any(len(word) > self.max_word_length for word in line_words):
                continue
            if self.citations:
                line = _CITATION.sub("", line)
            if self.terminal and (not line.endswith(TERMINAL) or line.endswith("...")):
                continue
            if len(line_words) < self.min_words:
                continue
            line_lower = line.lower()
            if self.lorem and "lorem ipsum" in line_lower:
                return self.reject("lorem_ipsum", 1, 'a line holds "lorem ipsum"'), []
            if self.javascript and "javascript" in line_lower:
                continue
            if self.curly and "{" in line:
                return self.reject("curly_bracket", 1, "a line holds a curly bracket"), []
            if self.policy and any(p in line_lower for p in POLICY):
                continue
            sentences += sentence_count(words(line))
            kept.append(line)
            if stop_early and sentences >= self.min_sentences:
                return None, kept
        if sentences < self.min_sentences:
            return self.reject(
                "too_few_sentences",
                sentences,
                f"{sentences} sentences on lines that pass C4's line rules, under {self.min_sentences}",
            ), []
        return None, kept

    def _judged(self, doc: Doc) -> tuple[Rejection | None, list[str]]:
        """`_judge_lines` once per document: `edit` follows `check` on a kept page."""
        if self not in doc.memo:
            doc.memo[self] = self._judge_lines(doc)
        return doc.memo[self]

    def check(self, doc: Doc) -> Rejection | None:
        return self._judged(doc)[0]

    def edit(self, doc: Doc) -> str | None:
        if not self.remove_bad_lines:
            return None
        kept = self._judged(doc)[1]
        text = "\n".join(kept).strip()
        return None if text == doc.text else text
