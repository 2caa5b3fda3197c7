"""End to end: one run over a folder holding every kind of input nobody listed (deep nesting,
huge integers, a BOM, bare-CR lines, a pretty-printed JSON array, a zero-byte .gz, a FIFO, a
name that is not UTF-8, a symlink loop), with our own count of the records planted compared to
kept + rejected + duplicates."""

import gzip
import json
import os

import pyarrow.parquet as pq

from slimpipe.config import resolve
from slimpipe.runner import run

GOOD = "A record long enough for the length rule, written as a plain sentence about the sea. "


def _record(i: int, **extra) -> dict:
    return {"text": GOOD * 3 + f"Record {i}.", **extra}


def _lines(records, sep: bytes = b"\n") -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + sep for r in records)


def test_every_bad_input_in_one_run(tmp_path, ray_session):
    root = tmp_path / "in"
    (root / "web" / "deeper").mkdir(parents=True)
    web = root / "web"
    planted = 0
    # one line nested 5,000 deep among good ones: one malformed_json row, no crash
    (web / "nested.jsonl").write_bytes(_lines([_record(i) for i in range(5)] + [b"[" * 5000 + b"]" * 5000]))
    planted += 6
    # a 5,000-digit integer in a field other than text: the record is kept
    huge = b'{"n": ' + b"7" * 5000 + b', "text": ' + json.dumps(GOOD * 3).encode() + b"}"
    (web / "huge.jsonl").write_bytes(_lines([huge, _record(10)]))
    planted += 2
    (web / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + _lines([_record(20 + i) for i in range(3)]))
    planted += 3
    (web / "mac.jsonl").write_bytes(_lines([_record(30 + i) for i in range(4)], sep=b"\r"))
    planted += 4
    (web / "array.json").write_text(json.dumps([_record(40 + i) for i in range(5)], indent=2))
    planted += 5
    (web / "empty.jsonl.gz").write_bytes(b"")
    os.mkfifo(web / "pipe.jsonl")
    with open(os.fsencode(str(web / "deeper")) + b"/caf\xe9.jsonl", "wb") as f:
        f.write(_lines([_record(50)]))
    (web / "deeper" / "plain.jsonl.gz").write_bytes(gzip.compress(_lines([_record(60 + i) for i in range(2)])))
    planted += 2
    os.symlink(root, web / "deeper" / "loop")

    config = resolve("slimpajama", None, ["dedup.near.enabled=false"], [str(root)], str(tmp_path / "run"))
    stats = run(config)

    c = stats["conservation"]
    assert c["holds"] and c["input_records"] == planted, c
    assert c["kept"] + c["rejected"] + c["duplicates"] == planted
    assert stats["rejected_by_reason"] == {"read": {"malformed_json": {"documents": 1, "bytes": 10000}}}
    skipped = stats["inputs"]["skipped"]
    assert skipped == {"empty_file": 1, "same_file": 1, "special_file": 1, "undecodable_name": 1}, skipped
    docs = pq.read_table(tmp_path / "run" / "documents").to_pylist()
    assert len(docs) == planted - 1
    kept_huge = [d for d in docs if d["meta"] and "7777" in d["meta"]]
    assert len(kept_huge) == 1 and json.loads(kept_huge[0]["meta"])["n"] == "7" * 5000
    assert sorted(d["line"] for d in docs if d["file"].endswith("array.json")) == [1, 2, 3, 4, 5]
    assert sorted(d["line"] for d in docs if d["file"].endswith("mac.jsonl")) == [1, 2, 3, 4]


def test_a_run_directory_inside_the_input_folder_is_not_input(tmp_path, ray_session):
    root = tmp_path / "in"
    (root / "web").mkdir(parents=True)
    (root / "web" / "a.jsonl").write_bytes(_lines([_record(i) for i in range(4)]))
    config = resolve("slimpajama", None, ["dedup.near.enabled=false"], [str(root)], str(root / "out"))
    first = run(config)
    again = run(config)  # its own parquet outputs are not new input: the same run, complete
    assert first["conservation"]["input_records"] == again["conservation"]["input_records"] == 4
    assert type(again).__name__ == "AlreadyComplete"
