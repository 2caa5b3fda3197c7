"""Input discovery (slimpipe.io.discover): each real file followed once, paths that hold nothing to
read passed over with a reason, unreadable inputs an error or a skip as on_io_error says, the probe
that tells a resumed run an input changed, and the layout sniffed from a file's head."""

import errno
import gzip
import json
import os
import threading

import pyarrow.fs as pafs
import pytest
import zstandard
from conftest import write_jsonl

import slimpipe.io.discover as discovery
from slimpipe.config import load_preset
from slimpipe.errors import InputUnreadable
from slimpipe.io.discover import InputError, discover
from slimpipe.io.inputs import PROBE_BYTES, count_newlines_in_range, input_fingerprint, plan_chunks
from slimpipe.io.probe import sniff_layout

CFG = load_preset("slimpajama")["input"]
REJECT = {**CFG, "on_io_error": "reject"}
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads whatever the mode bits say


def docs(n=3, tag="d"):
    return [{"text": f"{tag} record {i}"} for i in range(n)]


def rels(found):
    return [f.rel for f in found.files]


def reasons(found):
    return {(os.path.basename(s.uri), s.reason) for s in found.skipped}


def no_counting(jobs):
    raise AssertionError(f"nothing should be split: {jobs}")


# --- each real file once ------------------------------------------------------------------------


def test_symlink_loop_reads_each_file_once(tmp_path):
    root = tmp_path / "in"
    write_jsonl(root / "a.jsonl", docs())
    write_jsonl(root / "sub" / "b.jsonl", docs())
    os.symlink(root, root / "sub" / "up")  # a loop: in/sub/up/sub/up/...
    os.symlink("..", root / "sub" / "parent")
    found = discover([str(root)], CFG)
    assert rels(found) == ["a.jsonl", "sub/b.jsonl"]
    assert reasons(found) == {("up", "same_file"), ("parent", "same_file")}
    # a glob through the loop ends too (Python's glob would follow it 40 levels deep, per link)
    globbed = discover([str(root / "**" / "*.jsonl")], CFG)
    assert rels(globbed) == ["a.jsonl", "sub/b.jsonl"]


def test_two_links_to_one_file_read_once(tmp_path):
    root = tmp_path / "in"
    real = write_jsonl(root / "a.jsonl", docs())
    os.symlink(real, root / "b.jsonl")
    os.symlink(real, root / "c.jsonl")
    found = discover([str(root)], CFG)
    assert [f.uri for f in found.files] == [str(real)]
    assert {(s.uri, s.reason, s.detail) for s in found.skipped} == {
        (str(root / "b.jsonl"), "same_file", str(real)),
        (str(root / "c.jsonl"), "same_file", str(real)),
    }
    # the same file named twice, and once more through its folder, is one file and no skip
    again = discover([str(real), str(real), str(root / "a.jsonl")], CFG)
    assert [f.uri for f in again.files] == [str(real)] and again.skipped == []


# --- unreadable folders and files -------------------------------------------------------------


def _refuse(monkeypatch, name, path, how):
    """Make `path` unreadable: by its mode bits, or (root reads whatever they say) by having
    os.<name> refuse it as it would for anyone else."""
    if how == "mode bits":
        if AS_ROOT:
            pytest.skip("root reads whatever the mode bits say")
        path.chmod(0)
        return
    real = getattr(os, name)

    def refusing(p, *args, **kwargs):
        if os.fspath(p) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(p, *args, **kwargs)

    monkeypatch.setattr(discovery.os, name, refusing)


@pytest.mark.parametrize("how", ["mode bits", "refused"])
def test_unreadable_folder_is_an_error_or_a_skip(tmp_path, monkeypatch, how):
    root = tmp_path / "in"
    write_jsonl(root / "ok.jsonl", docs())
    locked = root / "locked"
    write_jsonl(locked / "hidden.jsonl", docs())
    _refuse(monkeypatch, "listdir", locked, how)
    try:
        with pytest.raises(InputError, match="cannot read input folder") as err:
            discover([str(root)], CFG)
        assert str(locked) in str(err.value) and "\n" not in str(err.value)
        assert isinstance(err.value, InputUnreadable)  # an unreadable input (exit 5), said before Ray
        found = discover([str(root)], REJECT)
        assert rels(found) == ["ok.jsonl"]
        assert [(s.uri, s.reason) for s in found.skipped] == [(str(locked), "unreadable_folder")]
        assert "Permission" in found.skipped[0].detail
        # a glob meets the folder too, and says so
        with pytest.raises(InputError, match="locked"):
            discover([str(root / "*" / "*.jsonl")], CFG)
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("how", ["mode bits", "refused"])
def test_unreadable_file_larger_than_split_bytes(tmp_path, monkeypatch, how):
    big = write_jsonl(tmp_path / "in" / "big.jsonl", docs(2000))
    write_jsonl(tmp_path / "in" / "ok.jsonl", docs())
    _refuse(monkeypatch, "open", big, how)
    try:
        with pytest.raises(InputError, match="cannot read input file") as err:
            discover([str(tmp_path / "in")], CFG)
        assert str(big) in str(err.value) and "\n" not in str(err.value)
        found = discover([str(tmp_path / "in")], REJECT)
        bad = next(f for f in found.files if f.uri == str(big))
        assert (bad.size, bad.mtime_ns, bad.probe) == (-1, -1, "")
        # never split (nothing to count lines in): one task reads it and rejects it as unreadable
        chunks = [c for c in plan_chunks(found.files, 1024, no_counting) if c.file.uri == str(big)]
        assert [(c.start, c.end) for c in chunks] == [(0, -1)]
    finally:
        big.chmod(0o644)


def test_broken_link_follows_on_io_error(tmp_path):
    write_jsonl(tmp_path / "in" / "ok.jsonl", docs())
    os.symlink(tmp_path / "nowhere.jsonl", tmp_path / "in" / "dangling.jsonl")
    with pytest.raises(InputError, match="dangling.jsonl"):
        discover([str(tmp_path / "in")], CFG)
    found = discover([str(tmp_path / "in")], REJECT)
    assert [(f.rel, f.size) for f in found.files] == [("dangling.jsonl", -1), ("ok.jsonl", found.files[1].size)]


# --- paths with nothing to read ----------------------------------------------------------------


def test_empty_files_are_passed_over(tmp_path):
    write_jsonl(tmp_path / "ok.jsonl", docs())
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "empty.jsonl.gz").write_bytes(b"")
    (tmp_path / "empty.parquet").write_bytes(b"")
    found = discover([str(tmp_path)], CFG)
    assert rels(found) == ["ok.jsonl"]
    assert reasons(found) == {(n, "empty_file") for n in ("empty.jsonl", "empty.jsonl.gz", "empty.parquet")}
    # only empty files: nothing to read, and no error (stats say why)
    alone = discover([str(tmp_path / "empty.jsonl")], CFG)
    assert alone.files == [] and reasons(alone) == {("empty.jsonl", "empty_file")}


def _discover_within(seconds, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("found", discover(*args)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "discovery hangs on a FIFO"
    return result["found"]


def test_fifo_is_passed_over_unopened(tmp_path):
    write_jsonl(tmp_path / "ok.jsonl", docs())
    os.mkfifo(tmp_path / "x.jsonl")
    found = _discover_within(20, [str(tmp_path)], CFG)
    assert rels(found) == ["ok.jsonl"]
    assert [(s.reason, s.detail) for s in found.skipped] == [("special_file", "a FIFO")]
    named = _discover_within(20, [str(tmp_path / "x.jsonl"), str(tmp_path / "ok.jsonl")], CFG)
    assert reasons(named) == {("x.jsonl", "special_file")}


def test_name_that_is_not_utf8_is_passed_over(tmp_path):
    write_jsonl(tmp_path / "ok.jsonl", docs())
    fd = os.open(os.fsencode(str(tmp_path)) + b"/caf\xe9.jsonl", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b'{"text": "latin-1 name"}\n')
    os.close(fd)
    os.mkdir(os.fsencode(str(tmp_path)) + b"/dir\xff")
    found = discover([str(tmp_path)], CFG)
    assert rels(found) == ["ok.jsonl"]
    assert sorted((s.uri, s.reason) for s in found.skipped) == [
        (str(tmp_path / "caf\\xe9.jsonl"), "undecodable_name"),
        (str(tmp_path / "dir\\xff"), "undecodable_name"),
    ]
    json.dumps([s.uri for s in found.skipped])  # stats can write them


# --- the probe ------------------------------------------------------------------------------------


def _fingerprint(path):
    return input_fingerprint(discover([str(path)], CFG).files)


def test_same_size_edit_changes_the_fingerprint(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", docs(50))
    before = _fingerprint(path)
    assert _fingerprint(path) == before  # stable while nothing changes
    stat = os.stat(path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"record 7", b"record X"))
    assert len(path.read_bytes()) == len(data)
    edited = _fingerprint(path)
    assert edited != before
    # mtime put back: the probe still sees the edit
    path.write_bytes(data.replace(b"record 7", b"record Y"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns
    assert _fingerprint(path) not in (before, edited)


def test_probe_reads_both_ends_of_a_large_file(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", docs(20000))
    assert path.stat().st_size > 4 * PROBE_BYTES
    before = discover([str(path)], CFG).files[0]
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-10] = ord("Z")  # inside the last block
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = discover([str(path)], CFG).files[0]
    assert (after.size, after.mtime_ns) == (before.size, before.mtime_ns) and after.probe != before.probe


# --- layout and separator ------------------------------------------------------------------------


PRETTY = [{"text": "one", "n": 1}, {"text": "two", "n": 2}]


@pytest.mark.parametrize(
    "name, data, layout, separator",
    [
        ("lines.jsonl", b'{"text": "a"}\n{"text": "b"}\n', "lines", "\n"),
        ("array.json", json.dumps(PRETTY, indent=2).encode(), "json", "\n"),
        ("pretty.jsonl", b"".join(json.dumps(d, indent=2).encode() + b"\n" for d in PRETTY), "json", "\n"),
        ("cr.jsonl", b'{"text": "a"}\r{"text": "b"}\r', "lines", "\r"),
        ("cr-one.jsonl", b'{"text": "a"}\r', "lines", "\r"),
        ("crlf.jsonl", b'{"text": "a"}\r\n{"text": "b"}\r\n', "lines", "\n"),
        ("bom.jsonl", b'\xef\xbb\xbf{"text": "a"}\n{"text": "b"}\n', "lines", "\n"),
        ("bom-array.json", b'\xef\xbb\xbf\n  [{"text": "a"},\n {"text": "b"}]\n', "json", "\n"),
        ("array.json.gz", gzip.compress(json.dumps(PRETTY, indent=2).encode()), "json", "\n"),
        ("cr.jsonl.zst", zstandard.ZstdCompressor().compress(b'{"text": "a"}\r{"text": "b"}\r'), "lines", "\r"),
        ("one-line-array.json", json.dumps(PRETTY).encode() + b"\n", "json", "\n"),
        # a JSON Lines file whose first record is an array, or holds a raw \r, stays lines split on \n
        ("array-first.jsonl", b'[1, 2]\n{"text": "a"}\n{"text": "b"}\n', "lines", "\n"),
        ("cr-inside.jsonl", b'{"text":\r "a"}\n{"text": "b"}\n', "lines", "\n"),
        ("open-array.jsonl", b'[{"text": "a"},\n{"text": "b"}]\n', "json", "\n"),
    ],
)
def test_layout_and_separator_are_sniffed(tmp_path, name, data, layout, separator):
    (tmp_path / name).write_bytes(data)
    (f,) = discover([str(tmp_path / name)], CFG).files
    assert (f.layout, f.separator) == (layout, separator)


def test_sniffing_tolerates_damage_and_cuts(tmp_path):
    assert sniff_layout(b"") == ("lines", "\n")
    # a CR at the end of a head cut short may be half of a CRLF
    assert sniff_layout(b'{"text": "a very long line cut at a CR\r', complete=False) == ("lines", "\n")
    assert sniff_layout(b'{"text": "a"}\r', complete=True) == ("lines", "\r")
    damaged = bytearray(gzip.compress(b"".join(json.dumps(d).encode() + b"\n" for d in docs(5000))))
    damaged[200:260] = b"\x00" * 60
    (tmp_path / "damaged.jsonl.gz").write_bytes(bytes(damaged))
    whole = zstandard.ZstdCompressor().compress(json.dumps(docs(20000), indent=2).encode())  # blocks of 128 KiB
    (tmp_path / "cut.json.zst").write_bytes(whole[: len(whole) // 2])
    found = discover([str(tmp_path)], CFG)  # the read stage reports the damage, with the line
    assert [(f.rel, f.layout) for f in found.files] == [("cut.json.zst", "json"), ("damaged.jsonl.gz", "lines")]


def test_json_files_are_not_split_and_cr_files_count_carriage_returns(tmp_path):
    many = [{"text": f"record {i}"} for i in range(3000)]
    (tmp_path / "big.json").write_bytes(json.dumps(many, indent=1).encode())
    (tmp_path / "cr.jsonl").write_bytes(b"".join(json.dumps(d).encode() + b"\r" for d in many))
    files = discover([str(tmp_path)], CFG).files
    jobs = []

    def count(batch):
        jobs.extend(batch)
        return [count_newlines_in_range(*job) for job in batch]

    chunks = plan_chunks(files, 8192, count)
    assert [c for c in chunks if c.file.rel == "big.json"][0].end == -1
    assert len([c for c in chunks if c.file.rel == "big.json"]) == 1
    cr = [c for c in chunks if c.file.rel == "cr.jsonl"]
    assert len(cr) > 1 and {job[3] for job in jobs} == {"\r"}
    assert cr[-1].first_line > 1  # the carriage returns were counted as line ends


# --- ids from two roots -----------------------------------------------------------------------------


def test_two_roots_with_one_layout_give_distinct_rels(tmp_path):
    a = write_jsonl(tmp_path / "a" / "data" / "x.jsonl", docs(tag="a"))
    b = write_jsonl(tmp_path / "b" / "data" / "x.jsonl", docs(tag="b"))
    found = discover([str(tmp_path / "a" / "data"), str(tmp_path / "b" / "data")], CFG)
    assert rels(found) == ["a/data/x.jsonl", "b/data/x.jsonl"]
    assert [f.source for f in found.files] == ["data", "data"]  # sources as before
    # one root keeps the plain rel (ids of existing runs stay)
    assert rels(discover([str(tmp_path / "a" / "data")], CFG)) == ["x.jsonl"]
    # files named one by one: from their folders' common parent, unless they share a folder
    assert rels(discover([str(a), str(b)], CFG)) == ["a/data/x.jsonl", "b/data/x.jsonl"]
    write_jsonl(tmp_path / "a" / "data" / "y.jsonl", docs())
    assert rels(discover([str(a), str(tmp_path / "a" / "data" / "y.jsonl")], CFG)) == ["x.jsonl", "y.jsonl"]
    # globs with different fixed prefixes
    globbed = discover([str(tmp_path / "a" / "*" / "*.jsonl"), str(tmp_path / "b" / "*" / "*.jsonl")], CFG)
    assert rels(globbed) == ["a/data/x.jsonl", "a/data/y.jsonl", "b/data/x.jsonl"]


def test_glob_matching_folders_keeps_their_names_in_rels(tmp_path):
    write_jsonl(tmp_path / "cc" / "x.jsonl", docs())
    write_jsonl(tmp_path / "wiki" / "x.jsonl", docs())
    found = discover([str(tmp_path / "*")], CFG)
    assert rels(found) == ["cc/x.jsonl", "wiki/x.jsonl"]
    assert [f.source for f in found.files] == ["cc", "wiki"]


# --- object stores ----------------------------------------------------------------------------------


class Store:
    """An object store as discovery drives one (pyarrow's mock filesystem underneath): its listing
    can fail, and opening a file can fail `flaky` times before it works."""

    type_name = "mock"

    def __init__(self, objects: dict[str, bytes], fail_listing=False, flaky=0):
        self.fs = pafs.FileSystem.from_uri("mock:///")[0]
        for path, data in objects.items():
            self.fs.create_dir(path.rsplit("/", 1)[0])
            with self.fs.open_output_stream(path) as out:
                out.write(data)
        self.fail_listing, self.flaky = fail_listing, flaky

    def get_file_info(self, what):
        if isinstance(what, pafs.FileSelector) and self.fail_listing:
            raise OSError("AWS Error ACCESS_DENIED during ListObjectsV2 operation")
        return self.fs.get_file_info(what)

    def open_input_file(self, path):
        if self.flaky:
            self.flaky -= 1
            raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation")
        return self.fs.open_input_file(path)


@pytest.fixture
def store(monkeypatch):
    def use(**kwargs):
        s = Store({"bucket/data/x.jsonl": b'{"text": "a"}\n', "bucket/data/e.jsonl": b""}, **kwargs)
        monkeypatch.setattr(discovery, "resolve", lambda uri: (s, uri.split("://", 1)[1]))
        return s

    return use


def test_object_store_files_are_probed(store):
    store()
    found = discover(["mock://bucket/data"], CFG)
    (f,) = found.files
    assert (f.uri, f.rel, f.source, f.size) == ("mock://bucket/data/x.jsonl", "x.jsonl", "data", 14)
    assert f.probe and f.mtime_ns > 0
    assert [(s.uri, s.reason) for s in found.skipped] == [("mock://bucket/data/e.jsonl", "empty_file")]


def test_object_store_listing_that_fails(store):
    store(fail_listing=True)
    with pytest.raises(InputError, match="cannot list input folder mock://bucket/data: OSError: AWS Error"):
        discover(["mock://bucket/data"], CFG)
    found = discover(["mock://bucket/data"], REJECT)
    assert found.files == []
    assert [(s.uri, s.reason) for s in found.skipped] == [("mock://bucket/data", "unreadable_folder")]


def test_object_store_reads_are_retried(store):
    store(flaky=2)
    retrying = {**CFG, "io_retries": 2, "io_retry_backoff_s": 0}
    assert [f.size for f in discover(["mock://bucket/data"], retrying).files] == [14]
    store(flaky=2)
    with pytest.raises(InputError, match="NETWORK_CONNECTION"):
        discover(["mock://bucket/data"], {**retrying, "io_retries": 1})
    store(flaky=5)
    assert [f.size for f in discover(["mock://bucket/data"], {**REJECT, "io_retries": 0}).files] == [-1]
