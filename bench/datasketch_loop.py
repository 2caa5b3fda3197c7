"""A one-process near-dedup with datasketch, as a script would do it: for each document in
turn, a MinHash of its character 13-grams (the slimpajama preset's shingles, SHA-1, legacy
scheme), a query of a MinHashLSH (9 bands x 13 rows), then an insert. Prints one JSON line."""

import io
import json
import sys
import time
from pathlib import Path

import zstandard
from datasketch import MinHash, MinHashLSH

from slimpipe.stages.minhash import MinHashParams, shingles


def main() -> None:
    params = MinHashParams()
    lsh = MinHashLSH(num_perm=128, params=(9, 13))
    t = time.perf_counter()
    docs = removed = 0
    for path in sorted(Path(sys.argv[1]).rglob("*.jsonl.zst")):
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            rec = json.loads(line)
            m = MinHash(num_perm=128, seed=1, scheme="legacy")
            m.update_batch(shingles(rec["text"], params))
            docs += 1
            if lsh.query(m):
                removed += 1
            else:
                lsh.insert(rec["id"], m)
    print(json.dumps({"documents": docs, "removed": removed, "loop_seconds": round(time.perf_counter() - t, 2)}))


if __name__ == "__main__":
    main()
