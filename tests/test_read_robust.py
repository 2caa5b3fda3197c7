"""The read stage against hostile input and flaky storage, in-process (no Ray): every test counts
the records it wrote and checks the rows that came out."""

import errno
import gzip
import json
import os
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import write_jsonl

from slimpipe.config import load_preset
from slimpipe.errors import InputChanged, InputUnreadable
from slimpipe.io import retry
from slimpipe.io.discover import discover
from slimpipe.io.inputs import Chunk, InputFile, byte_ranges, count_newlines_in_range, plan_chunks
from slimpipe.stages.read import jsonl, read_chunk

READ_CFG = {**load_preset("slimpajama")["input"], "io_retry_backoff_s": 0.01}
GOOD = "word " * 60
BOM = b"\xef\xbb\xbf"


def input_file(path, **kw) -> InputFile:
    """The file as the planner would record it now (kw overrides, e.g. layout, separator)."""
    name = os.path.basename(path)
    compression = {".gz": "gzip", ".zst": "zstd"}.get(os.path.splitext(name)[1])
    fmt = "parquet" if name.endswith(".parquet") else "jsonl"
    st = os.stat(path)
    return InputFile(str(path), name, "src", fmt, compression, st.st_size, st.st_mtime_ns, **kw)


def rows_of(chunks, cfg=READ_CFG) -> list[dict]:
    tables = [t for c in chunks for t in read_chunk(c, cfg)]
    return pa.concat_tables(tables).to_pylist() if tables else []


def read_file(f: InputFile, cfg=READ_CFG) -> list[dict]:
    return rows_of([Chunk("k", f)], cfg)


def kept(rows):
    return [r for r in rows if r["reject_reason"] is None]


def nested(depth: int) -> bytes:
    return b'{"text": "' + GOOD.encode() + b'", "deep": ' + b"[" * depth + b"]" * depth + b"}"


# --- one record never fails the task -------------------------------------------------------------


@pytest.mark.parametrize("depth", [300, 1000, 1024, 5000, 100_000])
def test_deep_nesting_is_at_most_one_rejected_row(tmp_path, depth):
    records = [{"text": GOOD, "n": 1}, nested(depth), {"text": GOOD, "n": 3}]
    path = write_jsonl(tmp_path / "deep.jsonl", records)
    rows = read_file(input_file(path))
    assert len(rows) == len(records)
    assert [r["line"] for r in rows] == [1, 2, 3]
    assert rows[0]["reject_reason"] is None and rows[2]["reject_reason"] is None
    assert rows[1]["reject_reason"] in (None, "malformed_json")  # shallow enough ones are kept
    if depth >= 5000:
        assert rows[1]["reject_reason"] == "malformed_json"
        assert "nested deeper than" in rows[1]["reject_detail"]
        assert rows[1]["raw"] == records[1]


def test_deep_nesting_through_the_fallback_decoder(tmp_path):
    # An escaped lone surrogate sends the line to the standard library decoder, which recurses
    deep = b'{"text": "lone \\ud800", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = write_jsonl(tmp_path / "deep.jsonl", [deep, {"text": GOOD}])
    rows = read_file(input_file(path))
    assert len(rows) == 2
    assert rows[0]["reject_reason"] == "malformed_json" and "nested" in rows[0]["reject_detail"]
    assert rows[1]["reject_reason"] is None


def test_huge_integers_are_kept_as_digits(tmp_path):
    digits = "1234567890" * 500  # 5,000 digits: beyond orjson and beyond int()'s str limit
    limit = sys.get_int_max_str_digits()
    records = [
        f'{{"text": "{GOOD}", "count": {digits}, "small": 7}}'.encode(),
        f'{{"text": "{GOOD}", "id": -{digits}}}'.encode(),
        f'{{"text": {digits}}}'.encode(),
        f'{{"text": "{GOOD}", "big": 123456789012345678901234567890}}'.encode(),
    ]
    path = write_jsonl(tmp_path / "ints.jsonl", records)
    rows = read_file(input_file(path))
    assert len(rows) == len(records)
    assert json.loads(rows[0]["meta"]) == {"count": digits, "small": 7}
    assert rows[1]["reject_reason"] is None and rows[1]["id"] == "-" + digits
    assert rows[2]["reject_reason"] == "text_not_string"
    assert json.loads(rows[3]["meta"]) == {"big": 123456789012345678901234567890}
    assert sys.get_int_max_str_digits() == limit  # not lifted for the process


# --- byte order marks, carriage returns ----------------------------------------------------------


@pytest.mark.parametrize("comp", [None, "gzip", "zstd"])
def test_bom_at_the_start_is_skipped(tmp_path, c4_docs, comp):
    docs = c4_docs[:20]
    data = BOM + b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    name = {None: "b.jsonl", "gzip": "b.jsonl.gz", "zstd": "b.jsonl.zst"}[comp]
    if comp == "gzip":
        data = gzip.compress(data)
    elif comp == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    (tmp_path / name).write_bytes(data)
    rows = read_file(input_file(tmp_path / name))
    assert len(rows) == len(docs)
    assert [r["text"] for r in kept(rows)] == [d["text"] for d in docs]
    assert [r["line"] for r in rows] == list(range(1, len(docs) + 1))


def test_carriage_return_separated_lines(tmp_path, c4_docs):
    # Texts hold \n (escaped by JSON), U+2028 and U+0085 (raw): only b"\r" ends a line
    docs = [dict(d, text=d["text"] + " \u2028 x \u0085 y") for d in c4_docs[:150]]
    lines = [json.dumps(d, ensure_ascii=False).encode() for d in docs]
    lines.insert(40, b"")  # a blank line still counts as a line
    path = tmp_path / "mac.jsonl"
    path.write_bytes(b"\r".join(lines) + b"\r")
    f = input_file(path, separator="\r")
    whole = read_file(f)
    assert [r["text"] for r in whole] == [d["text"] for d in docs]
    expected_lines = [i + 1 for i in range(len(lines)) if lines[i]]
    assert [r["line"] for r in whole] == expected_lines
    for split in (65536, 70001):
        chunks, before = [], 0
        for i, (s, e) in enumerate(byte_ranges(f.size, split)):
            chunks.append(Chunk(f"k{i}", f, s, e, first_line=before + 1))
            before += count_newlines_in_range(f.uri, s, e, "\r")
        assert len(chunks) > 2
        pieces = rows_of(chunks)
        assert [(r["line"], r["text"]) for r in pieces] == [(r["line"], r["text"]) for r in whole]
    assert count_newlines_in_range(f.uri, 0, f.size, "\r") == len(lines)
    assert count_newlines_in_range(f.uri, 0, f.size) == 0  # the default still counts b"\n"


# --- JSON documents (layout "json") --------------------------------------------------------------


@pytest.mark.parametrize("comp", [None, "gzip"])
def test_pretty_printed_array(tmp_path, c4_docs, comp):
    docs = c4_docs[:60]
    data = BOM + json.dumps(docs, indent=2).encode()
    name = "arr.json.gz" if comp else "arr.json"
    (tmp_path / name).write_bytes(gzip.compress(data) if comp else data)
    rows = read_file(input_file(tmp_path / name, layout="json"))
    assert len(rows) == len(docs)
    assert [r["text"] for r in rows] == [d["text"] for d in docs]
    assert [r["line"] for r in rows] == list(range(1, len(docs) + 1))
    assert len({r["id"] for r in rows}) == len(docs) and rows[0]["id"] == f"{name}:1"
    assert rows[0]["url"] == docs[0]["url"]


def test_concatenated_pretty_printed_values(tmp_path, c4_docs):
    docs = c4_docs[:40]
    # a lone surrogate escape keeps the fast path out: values are decoded one by one
    docs[3] = dict(docs[3], text=docs[3]["text"] + " \ud800")
    path = tmp_path / "cat.json"
    path.write_text("\n".join(json.dumps(d, indent=4) for d in docs) + "\n")
    rows = read_file(input_file(path, layout="json"))
    assert len(rows) == len(docs) and not [r for r in rows if r["reject_reason"]]
    assert [r["line"] for r in rows] == list(range(1, len(docs) + 1))
    assert rows[3]["text"].endswith(" \ufffd") and rows[3]["utf8_repaired"]
    assert [r["text"] for r in rows[4:]] == [d["text"] for d in docs[4:]]


def test_single_pretty_printed_object_and_bad_elements(tmp_path):
    big = 10**40 + 1  # beyond 64 bits: orjson would make it a float
    (tmp_path / "one.json").write_text(json.dumps({"text": GOOD, "id": "a", "n": big}, indent=2))
    rows = read_file(input_file(tmp_path / "one.json", layout="json"))
    assert [(r["id"], r["line"], r["reject_reason"]) for r in rows] == [("a", 1, None)]
    assert json.loads(rows[0]["meta"]) == {"n": big}
    (tmp_path / "mixed.json").write_text(json.dumps([{"text": GOOD}, 5, {"x": 1}], indent=1))
    rows = read_file(input_file(tmp_path / "mixed.json", layout="json"))
    assert [r["reject_reason"] for r in rows] == [None, "not_an_object", "missing_text"]


def test_broken_json_document_keeps_what_came_before(tmp_path, c4_docs):
    docs = c4_docs[:10]
    text = json.dumps(docs, indent=2)
    cut = text.index(json.dumps(docs[7]["text"]))  # inside the 8th element
    path = tmp_path / "broken.json"
    path.write_text(text[:cut] + "<garbage>" + text[cut:])
    rows = read_file(input_file(path, layout="json"))
    assert [r["text"] for r in kept(rows)] == [d["text"] for d in docs[:7]]
    assert len(rows) == 8
    bad = rows[-1]
    assert bad["reject_reason"] == "malformed_json_file" and bad["line"] == 8
    assert "7 records before it were kept" in bad["reject_detail"] and "jq -c" in bad["reject_detail"]


@pytest.mark.parametrize("comp", [None, "gzip"])
def test_json_document_over_the_limit(tmp_path, c4_docs, comp):
    data = json.dumps(c4_docs[:50], indent=2).encode()
    name = "big.json.gz" if comp else "big.json"
    (tmp_path / name).write_bytes(gzip.compress(data) if comp else data)
    rows = read_file(input_file(tmp_path / name, layout="json"), {**READ_CFG, "max_json_bytes": 10_000})
    assert len(rows) == 1
    assert rows[0]["reject_reason"] == "json_file_too_large"
    assert "jq -c '.[]'" in rows[0]["reject_detail"] and "max_json_bytes" in rows[0]["reject_detail"]


def test_truncated_compressed_json_document(tmp_path, c4_docs):
    docs = c4_docs[:200]
    data = gzip.compress("\n".join(json.dumps(d, indent=2) for d in docs).encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    rows = read_file(input_file(path, layout="json"))
    good = kept(rows)
    assert 0 < len(good) < len(docs) and [r["text"] for r in good] == [d["text"] for d in docs[: len(good)]]
    assert len(rows) == len(good) + 1 and rows[-1]["reject_reason"] == "corrupt_stream"


def test_json_document_split_is_read_once(tmp_path, c4_docs):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(c4_docs[:30], indent=2))
    f = input_file(path, layout="json")
    rows = rows_of([Chunk("a", f, 0, f.size // 2), Chunk("b", f, f.size // 2, f.size)])
    assert len(rows) == 30


# --- flaky storage -------------------------------------------------------------------------------


class FlakyFile:
    """A local file whose read calls fail (OSError EIO) where `state["fail"](n)` says, n counting
    the read calls of all opens; by default the 2nd call fails, once."""

    def __init__(self, path, state):
        self.f = open(path, "rb")
        self.state = state

    def read(self, n=None):
        self.state["reads"] += 1
        if self.state["fail"](self.state["reads"]):
            self.state["failed"] += 1
            self.state["failed_at"] = self.f.tell()
            raise OSError(errno.EIO, "Input/output error (EIO)")
        return self.f.read(-1 if n is None else n)

    def seek(self, pos, whence=0):
        return self.f.seek(pos, whence)

    def tell(self):
        return self.f.tell()

    def size(self):
        return os.fstat(self.f.fileno()).st_size

    def close(self):
        self.f.close()


class FlakyFS:
    """What `resolve` hands the reader: local file facts, flaky file objects."""

    def __init__(self, state):
        self.local = pafs.LocalFileSystem()
        self.state = state

    def get_file_info(self, path):
        return self.local.get_file_info(path)

    def open_input_file(self, path):
        self.state["opens"] += 1
        if self.state["open_fails"]:
            raise OSError(errno.EIO, "cannot open (EIO)")
        return FlakyFile(path, self.state)


@pytest.fixture
def flaky(monkeypatch):
    state = {"reads": 0, "fail": lambda n: n == 2, "failed": 0, "failed_at": None, "opens": 0, "open_fails": False}
    monkeypatch.setattr(retry, "resolve", lambda uri: (FlakyFS(state), os.path.abspath(uri)))
    monkeypatch.setattr(jsonl, "READ_BLOCK", 4096)  # many reads per file: the failure is mid-file
    return state


@pytest.mark.parametrize("comp", [None, "gzip", "zstd"])
def test_a_transient_read_error_is_retried(tmp_path, c4_docs, flaky, comp):
    docs = c4_docs[:300]
    name = {None: "f.jsonl", "gzip": "f.jsonl.gz", "zstd": "f.jsonl.zst"}[comp]
    path = write_jsonl(tmp_path / name, docs, comp)
    rows = read_file(input_file(path))
    assert flaky["failed"] == 1 and flaky["failed_at"] > 0 and flaky["opens"] == 2
    assert len(rows) == len(docs) and not [r for r in rows if r["reject_reason"]]
    assert [r["text"] for r in rows] == [d["text"] for d in docs]
    assert [r["line"] for r in rows] == list(range(1, len(docs) + 1))


def test_a_transient_read_error_in_a_byte_range(tmp_path, c4_docs, flaky):
    path = write_jsonl(tmp_path / "r.jsonl", c4_docs[:200])
    f = input_file(path)
    ranges = byte_ranges(f.size, 70001)
    before, chunks = 0, []
    for i, (s, e) in enumerate(ranges):
        chunks.append(Chunk(f"k{i}", f, s, e, first_line=before + 1))
        before += count_newlines_in_range(f.uri, s, e)
    rows = rows_of(chunks)
    assert flaky["failed"] == 1
    assert [r["text"] for r in rows] == [d["text"] for d in c4_docs[:200]]


def test_a_transient_parquet_read_error_is_retried(tmp_path, c4_docs, flaky):
    texts = [d["text"] for d in c4_docs[:300]]
    pq.write_table(pa.table({"text": texts}), tmp_path / "p.parquet", row_group_size=50)
    rows = read_file(input_file(tmp_path / "p.parquet"))
    assert flaky["failed"] == 1
    assert [r["text"] for r in rows] == texts and not [r for r in rows if r["reject_reason"]]


@pytest.mark.parametrize("comp", [None, "gzip"])
def test_storage_that_keeps_failing(tmp_path, c4_docs, flaky, comp):
    docs = c4_docs[:100]
    path = write_jsonl(tmp_path / ("x.jsonl.gz" if comp else "x.jsonl"), docs, comp)
    f = input_file(path)
    flaky["fail"] = lambda n: True
    with pytest.raises(InputUnreadable, match="x.jsonl.*EIO"):
        read_file(f)  # on_io_error: fail, the default
    assert flaky["opens"] == READ_CFG["io_retries"] + 1
    flaky["opens"] = 0
    rows = read_file(f, {**READ_CFG, "on_io_error": "reject", "io_retries": 2})
    assert flaky["opens"] == 3
    assert len(rows) == 1 and rows[0]["reject_reason"] == "unreadable_file"
    assert f.uri in rows[0]["reject_detail"] and "EIO" in rows[0]["reject_detail"]


def test_storage_failing_mid_file_keeps_the_records_before(tmp_path, c4_docs, flaky):
    docs = c4_docs[:100]
    f = input_file(write_jsonl(tmp_path / "m.jsonl", docs))
    flaky["fail"] = lambda n: n > 3  # three good reads (4 KiB each), then every read fails
    rows = read_file(f, {**READ_CFG, "on_io_error": "reject", "io_retries": 1})
    assert flaky["failed"] == 2
    good = kept(rows)
    assert 0 < len(good) < len(docs)
    assert [r["text"] for r in good] == [d["text"] for d in docs[: len(good)]]
    assert len(rows) == len(good) + 1 and rows[-1]["reject_reason"] == "unreadable_file"
    assert rows[-1]["line"] == len(good) + 1 and "tried 2 times" in rows[-1]["reject_detail"]


def test_an_open_that_keeps_failing(tmp_path, flaky):
    f = input_file(write_jsonl(tmp_path / "o.jsonl", [{"text": GOOD}]))
    flaky["open_fails"] = True
    with pytest.raises(InputUnreadable, match="o.jsonl"):
        read_file(f, {**READ_CFG, "io_retries": 2})
    assert flaky["opens"] == 3
    pq_file = InputFile(f.uri, "o.parquet", "src", "parquet", None, f.size, f.mtime_ns)
    rows = read_file(pq_file, {**READ_CFG, "on_io_error": "reject", "io_retries": 0})
    assert [r["reject_reason"] for r in rows] == ["unreadable_file"]


def test_damaged_parquet_is_a_row_not_an_io_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 500 + b"PAR1")
    rows = read_file(input_file(path))  # on_io_error fail: damage is no I/O error
    assert [r["reject_reason"] for r in rows] == ["unreadable_file"]


# --- files that change after planning ------------------------------------------------------------


def plan(paths, cfg=READ_CFG):
    files = discover([str(p) for p in paths], cfg).files
    return plan_chunks(files, cfg["split_bytes"], lambda jobs: [count_newlines_in_range(*j) for j in jobs])


@pytest.mark.parametrize("comp", [None, "gzip"])
def test_file_truncated_after_planning(tmp_path, c4_docs, comp):
    path = write_jsonl(tmp_path / ("t.jsonl.gz" if comp else "t.jsonl"), c4_docs[:100], comp)
    chunks = plan([path])
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(InputChanged, match="t.jsonl.*size"):
        rows_of(chunks)
    with pytest.raises(InputChanged):  # not a row, whatever on_io_error says
        rows_of(chunks, {**READ_CFG, "on_io_error": "reject"})


def test_file_shorter_than_its_range(tmp_path, c4_docs):
    # Size and mtime unknown at planning: the range's end still tells a truncation
    path = write_jsonl(tmp_path / "s.jsonl", c4_docs[:100])
    size = path.stat().st_size
    f = InputFile(str(path), "s.jsonl", "src", "jsonl", None, -1)
    with open(path, "r+b") as fh:
        fh.truncate(size - 1000)
    with pytest.raises(InputChanged, match="ended at byte"):
        rows_of([Chunk("a", f, 0, size // 2), Chunk("b", f, size // 2, size)])


def test_file_touched_after_planning(tmp_path, c4_docs):
    path = write_jsonl(tmp_path / "m.jsonl", c4_docs[:10])
    chunks = plan([path])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    with pytest.raises(InputChanged, match="m.jsonl.*modified"):
        rows_of(chunks)


def test_file_replaced_keeping_size_and_mtime(tmp_path, c4_docs):
    # `cp -p` or `rsync -t` of another file of the same size: only its bytes tell
    path = write_jsonl(tmp_path / "r.jsonl", c4_docs[:10])
    chunks = plan([path])
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[20:25] = b"XXXXX" if data[20:25] != b"XXXXX" else b"YYYYY"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(InputChanged, match="r.jsonl.*differ"):
        rows_of(chunks)


def test_file_removed_after_planning(tmp_path, c4_docs):
    path = write_jsonl(tmp_path / "gone.jsonl", c4_docs[:10])
    chunks = plan([path])
    path.unlink()
    with pytest.raises(InputChanged, match="removed"):
        rows_of(chunks, {**READ_CFG, "on_io_error": "reject"})


def test_unchanged_planned_file_reads_clean(tmp_path, c4_docs):
    paths = [
        write_jsonl(tmp_path / "a.jsonl", c4_docs[:50]),
        write_jsonl(tmp_path / "b.jsonl.zst", c4_docs[50:90], "zstd"),
    ]
    pq.write_table(pa.table({"text": [d["text"] for d in c4_docs[:20]]}), tmp_path / "c.parquet")
    rows = rows_of(plan([*paths, tmp_path / "c.parquet"]))
    assert len(rows) == 110 and not [r for r in rows if r["reject_reason"]]
