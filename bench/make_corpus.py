"""Build a benchmark corpus shaped like real corpora, from real text.

Every document has a named shape, kept in its record as meta.shape so benchmarks can report per shape:

  web_page               a web page as C4 publishes it: one paragraph per line, single newlines
  blank_line_paragraphs  paragraphs separated by blank lines, sometimes runs of them, CRLF, trailing spaces
  list_page              a few paragraphs and lists: "- ", "* ", "• ", "1. ", "1) " items of a few words
  code                   a window of a real source file (the Python standard library, the C/C++ of pyarrow
                         and numpy as installed here), meta.language says which
  book                   runs of paragraphs of a novel (botchan.txt), hard-wrapped, blank lines between
  foreign                a page in another language (OSCAR lines, Leipzig sentences), meta.language
  site_template          real paragraphs inside one of a dozen sites' own header, menu, footer, legal and
                         cookie lines, meta.site
  boilerplate            menus, repeated lines, lorem ipsum, very short pages (meta.kind)
  broken                 invalid UTF-8 bytes, no text field, a null text (meta.kind)

Text comes from ../shared/data (C4, dolma's Common Crawl pages, OSCAR, Leipzig sentences, a Gutenberg
novel), or from the C4 sample the project bundles where that folder is absent (foreign and book are then
left out of the mix and listed as unavailable). Pages are spliced from runs of consecutive lines of
different real pages, so local structure stays as published while documents stay distinct.

build() writes SOURCE/part-NNNNN.jsonl.zst files of about --file-mb of text each under OUT, with 10% of
documents planted exact copies of earlier ones (meta.duplicate_of). With --near-share, that share of the
bytes are families of near-duplicates: a page and copies with words replaced at 0.2% to 30% (true Jaccard
from ~1 down to ~0.2), each (original, copy) pair listed in OUT.pairs.jsonl as ground truth. Counts per
shape land in OUT.corpus.json.

    python bench/make_corpus.py --mb 100 --out bench/out/corpus-100 [--near-share 0.1]
        [--shapes web_page=3,code=1] [--seed 0] [--data DIR] [--from FILES...]

Other scripts take documents without writing a corpus (text is bytes for broken/invalid_utf8 and absent
or None for the other broken kinds):

    from make_corpus import SHAPES, shaped_documents  # bench/ on sys.path, or: from bench.make_corpus ...
    for shape in SHAPES: docs = list(shaped_documents(200, shapes={shape: 1}, seed=1))
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import json
import random
import re
import sysconfig
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import zstandard

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "pipeline" / "sample" / "c4" / "c4-en-train-00000-first600.jsonl.zst"

# A web crawl after text extraction: mostly pages, a good share of templated and junk pages, some
# other languages, a little code and books, a few broken records. Relative weights per document.
DEFAULT_MIX = {
    "web_page": 0.32,
    "blank_line_paragraphs": 0.16,
    "site_template": 0.15,
    "list_page": 0.08,
    "foreign": 0.10,
    "boilerplate": 0.12,
    "code": 0.045,
    "book": 0.022,
    "broken": 0.003,
}
SOURCES = {"cc": 0.75, "news": 0.25}
DUPLICATE_SHARE = 0.10
NEAR_RATES = [0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3]
NEAR_MIN_CHARS = 1000  # near-dup families need pages long enough to survive the length filter and shingle well

CODE_LANGUAGES = {
    ".py": "python",
    ".pyx": "cython",
    ".c": "c",
    ".h": "c",
    ".cc": "c++",
    ".cpp": "c++",
    ".hpp": "c++",
    ".js": "javascript",
    ".sh": "shell",
}
CODE_PACKAGES = ("pyarrow", "numpy")  # dependencies of slimpipe, so installed wherever the bench runs
NO_SPACE_LANGUAGES = {"ja", "zh", "th"}  # sentences are joined without spaces

NAV_ITEMS = [
    "Home",
    "About",
    "About Us",
    "Blog",
    "News",
    "Shop",
    "Products",
    "Services",
    "Events",
    "Contact",
    "Contact Us",
    "FAQ",
    "Support",
    "Careers",
    "Resources",
    "Gallery",
    "Log in",
    "Register",
    "My Account",
    "Cart (0)",
    "Search",
    "Menu",
    "Subscribe",
    "Donate",
    "Sitemap",
]
FOOTER_LINES = [
    "Privacy Policy | Terms of Use | Sitemap",
    "Privacy Policy",
    "Terms and Conditions",
    "Follow us on Facebook, Twitter and Instagram",
    "Sign up for our newsletter",
    "Enter your email address",
    "Powered by WordPress",
    "Back to top",
    "Share this:",
    "Leave a Reply Cancel reply",
    "Related Posts",
    "Designed by {name} Web Team",
    "Call us: +1 (555) 010-{phone}",
    "{name} is a registered trademark of {name} Inc.",
]
COOKIE_NOTICES = [
    "This website uses cookies to improve your experience. We'll assume you're ok with this, but you can "
    "opt-out if you wish. Accept Read More",
    "We use cookies to ensure that we give you the best experience on our website. If you continue to use "
    "this site we will assume that you are happy with it. Ok",
    "By continuing to browse this site you agree to our use of cookies. Find out more in our Cookie Policy.",
]
LEGAL_LINES = [
    "© {year} {name}. All rights reserved.",
    "Copyright © {year} {name} | All Rights Reserved",
    "All content © {year} {name}",
]
ERROR_PAGES = [
    "404 Not Found\nThe requested URL was not found on this server.",
    "Page not found\nSorry, the page you are looking for does not exist.",
    "Access Denied\nYou don't have permission to access this page.",
    "Please enable JavaScript to view this website.",
    "This site is currently under maintenance. Please check back soon.",
    "Loading...",
]
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
    "ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore "
    "eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia "
    "deserunt mollit anim id est laborum."
)
BULLETS = ["- ", "* ", "• ", "· ", "– ", "{}. ", "{}) "]
# What broken crawls put in text: a stray byte, a Latin-1 accent, a truncated sequence, an encoded surrogate.
INVALID_BYTES = [b"\xff", b"\xe9", b"\x80", b"\xc3(", b"\xf0\x9f\x98", b"\xed\xa0\x80"]


# ---- real text -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Language:
    lines: list[str]  # lines of real pages (OSCAR)
    sentences: list[str]  # sentences of news and web text (Leipzig, via lingua-py's test data)


@dataclass(frozen=True)
class Pools:
    """The real text that shapes draw from."""

    pages: list[list[str]]  # English web pages, each as its non-empty lines
    domains: list[str]  # real domains of those pages, for site names and URLs
    menus: list[str]  # short navigation lines of raw crawled pages
    foreign: dict[str, Language]
    book: list[str]  # paragraphs of a novel, hard-wrapped as published
    code: list[Path]


def read_jsonl(path: Path) -> list[dict]:
    raw = path.read_bytes()
    if path.name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    elif path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return [json.loads(line) for line in raw.split(b"\n") if line.strip()]


def page_records(data: Path, extra: Sequence[Path]) -> list[dict]:
    """C4 and dolma's CCNet pages from the shared data, else the bundled C4 sample; plus --from .jsonl files."""
    c4 = data / "c4-en-1k" / "c4_sample.jsonl"
    files = [c4, *sorted((data / "dolma-tests" / "multiple_files").glob("*.jsonl"))] if c4.exists() else [SAMPLE]
    return [r for path in files + [p for p in extra if p.name.endswith(".jsonl")] for r in read_jsonl(path)]


def non_empty_lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def oscar_documents(path: Path) -> tuple[str, list[str]]:
    """(language from the file name, documents): OSCAR separates documents by blank lines."""
    match = re.search(r"_([a-z]+)\.txt\.gz$", path.name)
    text = gzip.open(path, "rt", encoding="utf-8").read()
    return (match.group(1) if match else "und"), [d for d in re.split(r"\n\s*\n", text) if d.strip()]


def load_foreign(data: Path, oscar_files: list[Path]) -> tuple[dict[str, Language], list[list[str]]]:
    """(non-English languages with enough text to make distinct pages, English OSCAR pages)."""
    lines: dict[str, list[str]] = {}
    english: list[list[str]] = []
    for path in oscar_files:
        lang, documents = oscar_documents(path)
        if lang == "en":
            english.extend(non_empty_lines(d) for d in documents)
        else:
            lines.setdefault(lang, []).extend(line for d in documents for line in non_empty_lines(d))
    sentences = {
        p.stem: non_empty_lines(p.read_text(encoding="utf-8"))
        for p in sorted((data / "lingua-langid-testdata" / "sentences").glob("*.txt"))
        if p.stem != "en"
    }
    languages = {lang: Language(lines.get(lang, []), sentences.get(lang, [])) for lang in sorted({*lines, *sentences})}
    return {k: v for k, v in languages.items() if len(v.sentences) >= 100 or len(v.lines) >= 20}, english


def menu_lines(data: Path) -> list[str]:
    """Short lines without final punctuation from dolma's raw (unfiltered) crawled pages: real menus."""
    path = data / "dolma-tests" / "provided" / "documents" / "000.json.gz"
    if not path.exists():
        return NAV_ITEMS
    lines = [line for r in read_jsonl(path) for line in non_empty_lines(r["text"])]
    return sorted({line for line in lines if len(line.split()) <= 4 and line[-1] not in ".!?"})


def book_paragraphs(path: Path) -> list[str]:
    """Paragraphs of a Project Gutenberg text stripped of blank lines: the licence before and after the book
    goes, and a line well short of the ~72-column wrap ends a paragraph."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8-sig")
    start = text.index("\n", text.index("*** START")) + 1
    paragraphs, current = [], []
    for line in text[start : text.index("*** END")].splitlines():
        current.append(line.rstrip())
        if len(line.rstrip()) < 60:
            paragraphs.append("\n".join(current))
            current = []
    return [p for p in paragraphs if p.strip()]


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def code_files() -> list[Path]:
    """Source files of the standard library and of CODE_PACKAGES, sorted so a seed picks the same files wherever
    the same versions are installed. Files under 3 kB (mostly a licence header) and the codec tables of
    `encodings` are left out: they are near-copies of each other and would plant near-duplicates unawares."""
    roots = [Path(sysconfig.get_paths()["stdlib"])] + [d for d in map(package_dir, CODE_PACKAGES) if d]
    skip = {"site-packages", "test", "tests", "__pycache__", "encodings"}
    files = []
    for root in roots:
        for path in root.rglob("*"):
            if (
                path.suffix in CODE_LANGUAGES
                and not set(path.relative_to(root).parts) & skip
                and path.is_file()
                and 3000 < path.stat().st_size < 300_000
            ):
                files.append(path)
    return sorted(files)


@lru_cache(maxsize=512)
def source_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").split("\n")


@lru_cache(maxsize=4)
def load_pools(data: Path = DATA, extra: tuple[Path, ...] = ()) -> Pools:
    records = page_records(data, extra)
    oscar = sorted((data / "oscar2019-hf-dummy").glob("unshuffled_deduplicated_*.txt.gz"))
    foreign, oscar_english = load_foreign(data, oscar + [p for p in extra if p.name.endswith(".txt.gz")])
    pages = [lines for lines in (non_empty_lines(r["text"]) for r in records) if lines] + oscar_english
    domains = sorted({urlsplit(r["url"]).hostname for r in records if r.get("url")} - {None}) or ["example.org"]
    return Pools(
        pages, domains, menu_lines(data), foreign, book_paragraphs(data / "spm-models" / "botchan.txt"), code_files()
    )


# ---- shapes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    domain: str
    header: list[str]
    footer: list[str]
    separator: str


@dataclass
class Context:
    rng: random.Random
    pools: Pools
    sites: list[Site]


def make_site(rng: random.Random, domain: str) -> Site:
    """One site's template: the same header, menu, footer, legal and cookie lines on every page."""
    name = domain.removeprefix("www.").split(".")[0].replace("-", " ").title()
    fill = {"name": name, "year": rng.randint(2009, 2023), "phone": f"{rng.randrange(10_000):04d}"}
    nav = rng.sample(NAV_ITEMS, rng.randint(4, 9))
    skip_link = ["Skip to content"] if rng.random() < 0.5 else []
    header = [name, *skip_link, *([" | ".join(nav)] if rng.random() < 0.5 else nav)]
    footer = [line.format(**fill) for line in rng.sample(FOOTER_LINES, rng.randint(2, 6))]
    footer += [rng.choice(COOKIE_NOTICES), rng.choice(LEGAL_LINES).format(**fill)]
    rng.shuffle(footer)
    return Site(domain, header, footer, rng.choice(["\n", "\n", "\n\n"]))


def make_sites(rng: random.Random, pools: Pools, count: int = 12) -> list[Site]:
    return [make_site(rng, d) for d in rng.sample(pools.domains, min(count, len(pools.domains)))]


def spliced_lines(c: Context, count: int) -> list[str]:
    """`count` lines in runs of 1-4 consecutive lines of random pages: order as published, documents distinct."""
    lines: list[str] = []
    while len(lines) < count:
        page = c.rng.choice(c.pools.pages)
        start = c.rng.randrange(len(page))
        lines.extend(page[start : start + c.rng.randint(1, 4)])
    return lines[:count]


def short_phrase(c: Context, lo: int = 2, hi: int = 10) -> str:
    """The first words of a real sentence: what list items, headings and short pages are made of."""
    sentence = c.rng.choice(re.split(r"(?<=[.!?])\s+", c.rng.choice(c.rng.choice(c.pools.pages))))
    words = sentence.split()
    return sentence if len(words) <= hi else " ".join(words[: c.rng.randint(lo, hi)]).rstrip(",;:")


def page_url(c: Context, domain: str | None = None) -> str:
    return f"https://{domain or c.rng.choice(c.pools.domains)}/{c.rng.randint(2009, 2023)}/{c.rng.randrange(10**6)}"


def web_page(c: Context) -> dict:
    return {"text": "\n".join(spliced_lines(c, c.rng.randint(2, 12))), "url": page_url(c)}


def blank_line_paragraphs(c: Context) -> dict:
    """Paragraphs between blank lines, the layout Markdown, forums and many extractors produce."""
    rng = c.rng
    paragraphs = spliced_lines(c, rng.randint(3, 15))
    text = paragraphs[0] + "".join(
        rng.choice(["\n\n"] * 6 + ["\n\n\n", "\n\n\n\n", "\n \n"]) + p for p in paragraphs[1:]
    )
    if rng.random() < 0.3:
        text = "\n".join(line + " " * rng.choice([0, 0, 1, 2]) for line in text.split("\n"))
    if rng.random() < 0.2:
        text = text.replace("\n", "\r\n")
    return {"text": text + rng.choice(["", "", "\n", "\n\n"]), "url": page_url(c)}


def list_block(c: Context) -> list[str]:
    """An optional heading and 3-15 short items under one bullet style, a few with nested sub-items."""
    rng = c.rng
    style = rng.choice(BULLETS)
    lines = [short_phrase(c, 1, 5) + ":"] if rng.random() < 0.6 else []
    for i in range(1, rng.randint(3, 15) + 1):
        lines.append(style.format(i) + short_phrase(c))
        if rng.random() < 0.1:
            lines.append("  " + rng.choice(["- ", "* ", "o "]) + short_phrase(c))
    return lines


def list_page(c: Context) -> dict:
    rng = c.rng
    blocks = [spliced_lines(c, rng.randint(0, 2))] + [list_block(c) for _ in range(rng.randint(1, 3))]
    blocks.append(spliced_lines(c, rng.randint(0, 1)))
    separator = rng.choice(["\n", "\n\n"])
    return {"text": separator.join("\n".join(b) for b in blocks if b), "url": page_url(c)}


def code(c: Context) -> dict:
    """A window of 20-400 lines of a source file: the same file rarely yields the same window twice."""
    rng = c.rng
    path = rng.choice(c.pools.code)
    lines = source_lines(path)
    start = rng.randrange(max(1, len(lines) - 20))
    text = "\n".join(lines[start : start + rng.randint(20, 400)])
    return {
        "text": text,
        "url": f"https://example.org/src/{path.parent.name}/{path.name}",
        "meta": {"language": CODE_LANGUAGES[path.suffix]},
    }


def book(c: Context) -> dict:
    """4-25 paragraphs in runs of consecutive ones, as book corpora keep them: hard wraps, blank lines."""
    rng = c.rng
    paragraphs = c.pools.book
    chosen: list[str] = []
    wanted = rng.randint(4, 25)
    while len(chosen) < wanted:
        start = rng.randrange(len(paragraphs))
        chosen.extend(paragraphs[start : start + rng.randint(1, 6)])
    return {"text": "\n\n".join(chosen), "url": f"https://example.org/books/botchan/{rng.randrange(10**6)}"}


def foreign_paragraph(rng: random.Random, lang: str, language: Language) -> str:
    """A real page line (OSCAR) half the time where there are some, else 1-5 of the language's sentences."""
    if language.lines and (not language.sentences or rng.random() < 0.5):
        return rng.choice(language.lines)
    joiner = "" if lang in NO_SPACE_LANGUAGES else " "
    return joiner.join(rng.sample(language.sentences, rng.randint(1, 5)))


def foreign(c: Context) -> dict:
    rng = c.rng
    lang = rng.choice(sorted(c.pools.foreign))
    paragraphs = [foreign_paragraph(rng, lang, c.pools.foreign[lang]) for _ in range(rng.randint(2, 8))]
    return {"text": "\n".join(paragraphs), "url": page_url(c), "meta": {"language": lang}}


def site_template(c: Context) -> dict:
    rng = c.rng
    site = rng.choice(c.sites)
    body = spliced_lines(c, rng.randint(2, 8))
    byline = [f"Posted on {rng.choice(['March', 'June', 'October'])} {rng.randint(1, 28)}, 2019 by admin"]
    lines = site.header + (byline if rng.random() < 0.5 else []) + body + site.footer
    return {"text": site.separator.join(lines), "url": page_url(c, site.domain), "meta": {"site": site.domain}}


def lorem_ipsum(c: Context) -> str:
    rng = c.rng
    words = LOREM.lower().replace(",", "").replace(".", "").split()
    paragraphs = []
    for _ in range(rng.randint(1, 4)):
        sentences = [
            " ".join(rng.choices(words, k=rng.randint(6, 14))).capitalize() + "." for _ in range(rng.randint(3, 7))
        ]
        paragraphs.append(" ".join(sentences))
    if rng.random() < 0.5:
        paragraphs[0] = LOREM.split(", sed")[0] + ". " + paragraphs[0]  # the canonical opening, pages still distinct
    return rng.choice(["\n", "\n\n"]).join(paragraphs)


def menu_page(c: Context) -> str:
    return "\n".join(c.rng.choice(c.pools.menus) for _ in range(c.rng.randint(5, 40)))


def repeated_lines(c: Context) -> str:
    """A product grid or comment widget: the same few short lines again and again after one real line."""
    block = [short_phrase(c, 2, 6) for _ in range(c.rng.randint(1, 3))]
    return "\n".join(spliced_lines(c, 1) + block * c.rng.randint(4, 20))


def short_page(c: Context) -> str:
    return c.rng.choice(ERROR_PAGES) if c.rng.random() < 0.3 else short_phrase(c, 3, 12)


BOILERPLATE: dict[str, Callable[[Context], str]] = {
    "menu": menu_page,
    "repeated_lines": repeated_lines,
    "lorem_ipsum": lorem_ipsum,
    "short_page": short_page,
}


def boilerplate(c: Context) -> dict:
    kind = c.rng.choice(sorted(BOILERPLATE))
    return {"text": BOILERPLATE[kind](c), "url": page_url(c), "meta": {"kind": kind}}


def with_invalid_bytes(rng: random.Random, text: str) -> bytes:
    """The text's UTF-8 with 1-5 invalid byte sequences put after spaces."""
    data = text.encode()
    spaces = [i for i, b in enumerate(data) if b == 0x20] or [len(data)]
    for i in sorted(rng.sample(spaces, min(len(spaces), rng.randint(1, 5))), reverse=True):
        data = data[: i + 1] + rng.choice(INVALID_BYTES) + data[i + 1 :]
    return data


def broken(c: Context) -> dict:
    doc = web_page(c)
    kind = c.rng.choice(["invalid_utf8", "missing_text", "null_text"])
    if kind == "invalid_utf8":
        doc["text"] = with_invalid_bytes(c.rng, doc["text"])
    elif kind == "missing_text":
        del doc["text"]
    else:
        doc["text"] = None
    return {**doc, "meta": {"kind": kind}}


SHAPES: dict[str, Callable[[Context], dict]] = {
    f.__name__: f
    for f in (web_page, blank_line_paragraphs, list_page, code, book, foreign, site_template, boilerplate, broken)
}
NEEDS = {"code": "code", "book": "book", "foreign": "foreign"}  # shape -> the Pools field it cannot do without


# ---- documents -------------------------------------------------------------------------------------------


def parse_shapes(spec: str) -> dict[str, float]:
    """'web_page=3,code=1' (a name alone weighs 1) -> {'web_page': 3.0, 'code': 1.0}."""
    mix = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, weight = item.partition("=")
        mix[name.strip()] = float(weight) if weight else 1.0
    return mix


def unavailable_shapes(pools: Pools) -> list[str]:
    return sorted(shape for shape, field in NEEDS.items() if not getattr(pools, field))


def requested_mix(shapes: Mapping[str, float] | str | None) -> dict[str, float]:
    """The mix given as a mapping or as 'name=weight,...'; the default when None."""
    return parse_shapes(shapes) if isinstance(shapes, str) else dict(DEFAULT_MIX if shapes is None else shapes)


def usable_mix(shapes: Mapping[str, float] | str | None, pools: Pools) -> dict[str, float]:
    """The mix asked for without the shapes whose text is not here."""
    mix = requested_mix(shapes)
    unknown = set(mix) - set(SHAPES)
    if unknown:
        raise ValueError(f"unknown shapes {sorted(unknown)}; known: {sorted(SHAPES)}")
    usable = {k: w for k, w in mix.items() if w > 0 and k not in unavailable_shapes(pools)}
    if not usable:
        raise ValueError(
            f"none of the shapes {sorted(mix)} has its source text here (unavailable: "
            f"{unavailable_shapes(pools)}, they need the shared data folder: --data)"
        )
    return usable


def text_size(doc: dict) -> int:
    text = doc.get("text")
    return len(text) if isinstance(text, bytes) else len(text.encode()) if text else 0


def shaped_documents(
    n: int | None = None,
    *,
    text_bytes: int | None = None,
    seed: int | str = 0,
    shapes: Mapping[str, float] | str | None = None,
    duplicate_share: float = 0.0,
    id_prefix: str = "doc",
    data: Path = DATA,
    extra: Sequence[Path] = (),
) -> Iterator[dict]:
    """Documents {id, text, url, meta: {shape, ...}} drawn from the shapes in the proportions `shapes` gives
    (the default mix when None), until `n` documents or `text_bytes` bytes of text (endless with neither).
    With duplicate_share, that share are exact copies of an earlier one (meta.duplicate_of its id)."""
    pools = load_pools(data, tuple(extra))
    mix = usable_mix(shapes, pools)
    rng = random.Random(seed)
    c = Context(rng, pools, make_sites(rng, pools))
    recent: list[dict] = []
    count = size = 0
    while (n is None or count < n) and (text_bytes is None or size < text_bytes):
        doc_id = f"{id_prefix}-{count}"
        if recent and rng.random() < duplicate_share:
            original = rng.choice(recent)
            doc = {**original, "id": doc_id, "meta": {**original["meta"], "duplicate_of": original["id"]}}
        else:
            name = rng.choices(list(mix), list(mix.values()))[0]
            shaped = SHAPES[name](c)
            doc = {"id": doc_id, **shaped, "meta": {"shape": name, **shaped.get("meta", {})}}
            remember(recent, doc, rng)
        count += 1
        size += text_size(doc)
        yield doc


def remember(recent: list[dict], doc: dict, rng: random.Random, keep: int = 5000) -> None:
    """Keep a bounded random set of earlier documents with a real text to copy as planted duplicates."""
    if isinstance(doc.get("text"), str):
        recent.append(doc)
        if len(recent) > keep:
            recent.pop(rng.randrange(len(recent)))


def record_line(doc: dict) -> bytes:
    """One JSONL line; a bytes text goes in raw, invalid UTF-8 and all, as a broken crawl writes it."""
    if isinstance(doc.get("text"), bytes):
        doc = {**doc, "text": doc["text"].decode("utf-8", "surrogateescape")}
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n"


def corpus_records(corpus: Path) -> Iterator[dict]:
    """A built corpus's records as slimpipe's reader keeps them: invalid UTF-8 replaced with U+FFFD, records
    without a string text left out (the reader rejects those)."""
    for path in sorted(corpus.rglob("*.jsonl.zst")):
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
        for line in raw.split(b"\n"):
            if line.strip():
                record = json.loads(line.decode("utf-8", "replace"))
                if isinstance(record.get("text"), str):
                    yield record


# ---- corpus on disk --------------------------------------------------------------------------------------


class Writer:
    """SOURCE/part-NNNNN.jsonl.zst files, records dealt round-robin; counts per shape into `tally`."""

    def __init__(self, folder: Path, files: int, tally: dict):
        folder.mkdir(parents=True, exist_ok=True)
        self.files = [
            zstandard.ZstdCompressor(level=3).stream_writer((folder / f"part-{i:05d}.jsonl.zst").open("wb"))
            for i in range(files)
        ]
        self.tally = tally
        self.count = self.bytes = 0

    def write(self, doc: dict) -> None:
        self.files[self.count % len(self.files)].write(record_line(doc))
        size = text_size(doc)
        entry = self.tally.setdefault(doc["meta"]["shape"], {"documents": 0, "bytes": 0})
        entry["documents"] += 1
        entry["bytes"] += size
        self.count += 1
        self.bytes += size

    def close(self) -> None:
        for f in self.files:
            f.close()


def file_count(budget: int, file_mb: float) -> int:
    return max(1, round(budget / (file_mb * 1e6)))


def replace_words(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    """Each word replaced with probability `rate`, whitespace and line layout kept."""
    return re.sub(r"\S+", lambda m: rng.choice(vocab) if rng.random() < rate else m.group(), text)


def without_broken(shapes: Mapping[str, float] | str | None = None) -> dict[str, float]:
    """The mix without broken records, for corpora that readers which stop at an invalid byte must read."""
    return {k: w for k, w in requested_mix(shapes).items() if k != "broken"}


def near_base_mix(shapes: Mapping[str, float] | str | None) -> dict[str, float]:
    """Families are made from real pages: junk and broken records would not reach near-dedup at all."""
    return {k: w for k, w in requested_mix(shapes).items() if k not in ("boilerplate", "broken")} or {"web_page": 1.0}


def write_near_families(
    budget: int,
    out: Path,
    seed: int,
    file_mb: float,
    shapes: Mapping[str, float] | str | None,
    data: Path,
    extra: Sequence[Path],
    tally: dict,
) -> dict:
    rng = random.Random(f"{seed}-near-edits")
    pools = load_pools(data, tuple(extra))
    vocab = sorted({w for page in pools.pages[:300] for line in page for w in line.split()})
    bases = (
        d
        for d in shaped_documents(seed=f"{seed}-near", shapes=near_base_mix(shapes), data=data, extra=extra)
        if len(d["text"]) >= NEAR_MIN_CHARS
    )
    writer = Writer(out / "near", file_count(budget, file_mb), tally)
    n = 0
    with out.with_name(out.name + ".pairs.jsonl").open("w") as pairs:
        while writer.bytes < budget:
            base = next(bases)
            for k, rate in enumerate([0.0] + NEAR_RATES):
                text = replace_words(base["text"], rate, rng, vocab) if rate else base["text"]
                meta = {**base["meta"], "near_family": n, "replace_rate": rate}
                writer.write({"id": f"near-{n}-{k}", "text": text, "url": f"{base['url']}?v={k}", "meta": meta})
                if k:
                    pairs.write(json.dumps({"a": f"near-{n}-0", "b": f"near-{n}-{k}", "rate": rate}) + "\n")
            n += 1
    writer.close()
    return {"near_families": n, "near_bytes": writer.bytes}


def build(
    mb: float,
    out: Path,
    extra: Sequence[Path],
    seed: int = 0,
    file_mb: float = 8.0,
    near_share: float = 0.0,
    shapes: Mapping[str, float] | str | None = None,
    data: Path = DATA,
) -> dict:
    """Write the corpus; returns (and stores in OUT.corpus.json) what was written, per shape too: `bytes` and
    `documents` count the web sources, `shapes` every record including near-duplicate families."""
    target = int(mb * 1e6 * (1 - near_share))
    tally: dict = {}
    written = {"documents": 0, "bytes": 0, "planted_duplicates": 0}
    for source, share in SOURCES.items():
        budget = int(target * share)
        writer = Writer(out / source, file_count(budget, file_mb), tally)
        for doc in shaped_documents(
            text_bytes=budget,
            seed=f"{seed}-{source}",
            shapes=shapes,
            duplicate_share=DUPLICATE_SHARE,
            id_prefix=source,
            data=data,
            extra=extra,
        ):
            writer.write(doc)
            written["planted_duplicates"] += "duplicate_of" in doc["meta"]
        writer.close()
        written["documents"] += writer.count
        written["bytes"] += writer.bytes
    if near_share:
        written.update(write_near_families(int(mb * 1e6 * near_share), out, seed, file_mb, shapes, data, extra, tally))
    written["shapes"] = dict(sorted(tally.items()))
    written["shapes_unavailable"] = unavailable_shapes(load_pools(data, tuple(extra)))
    out.with_name(out.name + ".corpus.json").write_text(json.dumps(written, indent=2))
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=100.0, help="text megabytes to write")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--from",
        dest="extra",
        type=Path,
        nargs="*",
        default=[],
        help="more real text: C4-style .jsonl files (pages) or OSCAR .txt.gz files (by language)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file-mb", type=float, default=8.0, help="text megabytes per file")
    p.add_argument("--near-share", type=float, default=0.0, help="share of bytes in near-duplicate families")
    p.add_argument(
        "--shapes",
        help="the mix, name=weight,... (default: " + ",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items()) + ")",
    )
    p.add_argument("--data", type=Path, default=DATA, help="the shared real-text folder")
    args = p.parse_args()
    print(
        json.dumps(
            build(args.mb, args.out, args.extra, args.seed, args.file_mb, args.near_share, args.shapes, args.data)
        )
    )


if __name__ == "__main__":
    main()
