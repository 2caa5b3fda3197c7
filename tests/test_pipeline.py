"""End to end on Ray: a generated corpus of real web text with planted duplicates and every kind
of bad input, checked for conservation, determinism, resume and the CLI."""

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import make_corpus, write_jsonl

from slimpipe import cli
from slimpipe.config import resolve
from slimpipe.errors import RunConflict
from slimpipe.runner import run

HUGE = 50 * 2**20


def add_bad_inputs(root: Path) -> dict:
    bad = root / "bad"
    good = "This record is long enough to pass the length rule. " * 5
    write_jsonl(
        bad / "mixed.jsonl",
        [
            {"text": good + "one"},
            b'{"text": "broken json',
            {"title": "no text"},
            {"text": None},
            {"text": ["not", "a", "string"]},
            b'{"text": "bytes \xff\xfe that are not utf-8 ' + good.encode() + b'"}',
        ],
    )
    (bad / "empty.jsonl").write_bytes(b"")
    data = zstandard.ZstdCompressor().compress(
        b"".join(json.dumps({"text": good + str(i)}).encode() + b"\n" for i in range(400))
    )
    (bad / "truncated.jsonl.zst").write_bytes(data[: len(data) // 2])
    os.symlink(root / "missing-target.jsonl", bad / "unreadable.jsonl")
    huge = ("A single enormous web page that never ends. " * (HUGE // 44 + 1))[:HUGE]
    write_jsonl(bad / "huge.jsonl", [{"text": huge}])
    return {
        "malformed_json": 1,
        "missing_text": 1,
        "null_text": 1,
        "text_not_string": 1,
        "corrupt_stream": 1,
        "unreadable_file": 1,
    }


def config_for(inputs, output, **sets):
    # the dangling link among the bad inputs becomes a row, not the end of the run
    overrides = ["input.split_bytes=65536", "output.shard_bytes=300000", "input.on_io_error=reject"]
    overrides += [f"{k}={v}" for k, v in sets.items()]
    return resolve("slimpajama", None, overrides, [str(p) for p in inputs], str(output))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, c4_docs):
    root = tmp_path_factory.mktemp("corpus")
    planted = make_corpus(root, c4_docs)
    planted["bad"] = add_bad_inputs(root)
    return root, planted


@pytest.fixture(scope="module")
def first_run(ray_session, corpus, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("run") / "r1"
    return out, run(config_for([root], out))


def test_conservation_and_counts(corpus, first_run):
    root, planted = corpus
    out, stats = first_run
    c = stats["conservation"]
    assert c["holds"]
    docs = pa.concat_tables(pq.read_table(p) for p in sorted((out / "documents").glob("*.parquet")))
    rejected = pq.read_table(out / "rejected")
    dups = pq.read_table(out / "duplicates")
    assert docs.num_rows == c["kept"] and rejected.num_rows == c["rejected"] and dups.num_rows == c["duplicates"]
    assert c["input_records"] == docs.num_rows + rejected.num_rows + dups.num_rows
    # Every input line is accounted for exactly once, by (file, line).
    seen = [(f, n) for t in (docs, rejected, dups) for f, n in zip(t["file"].to_pylist(), t["line"].to_pylist())]
    assert len(seen) == len(set(seen))
    assert dups.num_rows == planted["duplicates"]
    reasons = {}
    for r in rejected.select(["stage", "reason"]).to_pylist():
        reasons[(r["stage"], r["reason"])] = reasons.get((r["stage"], r["reason"]), 0) + 1
    for reason, n in planted["bad"].items():
        assert reasons[("read", reason)] == n
    assert reasons[("filter", "length.too_short")] >= planted["short"]
    # a file with no bytes holds no record: passed over by name, not a row
    assert stats["inputs"]["skipped"] == {"empty_file": 1}
    assert stats["inputs"]["skipped_files"][0]["file"].endswith("bad/empty.jsonl")


def test_outputs_are_as_documented(first_run):
    out, stats = first_run
    manifest = json.loads((out / "documents" / "_manifest.json").read_text())
    assert len(manifest["shards"]) == stats["output"]["shards"] > 1
    for shard in manifest["shards"]:
        data = (out / shard["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    docs = pq.read_table(out / manifest["shards"][0]["file"])
    assert {"id", "text", "source", "url", "meta"} <= set(docs.schema.names)
    huge = pq.read_table(out / "documents", filters=[("source", "=", "bad")])
    assert max(len(t) for t in huge["text"].to_pylist()) >= 40 * 2**20
    dup = pq.read_table(out / "duplicates").to_pylist()
    assert {d["kind"] for d in dup} == {"exact"}
    kept_ids = set(pq.read_table(out / "documents", columns=["id"])["id"].to_pylist())
    assert all(d["kept_id"] in kept_ids and d["id"] not in kept_ids for d in dup)
    bad_row = pq.read_table(out / "rejected", filters=[("reason", "=", "malformed_json")]).to_pylist()[0]
    assert bad_row["raw"] == b'{"text": "broken json' and bad_row["line"] == 2
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "done" and run_json["config"]["preset"] == "slimpajama"
    assert (out / "report.html").read_text().count("<table>") == 1
    assert not list(out.rglob("*.tmp-*"))


def test_stats_per_source(first_run):
    _, stats = first_run
    s = stats["sources"]
    assert set(s) == {"web", "news", "bad"}
    # The news copy comes first by (file, line), so it survives and the web copies go.
    assert stats["duplicates_cross_source"]["exact"]["web"]["news"] >= 15
    assert s["bad"]["read"]["utf8_repaired"] == 1
    assert s["bad"]["rejected_by_reason"]["read: malformed_json"] == 1
    assert s["web"]["rejected_by_reason"]["filter: length.too_short"] >= 7
    for src in s.values():
        assert (
            src["read"]["records"]
            == src["read"]["rejected"]
            + src["filter"]["rejected"]
            + src["exact_dedup"]["duplicates"]
            + src["near_dedup"]["duplicates"]
            + src["output"]["documents"]
        )
    assert s["web"]["exact_dedup"]["byte_duplication_pct"] > 0
    assert stats["totals"]["output"]["documents"] == stats["output"]["documents"]


def test_same_input_same_output(ray_session, corpus, first_run, tmp_path):
    root, _ = corpus
    out1, _ = first_run
    run(config_for([root], tmp_path / "r2"))
    m1 = json.loads((out1 / "documents" / "_manifest.json").read_text())
    m2 = json.loads((tmp_path / "r2" / "documents" / "_manifest.json").read_text())
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    d1 = pq.read_table(out1 / "duplicates").sort_by("id")
    d2 = pq.read_table(tmp_path / "r2" / "duplicates").sort_by("id")
    assert d1.equals(d2)


def test_rerun_reuses_everything_and_changed_config_is_refused(ray_session, corpus, first_run):
    root, _ = corpus
    out, stats = first_run
    before = {p: p.stat().st_mtime_ns for p in (out / "documents").glob("*.parquet")}
    again = run(config_for([root], out))
    assert again["conservation"] == stats["conservation"] and again["resumed"]
    assert {p: p.stat().st_mtime_ns for p in (out / "documents").glob("*.parquet")} == before
    with pytest.raises(RunConflict, match=r"filters.length.min_chars: 200 -> 100"):
        run(config_for([root], out, **{"filters.length.min_chars": 100}))


def test_cli_sample_stats_dups_and_errors(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run"]) == 0
    out = capsys.readouterr().out
    assert "conservation holds" in out
    assert (tmp_path / "runs" / "sample" / "stats.json").exists()
    assert cli.main(["stats", "runs/sample", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sources"]["oscar"]["exact_dedup"]["duplicates"] == 2
    assert cli.main(["dups", "runs/sample", "--sample", "1"]) == 0
    assert "kept" in capsys.readouterr().out
    assert cli.main(["run", "--input", str(tmp_path / "does-not-exist"), "--output", "x"]) == 2
    assert "input path does not exist" in capsys.readouterr().err
    assert cli.main(["run", "--set", "filters.length.minchars=3"]) == 2
    assert "unknown config key 'filters.length.minchars'" in capsys.readouterr().err
