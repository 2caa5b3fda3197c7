import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from slimpipe.config import load_preset
from slimpipe.errors import ConfigError
from slimpipe.io.discover import discover
from slimpipe.io.inputs import Chunk, InputFile, byte_ranges, count_newlines_in_range, plan_chunks
from slimpipe.stages.read import read_chunk

READ_CFG = load_preset("slimpajama")["input"]


def read_all(paths, cfg=READ_CFG, split_bytes=None):
    files = discover([str(p) for p in paths], cfg).files
    count = lambda jobs: [count_newlines_in_range(*j) for j in jobs]  # noqa: E731
    chunks = plan_chunks(files, split_bytes or cfg["split_bytes"], count)
    tables = [t for c in chunks for t in read_chunk(c, cfg)]
    return pa.concat_tables(tables).to_pylist() if tables else []


def test_jsonl_plain_gz_zst_read_alike(tmp_path, c4_docs):
    docs = c4_docs[:50]
    for name, comp in (("a.jsonl", None), ("b.jsonl.gz", "gzip"), ("c.jsonl.zst", "zstd")):
        write_jsonl(tmp_path / name, docs, comp)
        rows = read_all([tmp_path / name])
        assert [r["text"] for r in rows] == [d["text"] for d in docs]
        assert [r["line"] for r in rows] == list(range(1, 51))
        assert rows[0]["url"] == docs[0]["url"]
        assert json.loads(rows[0]["meta"]) == {"timestamp": docs[0]["timestamp"]}
        assert rows[0]["id"] == f"{name}:1"  # no id field: derived from (file, line)
        assert all(r["reject_reason"] is None for r in rows)


def test_split_ranges_give_the_same_records_and_lines(tmp_path, c4_docs):
    # Blank lines and unicode line separators inside texts must not shift anything.
    records = [dict(d, text=d["text"] + " \u2028 x \u0085 y") for d in c4_docs[:120]]
    lines = []
    for i, r in enumerate(records):
        lines.append(json.dumps(r, ensure_ascii=False).encode())
        if i % 17 == 0:
            lines.append(b"")
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(lines))  # no trailing newline either
    whole = read_all([path], split_bytes=10**9)
    for split in (65536, 70001, 100003):
        pieces = read_all([path], split_bytes=split)
        assert [(r["line"], r["text"]) for r in pieces] == [(r["line"], r["text"]) for r in whole]
    assert len(whole) == 120
    assert "\u2028" in whole[0]["text"] and "\u0085" in whole[0]["text"]
    assert len(byte_ranges(path.stat().st_size, 65536)) > 2


def test_bad_records_become_rejected_rows(tmp_path):
    good = "word " * 60
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"text": good, "id": 7},
            b'{"text": "unterminated',
            {"id": "x"},
            {"text": None},
            {"text": 42},
            b"[1, 2]",
            b'{"text": "caf\xe9 ' + good.encode() + b'"}',
            b'{"text": "pair \\ud83d\\ude00 lone \\ud800 end"}',
        ],
    )
    rows = read_all([path])
    reasons = [r["reject_reason"] for r in rows]
    assert reasons == [
        None,
        "malformed_json",
        "missing_text",
        "null_text",
        "text_not_string",
        "not_an_object",
        None,
        None,
    ]
    assert rows[0]["id"] == "7"
    assert rows[1]["raw"] == b'{"text": "unterminated' and rows[1]["reject_stage"] == "read"
    assert rows[6]["utf8_repaired"] and rows[6]["text"].startswith("caf\ufffd ")
    assert rows[7]["text"] == "pair \U0001f600 lone \ufffd end" and rows[7]["utf8_repaired"]
    assert [r["line"] for r in rows] == list(range(1, 9))


def test_empty_file_and_blank_lines(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n  \n\n")
    # discovery passes an empty file over (stats list it); read, it gives no row either
    empty = InputFile(str(tmp_path / "empty.jsonl"), "empty.jsonl", "s", "jsonl", None, 0)
    assert list(read_chunk(Chunk("k", empty), READ_CFG)) == []
    assert read_all([tmp_path / "blank.jsonl"]) == []


@pytest.mark.parametrize("comp", ["gzip", "zstd"])
def test_truncated_stream_keeps_records_before_damage(tmp_path, c4_docs, comp):
    path = write_jsonl(tmp_path / ("t.jsonl.gz" if comp == "gzip" else "t.jsonl.zst"), c4_docs[:200], comp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    rows = read_all([path])
    good = [r for r in rows if r["reject_reason"] is None]
    bad = [r for r in rows if r["reject_reason"] is not None]
    assert 50 < len(good) < 200
    assert [r["text"] for r in good] == [d["text"] for d in c4_docs[: len(good)]]
    assert len(bad) == 1 and bad[0]["reject_reason"] == "corrupt_stream"
    assert bad[0]["line"] == len(good) + 1
    assert "damaged" in bad[0]["reject_detail"]


def test_corrupt_gzip_and_unreadable_file(tmp_path, c4_docs):
    gz = write_jsonl(tmp_path / "src" / "c.jsonl.gz", c4_docs[:100], "gzip")
    data = bytearray(gz.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    gz.write_bytes(bytes(data))
    os.symlink(tmp_path / "nowhere.jsonl", tmp_path / "src" / "dangling.jsonl")
    # a file that cannot be read is a row only when asked (the default, fail, stops the run)
    rows = read_all([tmp_path / "src"], {**READ_CFG, "on_io_error": "reject"})
    by_file = {}
    for r in rows:
        by_file.setdefault(os.path.basename(r["file"]), []).append(r)
    assert by_file["dangling.jsonl"][0]["reject_reason"] == "unreadable_file"
    corrupt = by_file["c.jsonl.gz"]
    assert corrupt[-1]["reject_reason"] == "corrupt_stream"
    # Deflate may emit some garbage before it notices: those lines are rejected as malformed,
    # and everything before the damage is intact.
    intact = [r for r in corrupt if r["reject_reason"] is None]
    assert len(intact) >= 30
    assert [r["text"] for r in intact[:30]] == [d["text"] for d in c4_docs[:30]]
    assert {r["reject_reason"] for r in corrupt[:-1]} <= {None, "malformed_json"}


def test_single_huge_document(tmp_path):
    text = ("A very long line of web text, repeated. " * 1_300_000)[: 50 * 2**20]
    path = write_jsonl(tmp_path / "huge.jsonl", [{"text": "small " * 50}, {"text": text}])
    rows = read_all([path])
    assert len(rows) == 2 and rows[1]["text"] == text and rows[1]["bytes_read"] == len(text)


def test_parquet_input_split_by_row_groups(tmp_path, c4_docs):
    texts = [d["text"] for d in c4_docs[:100]] + [None]
    table = pa.table({"text": texts, "url": [f"u{i}" for i in range(101)]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=10)
    rows = read_all([tmp_path / "d.parquet"], split_bytes=65536)
    assert [r["text"] for r in rows[:100]] == texts[:100]
    assert [r["line"] for r in rows] == list(range(1, 102))
    assert rows[100]["reject_reason"] == "null_text"
    assert rows[5]["url"] == "u5"


def test_sources_from_subfolders_field_and_config(tmp_path):
    write_jsonl(tmp_path / "wiki" / "a.jsonl", [{"text": "x", "src": "A"}])
    write_jsonl(tmp_path / "cc" / "deep" / "b.jsonl", [{"text": "y", "src": "B"}])
    assert sorted(r["source"] for r in read_all([tmp_path])) == ["cc", "wiki"]
    assert sorted(r["source"] for r in read_all([tmp_path], {**READ_CFG, "source_field": "src"})) == ["A", "B"]
    assert {r["source"] for r in read_all([tmp_path], {**READ_CFG, "source": "all"})} == {"all"}
    globbed = read_all([str(tmp_path / "*" / "**" / "*.jsonl")])
    assert sorted(r["id"] for r in globbed) == ["cc/deep/b.jsonl:1", "wiki/a.jsonl:1"]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        discover([str(tmp_path / "nope")], READ_CFG)
    with pytest.raises(ConfigError, match="matches no file"):
        discover([str(tmp_path / "*.jsonl")], READ_CFG)
    with pytest.raises(ConfigError, match="no input files"):
        discover([str(tmp_path)], READ_CFG)


def test_input_formats_registries_and_schema_agree():
    """A format is found and planned (slimpipe.io.inputs.FORMATS), read (READERS) and named in the
    config schema under one name."""
    from slimpipe.io.inputs import FORMATS
    from slimpipe.schemas import CONFIG_SCHEMA_PATH
    from slimpipe.stages.read import READERS

    schema = json.loads(CONFIG_SCHEMA_PATH.read_text())
    assert set(FORMATS) == set(READERS)
    assert set(schema["properties"]["input"]["properties"]["format"]["enum"]) == {"auto", *FORMATS}
