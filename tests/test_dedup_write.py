import hashlib
import random

import pyarrow as pa
import pyarrow.parquet as pq

from slimpipe.stages.exact_dedup import add_partition, dedup_partition
from slimpipe.stages.normalize import text_hash
from slimpipe.stages.write import write_shards


def _kept(rows):
    return pa.table({
        "id": [r[0] for r in rows],
        "text": pa.array([r[1] for r in rows], pa.large_string()),
        "source": [r[2] for r in rows],
        "url": pa.nulls(len(rows), pa.string()),
        "meta": pa.nulls(len(rows), pa.string()),
        "file": [r[3] for r in rows],
        "line": pa.array([r[4] for r in rows], pa.int64()),
        "bytes_clean": pa.array([len(r[1]) for r in rows], pa.int64()),
        "text_hash": pa.array([text_hash(r[1]) for r in rows], pa.binary(16)),
    })


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
        kept, dups = dedup_partition(_kept(rows))
        results.add((tuple(kept["id"].to_pylist()),
                     tuple(sorted(zip(dups["id"].to_pylist(), dups["kept_id"].to_pylist())))))
    assert len(results) == 1
    kept_ids, pairs = results.pop()
    # Survivor is the first copy by (file, line): "/d/web/a.jsonl" sorts before "/d/wiki/...".
    assert kept_ids == ("b0", "a1", "c0")
    assert pairs == (("a0", "a1"), ("a2", "a1"), ("b1", "b0"))


def test_duplicate_rows_carry_cluster_and_survivor():
    _, dups = dedup_partition(_kept(ROWS))
    rows = {r["id"]: r for r in dups.to_pylist()}
    assert rows["a0"]["cluster_id"] == text_hash("alpha text").hex() == rows["a2"]["cluster_id"]
    assert rows["a0"]["kept_source"] == "web" and rows["a0"]["source"] == "wiki"
    assert rows["a0"]["kind"] == "exact" and rows["a0"]["similarity"] == 1.0
    assert rows["b1"]["bytes"] == len("beta text")


def test_partitions_are_stable_and_keep_copies_together():
    t = add_partition(_kept(ROWS), 7)
    parts = {}
    for text, p in zip(t["text"].to_pylist(), t["partition"].to_pylist()):
        parts.setdefault(text, set()).add(p)
    assert all(len(v) == 1 for v in parts.values())
    assert add_partition(_kept(ROWS), 7)["partition"].to_pylist() == t["partition"].to_pylist()


def test_shards_split_by_size_with_checksums(tmp_path):
    rows = [(f"d{i}", f"document number {i} " * 20, "web", "/f", i) for i in range(100)]
    table = _kept(rows)
    entries = write_shards(table, 3, str(tmp_path), shard_bytes=4000, compression_level=3)
    assert len(entries) > 3
    assert [e["file"] for e in entries] == [f"documents/part-00003-{k:03d}.parquet" for k in range(len(entries))]
    back = pa.concat_tables(pq.read_table(tmp_path / e["file"]) for e in entries)
    assert back["id"].to_pylist() == [r[0] for r in rows]
    assert back.schema.names == ["id", "text", "source", "url", "meta", "file", "line"]
    for e in entries:
        data = (tmp_path / e["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"]
        assert e["text_bytes"] <= 4000 + 400
    assert not list(tmp_path.rglob("*.tmp-*"))
    assert pq.ParquetFile(tmp_path / entries[0]["file"]).metadata.row_group(0).column(1).compression == "ZSTD"
