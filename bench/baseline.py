"""The baseline: SlimPajama's scripts' way of doing read, clean, length filter, exact dedup and
write, in one process, one document at a time (json.loads, ftfy.fix_text with NFC, regex
normalisation, a hash set, a Parquet writer).

    python bench/baseline.py CORPUS_DIR OUT.parquet
"""

from __future__ import annotations

import hashlib
import re
import string
import sys
from pathlib import Path

import ftfy
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

PUNCTUATION = str.maketrans("", "", string.punctuation)


def run(corpus: Path, out: Path) -> int:
    seen: set[bytes] = set()
    kept: list[str] = []
    for path in sorted(corpus.rglob("*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as f:
            for line in f.read().split(b"\n"):
                if not line:
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:  # invalid UTF-8: repaired with U+FFFD, as slimpipe's reader does
                    record = orjson.loads(line.decode("utf-8", "replace"))
                if not isinstance(record.get("text"), str):
                    continue  # no text: slimpipe rejects these
                text = ftfy.fix_text(record["text"], normalization="NFC")
                norm = re.sub(r"\s+", " ", text.lower().translate(PUNCTUATION).strip())
                if len(norm) < 200:
                    continue
                digest = hashlib.blake2b(norm.encode(), digest_size=16).digest()
                if digest not in seen:
                    seen.add(digest)
                    kept.append(text)
    pq.write_table(pa.table({"text": kept}), out, compression="zstd")
    return len(kept)


if __name__ == "__main__":
    print(run(Path(sys.argv[1]), Path(sys.argv[2])))
