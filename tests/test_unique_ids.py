"""Ids in documents/ are unique: input ids that repeat (in one file, across files, `1` against
`"1"`) are made unique in input order, the id given kept in input_id; default ids stay unique
across input roots with the same layout."""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import write_jsonl

from slimpipe.config import resolve
from slimpipe.runner import run
from slimpipe.stages.unique_ids import _index_partition, renames_of


def test_renames_keep_the_first_in_input_order_whatever_the_row_order():
    rows = [
        ("1", "/in/b.jsonl", 1, "cb"),
        ("a", "/in/a.jsonl", 2, "ca"),
        ("1", "/in/a.jsonl", 3, "ca"),
        ("b", "/in/a.jsonl", 4, "ca"),
        ("1", "/in/a.jsonl", 1, "ca"),
        ("a", "/in/c.jsonl", 1, "cc"),
    ]
    expected = [
        {"chunk": "ca", "line": 3, "id": "1#2", "input_id": "1"},
        {"chunk": "cb", "line": 1, "id": "1#3", "input_id": "1"},
        {"chunk": "cc", "line": 1, "id": "a#2", "input_id": "a"},
    ]
    for seed in range(5):
        shuffled = random.Random(seed).sample(rows, len(rows))
        index = pa.table(dict(zip(["id", "file", "line", "chunk"], map(list, zip(*shuffled)))))
        assert renames_of(index).to_pylist() == expected


def _text(i: int) -> str:
    return " ".join([f"Document number {i} is about the harbour town and its {i} boats."] * 8)


def test_documents_ids_are_unique_and_input_ids_kept(tmp_path, ray_session):
    a, b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    write_jsonl(
        a / "web" / "x.jsonl",
        [{"id": "dup", "text": _text(0)}, {"id": "dup", "text": _text(1)}, {"id": 1, "text": _text(2)}],
    )
    write_jsonl(a / "web" / "y.jsonl", [{"id": "1", "text": _text(3)}, {"id": "dup", "text": _text(4)}])
    # the same layout under a second root, without ids: ids from (file, line) must not collide
    for root in (a, b):
        write_jsonl(root / "books" / "z.jsonl", [{"text": _text(10 + i + (100 if root == b else 0))} for i in range(3)])
    config = resolve(
        "slimpajama",
        None,
        ["dedup.near.enabled=false", "filters.length.min_chars=10"],
        [str(a), str(b)],
        str(tmp_path / "run"),
    )
    stats = run(config)
    docs = pq.read_table(tmp_path / "run" / "documents").to_pylist()
    ids = [d["id"] for d in docs]
    assert len(docs) == 11 == stats["conservation"]["input_records"]
    assert len(set(ids)) == len(ids), ids
    renamed = {d["id"]: d["input_id"] for d in docs if d["input_id"] is not None}
    assert renamed == {"dup#2": "dup", "dup#3": "dup", "1#2": "1"}
    assert stats["ids"]["renamed"] == 3
    # the first of each id in input order keeps it
    by_text = {d["text"]: d["id"] for d in docs}
    assert by_text[_text(0)] == "dup" and by_text[_text(2)] == "1"
    assert json.loads(json.dumps(stats))["conservation"]["holds"]


def test_new_ids_never_take_an_id_the_input_holds():
    # the input holds x, x again, x#2 and x#2 again: the second x cannot become x#2
    rows = [("x", "/a", 1), ("x", "/a", 2), ("x#2", "/a", 3), ("x#2", "/a", 4), ("x#3", "/b", 1)]
    index = pa.table(dict(zip(["id", "file", "line"], map(list, zip(*rows))))).append_column(
        "chunk", pa.array(["c"] * 5)
    )
    renamed = {(r["line"]): r["id"] for r in renames_of(index).to_pylist()}
    assert renamed == {2: "x#4", 4: "x#2#2"}
    final = [renamed.get(line, rid) for rid, _, line in rows]
    assert len(set(final)) == len(final)
    # and the family of every id, whatever its suffixes, lands in one partition
    parts = _index_partition(index, 7)["partition"].to_pylist()
    assert len(set(parts)) == 1
