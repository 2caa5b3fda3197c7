"""The rule filters against their reference, datatrove's own implementations (the ones FineWeb
ran), on real documents of several shapes.

Step 1, in an environment with datatrove (`pip install "datatrove[processing]" spacy`, its
English word tokenizer): build the documents from ../shared/data (or --data), run datatrove's
Gopher repetition, Gopher quality, C4 (with its defaults, and as FineWeb ran it: no terminal
punctuation rule) and FineWeb filters over each, and write the documents with the reference's
decisions to tests/data/filter_reference.jsonl.zst, the fixture the tests check against:

    python bench/filters_reference.py write

Step 2, in slimpipe's environment: our filters over the same documents, agreement per rule and
shape, and each disagreement (tests/test_filter_reference.py asserts the same figures):

    python bench/filters_reference.py compare [--show RULE]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parents[1]
FIXTURE = ROOT / "tests" / "data" / "filter_reference.jsonl.zst"
DATA = ROOT.parent / "shared" / "data"
# What we compare: (the reference rule, our filter, its settings changed from the presets). The
# Gopher rules are compared counting blank lines as the reference does, and as the presets set
# them ("_preset"): layout-free, which disagrees by design where blank lines tip a ratio.
RULES = {
    "gopher_repetition": ("gopher_repetition", "gopher_repetition", {"count_blank_lines": True}),
    "gopher_repetition_preset": ("gopher_repetition", "gopher_repetition", {}),
    "gopher_quality": ("gopher_quality", "gopher_quality", {"count_blank_lines": True}),
    "gopher_quality_preset": ("gopher_quality", "gopher_quality", {}),
    "c4": ("c4", "c4", {}),
    "c4_fineweb": ("c4_fineweb", "c4", {"require_terminal_punct": False}),
    "fineweb": ("fineweb", "fineweb", {}),
}


# ---- the documents, by shape ----


def c4_pages(data: Path) -> list[str]:
    return [json.loads(line)["text"] for line in (data / "c4-en-1k" / "c4_sample.jsonl").open(encoding="utf-8")]


def other_web_pages(data: Path) -> list[str]:
    """Dolma's CCNet-style English pages and OSCAR's English documents (blank-line separated)."""
    pages = [
        json.loads(line)["text"]
        for path in sorted((data / "dolma-tests").rglob("*.json*"))
        if "documents" in str(path) or "multiple_files" in str(path)
        for line in (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open())
    ]
    for path in sorted((data / "oscar2019-hf-dummy").glob("unshuffled_*_en.txt.gz")):
        pages += [d for d in gzip.open(path, "rt", encoding="utf-8").read().split("\n\n") if d.strip()]
    return pages


def book(data: Path) -> tuple[list[str], list[str]]:
    """A novel as scanned (hard-wrapped lines, 40 to a page) and cut into paragraphs (each one
    line, blank lines between, 12 to a document)."""
    lines = (data / "spm-models" / "botchan.txt").read_text(encoding="utf-8-sig").splitlines()
    pages = ["\n".join(lines[i : i + 40]) for i in range(0, len(lines), 40)]
    paragraphs, current = [], []
    for line in lines:  # a short line that ends a sentence ends its paragraph
        current.append(line.strip())
        if len(line) < 60 and line.rstrip().endswith((".", "?", "!", '"', "'")):
            paragraphs.append(" ".join(current))
            current = []
    return pages, ["\n\n".join(paragraphs[i : i + 12]) for i in range(0, len(paragraphs), 12)]


def code_files() -> list[str]:
    """Python's own standard library, cut into files of at most 6,000 characters."""
    lib = Path(json.__file__).parents[1]
    out = []
    for path in sorted(glob.glob(str(lib / "*.py")))[:120]:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        out += [text[i : i + 6000] for i in range(0, min(len(text), 18000), 6000)]
    return out


def list_pages(pages: list[str], rng: random.Random) -> list[str]:
    """Pages that are mostly lists: a page's sentences as bullet or numbered items, with or
    without an introduction."""
    out = []
    for page in pages:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", page.replace("\n", " ")) if s.strip()]
        if len(sentences) < 4:
            continue
        style = rng.choice(["- ", "• ", "* ", "numbered", "- "])
        items = [(f"{i + 1}. " if style == "numbered" else style) + s for i, s in enumerate(sentences[:40])]
        if rng.random() < 0.5:
            items = [s.rstrip(".") for s in items]  # list items often have no final stop
        head = [sentences[0]] if rng.random() < 0.5 else []
        out.append("\n".join(head + items))
    return out


def documents(data: Path) -> list[tuple[str, str]]:
    rng = random.Random(0)
    c4 = c4_pages(data)
    scanned, paragraphs = book(data)
    lists = list_pages(c4[:700], rng)
    shapes = {
        "c4": c4,
        "c4_blank_lines": [t.replace("\n", "\n\n") for t in c4],
        "dolma_oscar_en": other_web_pages(data),
        "book_scanned": scanned,
        "book_paragraphs": paragraphs,
        "code": code_files(),
        "lists": lists,
        "lists_blank_lines": [t.replace("\n", "\n\n") for t in lists],
    }
    return [(shape, text) for shape, texts in shapes.items() for text in texts]


# ---- step 1: the reference ----


def reference_decisions(texts: list[str]) -> dict[str, list]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4": C4QualityFilter(),
        "c4_fineweb": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb": FineWebQualityFilter(),
    }
    out = {}
    for rule, flt in filters.items():
        verdicts = [flt.filter(Document(text=t, id=str(i))) for i, t in enumerate(texts)]
        out[rule] = [None if v is True else v[1] for v in verdicts]  # the reference's reason, or kept
    return out


def token_agreement(texts: list[str]) -> float:
    """Share of the reference tokenizer's words that ours produces in the same place (our module
    is loaded by its path: it needs nothing but the standard library)."""
    import difflib
    import importlib.util

    from datatrove.utils.text import split_into_words

    spec = importlib.util.spec_from_file_location("words", ROOT / "stages" / "filters" / "words.py")
    ours = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ours)
    same = total = 0
    for text in texts:
        theirs, mine = split_into_words(text), ours.words(text)
        same += sum(
            block.size for block in difflib.SequenceMatcher(a=theirs, b=mine, autojunk=False).get_matching_blocks()
        )
        total += len(theirs)
    return same / total


def write(data: Path) -> None:
    import zstandard

    docs = documents(data)
    print(f"words placed as the reference's tokenizer places them: {token_agreement([t for _, t in docs]):.2%}")
    decisions = reference_decisions([t for _, t in docs])
    lines = [
        json.dumps(
            {"shape": shape, "text": text, "reference": {r: decisions[r][i] for r in decisions}}, ensure_ascii=False
        )
        for i, (shape, text) in enumerate(docs)
    ]
    FIXTURE.write_bytes(zstandard.ZstdCompressor(level=19).compress("\n".join(lines).encode()))
    print(f"{len(docs)} documents, {Counter(s for s, _ in docs)} -> {FIXTURE} ({FIXTURE.stat().st_size:,} bytes)")


# ---- step 2: ours against it ----


def load_fixture(path: Path = FIXTURE) -> list[dict]:
    import zstandard

    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
    return [json.loads(line) for line in raw.decode().splitlines()]


def our_decisions(texts: list[str]) -> dict[str, list]:
    from slimpipe.config import load_preset
    from slimpipe.stages.filters import build_filter
    from slimpipe.stages.filters.doc import Doc

    presets = load_preset("slimpajama")["filters"]
    out = {}
    for rule, (_, name, changes) in RULES.items():
        flt = build_filter(name, {**presets[name], **changes})
        out[rule] = [(r.reason if (r := flt.check(Doc(t))) else None) for t in texts]
    return out


def agreement(rows: list[dict]) -> tuple[dict, list]:
    """{rule: {shape: share of documents where keep/reject agree}} and the disagreements."""
    ours = our_decisions([r["text"] for r in rows])
    table: dict[str, dict[str, list[int]]] = {}
    differ = []
    for i, row in enumerate(rows):
        for rule, (reference_rule, _, _) in RULES.items():
            theirs = row["reference"][reference_rule]
            same = (theirs is None) == (ours[rule][i] is None)
            cell = table.setdefault(rule, {}).setdefault(row["shape"], [0, 0])
            cell[0] += same
            cell[1] += 1
            if not same:
                differ.append((rule, row["shape"], theirs, ours[rule][i], i))
    return {rule: {shape: a / n for shape, (a, n) in shapes.items()} for rule, shapes in table.items()}, differ


def compare(show: str | None) -> None:
    rows = load_fixture()
    table, differ = agreement(rows)
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    counts = Counter(r["shape"] for r in rows)
    print("rule".ljust(18) + "".join(f"{s[:15]:>16}" for s in shapes))
    print("documents".ljust(18) + "".join(f"{counts[s]:>16}" for s in shapes))
    for rule, by_shape in table.items():
        print(rule.ljust(18) + "".join(f"{by_shape[s]:>16.2%}" for s in shapes))
    print("\ndisagreements (rule, shape, reference, ours):")
    for key, n in Counter((r, s, t, o) for r, s, t, o, _ in differ).most_common():
        print(f"  {n:4d}  {key}")
    for rule, shape, theirs, mine, i in differ:
        if rule == show:
            print(f"\n--- {shape} #{i}: reference {theirs}, ours {mine}\n{rows[i]['text'][:1500]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    w = sub.add_parser("write")
    w.add_argument("--data", type=Path, default=DATA)
    c = sub.add_parser("compare")
    c.add_argument("--show", help="print the documents a rule disagrees on")
    args = p.parse_args()
    if args.step == "write":
        write(args.data)
    else:
        compare(args.show)


if __name__ == "__main__":
    sys.exit(main())
