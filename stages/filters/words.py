"""Words as the reference filters count them.

datatrove (the implementation FineWeb ran) counts English words with spaCy's rule-based
tokenizer: punctuation comes off a word's ends one mark at a time, "'s", "n't" and the like are
words of their own, hyphens between letters and "/", ":", "=", "," between letters split a word,
and abbreviations ("U.S.", "e.g.", "Mr.") keep their period. spaCy does that at about 0.5 MB/s
per core; `words` does the same with one regular expression, run once per distinct piece of text
between spaces (pieces recur), and puts 99.7% of its words where spaCy puts them on the 3,761
pages, books and code files of the reference fixture (`bench/filters_reference.py write` says).
What is left is mostly source code ("---+---" runs, "-Infinity").

`sentence_count` is spaCy's sentencizer over those words: a sentence ends after a word that is a
terminal mark, once a word that is not punctuation follows.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import chain
from typing import cast

# Marks that come off a word's ends one at a time (spaCy's prefixes and suffixes, currency signs).
_EDGE = "()\\[\\]{}<>,:;!?¿¡_#*&\"“”‘’'`´«»„‚§%=—–$£€¥₹₩₽。？！，、；：～·।،۔؛٪「」『』（）〔〕【】《》〈〉"
# Symbols and pictographs: each is a word of its own.
_ICONS = (
    "\u00a6\u00a9\u00ae\u00b0\u2100-\u214f\u2190-\u21ff\u2300-\u23ff\u2460-\u27bf\u2900-\u2bff\U0001f000-\U0001faff"
)
_LETTER = r"[^\W\d_]"
_CORE = rf"[^\s{_EDGE}.\-–—~/+{_ICONS}]"
_CLITIC = r"['’](?:[sSmMdD]|re|RE|ve|VE|ll|LL)(?!\w)"
_UNITS = r"(?:km|cm|mm|m|kg|mg|g|lb|lbs|oz|ft|yd|mph|kmh|ha|GB|MB|KB|TB|gb|mb|kb|tb|G|M|K|T)"
_ABBREVIATIONS = (
    "Mr|Mrs|Ms|Dr|St|Jr|Sr|Inc|Ltd|Co|Corp|vs|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Mt|Gov"
    "|Gen|Sen|Rep|Rev|Prof|[a-zA-Z]"
)
# What may join two runs of word characters into one word: a period unless it stands between a
# lower-case and an upper-case letter, a hyphen unless letters or digits stand on both sides, an
# apostrophe that starts no clitic, "," and ":<>=/" unless a letter follows, other marks inside.
_JOIN = (
    rf"(?=[.\-–—~'’,:<>=/()\[\]{{}}_#*&;!?\"“”‘`´«»„‚§%+$£€¥])"
    rf"(?:\.(?<![a-z]\.(?=[A-Z]))"
    rf"|[-–—~](?<={_LETTER}.)(?=\d)|[-–—~]+(?<![\w][-–—~])"
    rf"|(?!{_CLITIC})['’]"
    rf"|,(?<!{_LETTER},)|,(?!{_LETTER})"
    rf"|[:<>=/](?<!\w.)|[:<>=/](?!{_LETTER})"
    rf"|[()\[\]{{}}_#*&;!?\"“”‘`´«»„‚§%+$£€¥])"
)
_END = r"""(?=\s|$|[,;:!?)\]"”](?!\w))"""
_WORD = re.compile(
    rf"""
 (?:https?|ftp)://\S*?(?=[.,;:!?)\]"'”’]*(?:\s|$))|www\.\S*?(?=[.,;:!?)\]"'”’]*(?:\s|$))   # URLs
|[a-z]{{2,}}+(?:{_END}|(?=\.(?!\w)))(?<!\bvs)(?<!nt)(?<!not)(?<!na)(?<!ta)  # most words: fast path
|[A-Z][a-z]++{_END}(?<!\bIm)
|[,!?"“”\]]|\.(?!\.)                                                            # lone marks: fast path
|\.{{2,}}|…+|[-–—~]{{2,}}                                                        # ellipses, dash runs
|(?:{_LETTER}\.){{2,}}(?={_LETTER}|[\s)\]"'”’,;:!?]|$)                           # U.S., e.g.
|(?:{_ABBREVIATIONS})\.(?=[\s)\]"'”’,;:!?]|$)
|{_LETTER}+?(?=n['’]t(?!\w))|n['’]t(?!\w)|{_CLITIC}                              # do n't, it 's
|(?<!\w)(?:[Cc]an(?=not(?!\w))|[Dd]o(?=nt(?!\w))|[Cc]a(?=nt(?!\w))|[Gg]on(?=na(?!\w))|[Gg]ot(?=ta(?!\w))
   |I(?=m(?!\w))|and/or(?!\w))
|\d+(?={_UNITS}(?!\w))                                                           # 10 km
|(?:\):|\(:|:\)|:\(|;\)|=\)|\(=|:'\)|:'\(|:/|:\]|:\||8\)|''|’’|-=)(?=\s|$)                      # emoticons
|(?:(?<!\S)-+(?={_CORE})|\+(?=\d))?{_CORE}+(?:{_JOIN}+{_CORE}+)*(?:(?<={_LETTER})\++)?
|[{_ICONS}]|\S
""",
    re.VERBOSE,
)

# The marks after which the reference's sentencizer (spaCy's) starts a new sentence, in every
# script that has its own.
SENTENCE_ENDS = frozenset(
    "!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877"
    "\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61"
    "\U00010a56\U00010a57\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142"
    "\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c"
    "\U000112a9\U0001144b\U0001144c"
    + "".join(map(chr, range(0x115C2, 0x115C4)))
    + "".join(map(chr, range(0x115C9, 0x115D8)))
    + "\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41"
    "\U00011c42\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U0001bc9f\U0001da88"
)
# The marks the reference counts as terminal punctuation at the end of a line (FineWeb's rule)
# and among punctuation (Gopher's): the sentencizer's and some more.
TERMINAL_PUNCTUATION = SENTENCE_ENDS | frozenset(
    "؝؞࠷࠹࠽࠾។៕៖៙៚᭽᭾⹓⹔"
    + "".join(
        map(
            chr,
            [
                *range(0x10F55, 0x10F5A),
                *range(0x10F86, 0x10F8A),
                0x11944,
                0x11946,
                0x11EF7,
                0x11EF8,
                0x11F43,
                0x11F44,
                0x16E98,
            ],
        )
    )
)


# Words of each whitespace-separated piece of text seen lately. The reference splits each such
# piece on its own, and so does the expression (its look-arounds never cross whitespace), so a
# piece splits the same way wherever it stands; most pieces of a page ("the", "year,") recur.
# Only short pieces are kept: they are the ones that recur, and the memory stays bounded.
_PIECES: dict[str, tuple[str, ...]] = {}
_MAX_PIECES, _MAX_PIECE_CHARS = 200_000, 40


def words(text: str) -> list[str]:
    pieces = text.split()
    found: list[tuple[str, ...] | None] = list(map(_PIECES.get, pieces))
    if None in found:
        if len(_PIECES) > _MAX_PIECES:
            _PIECES.clear()
        for i, piece in enumerate(pieces):
            if found[i] is None:
                found[i] = split = tuple(_WORD.findall(piece))
                if len(piece) <= _MAX_PIECE_CHARS:
                    _PIECES[piece] = split
    return list(chain.from_iterable(cast(list[tuple[str, ...]], found)))  # every piece is split now


def _is_punct(word: str) -> bool:
    return all(unicodedata.category(ch).startswith("P") for ch in word)


def sentence_count(line_words: list[str]) -> int:
    if not line_words:
        return 0
    count, after_terminal = 1, False
    for word in line_words:
        if word in SENTENCE_ENDS:
            after_terminal = True
        elif after_terminal and not _is_punct(word):
            count, after_terminal = count + 1, False
    return count
