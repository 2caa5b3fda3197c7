import hashlib
import random

import pyarrow as pa
import pyarrow.parquet as pq

from slimpipe.stages.exact_dedup import add_partition, find_duplicates
from slimpipe.stages.normalize import text_hash
from slimpipe.stages.write import plan_shards, write_document_shard


def _kept(rows):
    return pa.table(
        {
            "id": [r[0] for r in rows],
            "text": pa.array([r[1] for r in rows], pa.large_string()),
            "source": [r[2] for r in rows],
            "url": pa.nulls(len(rows), pa.string()),
            "meta": pa.nulls(len(rows), pa.string()),
            "file": [r[3] for r in rows],
            "line": pa.array([r[4] for r in rows], pa.int64()),
            "chunk": [r[3].rsplit("/", 1)[1] for r in rows],
            "bytes_clean": pa.array([len(r[1]) for r in rows], pa.int64()),
            "text_hash": pa.array([text_hash(r[1]) for r in rows], pa.binary(16)),
            "language": pa.nulls(len(rows), pa.string()),
            "language_score": pa.nulls(len(rows), pa.float32()),
            "quality_score": pa.nulls(len(rows), pa.float32()),
        }
    )


ROWS = [
    ("a1", "alpha text", "web", "/d/web/a.jsonl", 3),
    ("a0", "alpha text", "wiki", "/d/wiki/a.jsonl", 1),
    ("b0", "beta text", "web", "/d/web/a.jsonl", 1),
    ("a2", "alpha text", "web", "/d/web/a.jsonl", 9),
    ("c0", "gamma", "web", "/d/web/b.jsonl", 2),
    ("b1", "beta text", "wiki", "/d/wiki/a.jsonl", 5),
]


def test_first_copy_in_input_order_survives_whatever_the_row_order():
    results = set()
    for seed in range(5):
        rows = list(ROWS)
        random.Random(seed).shuffle(rows)
        dups = find_duplicates(_kept(rows))
        results.add(tuple(sorted(zip(dups["id"].to_pylist(), dups["kept_id"].to_pylist()))))
    # Survivor is the first copy by (file, line): "/d/web/a.jsonl" sorts before "/d/wiki/...".
    assert results == {(("a0", "a1"), ("a2", "a1"), ("b1", "b0"))}


def test_duplicate_rows_carry_cluster_and_survivor():
    dups = find_duplicates(_kept(ROWS))
    rows = {r["id"]: r for r in dups.to_pylist()}
    assert rows["a0"]["cluster_id"] == text_hash("alpha text").hex() == rows["a2"]["cluster_id"]
    assert rows["a0"]["kept_source"] == "web" and rows["a0"]["source"] == "wiki"
    assert rows["a0"]["kind"] == "exact" and rows["a0"]["similarity"] == 1.0
    assert rows["b1"]["bytes"] == len("beta text")
    assert rows["a0"]["chunk"] == "a.jsonl" and rows["a0"]["line"] == 1


def test_partitions_are_stable_and_keep_copies_together():
    t = add_partition(_kept(ROWS), 7)
    parts = {}
    for text, p in zip(t["text"].to_pylist(), t["partition"].to_pylist()):
        parts.setdefault(text, set()).add(p)
    assert all(len(v) == 1 for v in parts.values())
    assert add_partition(_kept(ROWS), 7)["partition"].to_pylist() == t["partition"].to_pylist()


def test_shards_stream_parts_in_order_without_duplicate_lines(tmp_path):
    work = tmp_path / "_work"
    parts = []
    for chunk in ["c0", "c1"]:
        for p in range(3):
            rows = [
                (f"{chunk}-{p}-{i}", f"document {chunk} {p} {i} " * 20, "web", "/f", 100 * p + i) for i in range(10)
            ]
            path = work / "filtered" / chunk / f"{p}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(_kept(rows), path)
            parts.append((chunk, str(path), sum(len(r[1]) for r in rows)))
    (work / "dupsets").mkdir()
    pq.write_table(pa.table({"line": pa.array([3, 101, 205], pa.int64())}), work / "dupsets" / "c1.parquet")
    shards = plan_shards(parts, shard_bytes=parts[0][2] * 2)
    assert [len(s["parts"]) for s in shards] == [2, 2, 2]
    removed = [str(work / d) for d in ("dupsets", "near_dupsets", "decontaminated")]
    # c1's line 2 repeats an input id: the writer gives it the new id and keeps the one given
    (tmp_path / "ids").mkdir()
    renames = {"line": pa.array([2], pa.int64()), "id": ["c1-0-2#2"], "input_id": ["c1-0-2"]}
    pq.write_table(pa.table(renames), tmp_path / "ids" / "c1.parquet")
    entries = [
        write_document_shard(
            s, str(tmp_path / "documents"), removed, str(tmp_path / "ids"), 3, {"holdout_ratio": 0, "seed": 0}
        )
        for s in shards
    ]
    back = pq.read_table(tmp_path / "documents")
    expected = [
        f"{c}-{p}-{i}"
        for c in ("c0", "c1")
        for p in range(3)
        for i in range(10)
        if not (c == "c1" and 100 * p + i in (3, 101, 205))
    ]
    expected[expected.index("c1-0-2")] = "c1-0-2#2"
    assert back["id"].to_pylist() == expected
    assert [i for i in back["input_id"].to_pylist() if i] == ["c1-0-2"]
    assert back.schema.names == [
        "id",
        "input_id",
        "text",
        "source",
        "url",
        "meta",
        "file",
        "line",
        "language",
        "language_score",
        "quality_score",
        "split",
    ]
    assert [e["rows"] for e in entries] == [20, 19, 18]
    for e in entries:
        data = (tmp_path / "documents" / e["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"]
    assert not list(tmp_path.rglob("*.tmp-*"))
    assert (
        pq.ParquetFile(tmp_path / "documents" / entries[0]["file"]).metadata.row_group(0).column(1).compression
        == "ZSTD"
    )
