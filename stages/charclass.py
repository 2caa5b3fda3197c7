"""Regex character classes from sets of characters, written as runs ("a-z"): the engine tests
each run as one range, where characters listed one by one are tested one by one."""

from __future__ import annotations

import re
from collections.abc import Iterable


def char_class(codepoints: Iterable[int]) -> str:
    """The class matching exactly these code points (at least one)."""
    codes, parts = sorted(set(codepoints)), []
    start = prev = codes[0]
    for code in [*codes[1:], -1]:
        if code != prev + 1:
            parts.append(re.escape(chr(start)) + (f"-{re.escape(chr(prev))}" if prev > start else ""))
            start = code
        prev = code
    return "[" + "".join(parts) + "]"
