"""Build a benchmark corpus of real web text of a given size.

Documents are spliced from paragraphs of real web pages (the C4 sample the project bundles, or
a C4/OSCAR folder given with --from), so text statistics stay those of web text while
documents stay distinct; a share of them are planted exact duplicates and short pages, as in a
crawl. Output: SOURCE/part-NNNNN.jsonl.zst files of about --file-mb of text each under OUT.
With --near-share, that share of the bytes are families of near-duplicates: a page and copies
of it with words replaced at rates from 0.2% to 30% (so true Jaccard spreads from ~1 down to
~0.2), each (original, copy) pair listed in OUT.pairs.jsonl as ground truth.

    python bench/make_corpus.py --mb 100 --out bench/out/corpus-100 [--near-share 0.1]
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import random
from pathlib import Path

import zstandard

SAMPLE = Path(__file__).parents[1] / "pipeline" / "sample" / "c4" / "c4-en-train-00000-first600.jsonl.zst"


def load_paragraphs(extra: list[Path]) -> tuple[list[str], list[str]]:
    """(English paragraphs from C4, multilingual paragraphs from OSCAR files if given)."""
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(SAMPLE.read_bytes())).read()
    english = [p for line in raw.split(b"\n") if line.strip()
               for p in json.loads(line)["text"].split("\n") if p.strip()]
    other: list[str] = []
    for path in extra:
        if path.name.endswith(".jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                english.extend(p for p in json.loads(line)["text"].split("\n") if p.strip())
        elif path.name.endswith(".txt.gz"):
            text = gzip.open(path, "rt", encoding="utf-8").read()
            other.extend(p.strip() for p in text.split("\n") if len(p.strip()) > 40)
    return english, other


NEAR_RATES = [0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3]


def near_family(base: str, rng: random.Random, vocab: list[str]) -> list[str]:
    words = base.split()
    return [" ".join(rng.choice(vocab) if rng.random() < rate else w for w in words) for rate in NEAR_RATES]


def write_near_families(budget: int, out: Path, english: list[str], rng: random.Random, file_mb: float) -> dict:
    vocab = sorted({w for p in english[:3000] for w in p.split()})
    files = max(1, round(budget / (file_mb * 1e6)))
    path = out / "near"
    path.mkdir(parents=True, exist_ok=True)
    writers = [zstandard.ZstdCompressor(level=3).stream_writer((path / f"part-{i:05d}.jsonl.zst").open("wb"))
               for i in range(files)]
    size = n = 0
    with out.with_name(out.name + ".pairs.jsonl").open("w") as pairs:
        while size < budget:
            base = "\n".join(rng.choice(english) for _ in range(rng.randint(6, 14)))
            family = [base] + near_family(base, rng, vocab)
            ids = [f"near-{n}-{k}" for k in range(len(family))]
            for k, text in enumerate(family):
                writers[(n + k) % files].write(json.dumps({"id": ids[k], "text": text}, ensure_ascii=False).encode() + b"\n")
                size += len(text.encode())
            for k in range(1, len(family)):
                pairs.write(json.dumps({"a": ids[0], "b": ids[k], "rate": NEAR_RATES[k - 1]}) + "\n")
            n += 1
    for w in writers:
        w.close()
    return {"near_families": n, "near_bytes": size}


def build(mb: float, out: Path, extra: list[Path], seed: int = 0, file_mb: float = 8.0,
          near_share: float = 0.0) -> dict:
    rng = random.Random(seed)
    english, other = load_paragraphs(extra)
    target = int(mb * 1e6 * (1 - near_share))
    sources = {"cc": 0.75, "news": 0.25}
    written = {"documents": 0, "bytes": 0, "planted_duplicates": 0, "planted_short": 0}
    for source, share in sources.items():
        budget = int(target * share)
        files_per_source = max(1, round(budget / (file_mb * 1e6)))
        writers = []
        for i in range(files_per_source):
            path = out / source / f"part-{i:05d}.jsonl.zst"
            path.parent.mkdir(parents=True, exist_ok=True)
            writers.append(zstandard.ZstdCompressor(level=3).stream_writer(path.open("wb")))
        recent: list[str] = []
        size, n = 0, 0
        while size < budget:
            roll = rng.random()
            if roll < 0.10 and recent:
                text = rng.choice(recent)
                written["planted_duplicates"] += 1
            elif roll < 0.13:
                text = " ".join(rng.choice(english).split()[:12])
                written["planted_short"] += 1
            else:
                pool = other if other and roll > 0.95 else english
                text = "\n".join(rng.choice(pool) for _ in range(rng.randint(2, 12)))
                recent.append(text)
                if len(recent) > 5000:
                    recent.pop(rng.randrange(len(recent)))
            line = json.dumps({"id": f"{source}-{n}", "text": text, "url": f"https://example.org/{source}/{n}"},
                              ensure_ascii=False).encode() + b"\n"
            writers[n % files_per_source].write(line)
            size += len(text.encode())
            n += 1
        for w in writers:
            w.close()
        written["documents"] += n
        written["bytes"] += size
    if near_share:
        written.update(write_near_families(int(mb * 1e6 * near_share), out, english, rng, file_mb))
    out.with_name(out.name + ".corpus.json").write_text(json.dumps(written, indent=2))
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=100.0, help="text megabytes to write")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--from", dest="extra", type=Path, nargs="*", default=[],
                   help="more real text: C4-style .jsonl files or OSCAR .txt.gz files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file-mb", type=float, default=8.0, help="text megabytes per file")
    p.add_argument("--near-share", type=float, default=0.0, help="share of bytes in near-duplicate families")
    args = p.parse_args()
    print(json.dumps(build(args.mb, args.out, args.extra, args.seed, args.file_mb, args.near_share)))


if __name__ == "__main__":
    main()
