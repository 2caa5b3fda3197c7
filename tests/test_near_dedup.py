"""Near-dedup end to end on Ray: planted families of known Jaccard, template look-alikes, a giant
cluster, survivor policy, resume in the middle of near-dedup, and dedup against an earlier run."""

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from slimpipe import cli, near
from slimpipe.config import resolve
from slimpipe.runner import run
from slimpipe.stages.minhash import MinHashParams, jaccard, shingle_set
from slimpipe.stages.near_dedup import find_components
from slimpipe.stages.normalize import normalize_text
from slimpipe.stages.shuffle import Shuffle

# The web preset's near-dedup on the slimpajama preset's filters (the length rule only), so that
# every planted document reaches dedup.
NEAR = [
    "dedup.near.shingle=word",
    "dedup.near.ngram=5",
    "dedup.near.hash=xxh32",
    "dedup.near.scheme=affine32",
    "dedup.near.bands=null",
    "dedup.near.rows=null",
    "dedup.near.verify=true",
]
RATES = [0.0, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3]


def mutate(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    words = text.split()
    return " ".join(rng.choice(vocab) if rng.random() < rate else w for w in words)


def planted_corpus(root, docs, seed=0):
    """Bases from real web pages; per base a family of edited copies (words replaced at RATES);
    pages sharing one long template with different bodies; one page copied 150 times with one
    word changed in each copy. Returns the records and the planted pairs."""
    rng = random.Random(seed)
    docs = [d["text"] for d in docs if len(d["text"].split()) >= 250]
    vocab = sorted({w for d in docs for w in d.split()})
    records, pairs = [], []
    for i, base in enumerate(docs[:40]):
        records.append({"id": f"base-{i:03d}", "text": base, "source": "crawl"})
        for k, rate in enumerate(RATES[1:]):
            records.append(
                {
                    "id": f"base-{i:03d}-v{k}",
                    "text": mutate(base, rate, rng, vocab),
                    "source": "crawl" if k % 2 else "mirror",
                }
            )
            pairs.append((f"base-{i:03d}", f"base-{i:03d}-v{k}"))
    template = " ".join(" ".join(docs[40 + j].split()[:60]) for j in range(3))
    for j in range(20):
        body = " ".join(docs[50 + j].split()[:200])
        records.append({"id": f"template-{j:02d}", "text": template + "\n" + body, "source": "crawl"})
    giant = docs[45].split()
    for j in range(150):
        words = list(giant)
        words[rng.randrange(len(words))] = f"token{j}"
        records.append({"id": f"giant-{j:03d}", "text": " ".join(words), "source": "crawl"})
    rng.shuffle(records)
    write_jsonl(root / "a.jsonl", records[: len(records) // 2])
    write_jsonl(root / "b.jsonl.zst", records[len(records) // 2 :], "zstd")
    return records, pairs


def config_for(inputs, out, *sets):
    return resolve(
        "slimpajama",
        None,
        ["input.split_bytes=65536", "input.source_field=source", "ray.progress_bars=false", *NEAR, *sets],
        [str(p) for p in inputs],
        str(out),
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory, c4_docs):
    root = tmp_path_factory.mktemp("planted")
    records, pairs = planted_corpus(root / "in", c4_docs)
    return root, records, pairs


@pytest.fixture(scope="module")
def near_run(ray_session, planted):
    root, _, _ = planted
    out = root / "run"
    stats = run(config_for([root / "in"], out))
    return out, stats


def survivor_of(out):
    """id -> the document that stands for it in the output (itself, if kept), through exact and
    near removals."""
    kept_for = {d["id"]: d["kept_id"] for d in pq.read_table(out / "duplicates").to_pylist()}

    def root(doc_id):
        while doc_id in kept_for:
            doc_id = kept_for[doc_id]
        return doc_id

    return root


def true_jaccard(a: str, b: str) -> float:
    params = MinHashParams(shingle="word", ngram=5, hash="xxh32", scheme="affine32")
    return jaccard(shingle_set(normalize_text(a), params), shingle_set(normalize_text(b), params))


def test_planted_families_are_found_and_false_merges_avoided(near_run, planted):
    out, stats = near_run
    _, records, pairs = planted
    text = {r["id"]: r["text"] for r in records}
    root = survivor_of(out)
    merged = lambda a, b: root(a) == root(b)  # noqa: E731
    high = [(a, b) for a, b in pairs if true_jaccard(text[a], text[b]) >= 0.9]
    low = [(a, b) for a, b in pairs if true_jaccard(text[a], text[b]) < 0.6]
    assert len(high) >= 80 and len(low) >= 100
    assert sum(merged(a, b) for a, b in high) == len(high)
    assert not any(merged(a, b) for a, b in low)
    assert stats["conservation"]["holds"]


def test_template_lookalikes_are_kept(near_run):
    out, _ = near_run
    kept = set(pq.read_table(out / "documents", columns=["id"])["id"].to_pylist())
    assert {f"template-{j:02d}" for j in range(20)} <= kept


def test_giant_cluster_is_one_cluster_with_one_survivor(near_run):
    out, stats = near_run
    clusters = pq.read_table(out / "clusters").to_pylist()
    giant = [c for c in clusters if c["kept_id"].startswith("giant-")]
    assert len(giant) == 1
    assert giant[0]["size"] == 150 and giant[0]["removed"] == 149
    assert giant[0]["kept_id"] == "giant-000"  # lowest id
    assert stats["near_dedup"]["largest_cluster"] == 150
    assert stats["near_dedup"]["cluster_sizes"]["101-1000"] == 1


def test_duplicates_rows_and_clusters_agree(near_run):
    out, stats = near_run
    dups = [d for d in pq.read_table(out / "duplicates").to_pylist() if d["kind"] == "near"]
    clusters = {c["cluster_id"]: c for c in pq.read_table(out / "clusters").to_pylist()}
    kept = set(pq.read_table(out / "documents", columns=["id"])["id"].to_pylist())
    assert sum(c["removed"] for c in clusters.values()) == len(dups)
    for d in dups:
        c = clusters[d["cluster_id"]]
        assert d["kept_id"] == c["kept_id"] and d["kept_id"] in kept and d["id"] not in kept
        assert d["source"] in c["sources"] and 0.5 < d["similarity"] <= 1.0
    run_json = json.loads((out / "run.json").read_text())
    banding = run_json["stages"]["near_dedup"]["banding"]
    assert banding == stats["near_dedup"]["banding"] and banding["bands"] * banding["rows"] <= 128
    assert stats["near_dedup"]["verify"]["verified"] <= stats["near_dedup"]["verify"]["candidates"]
    assert sum(s["near_dedup"]["duplicates"] for s in stats["sources"].values()) == len(dups)
    cross = stats["duplicates_cross_source"]["near"]
    assert cross["mirror"]["crawl"] > 0  # mirror copies removed in favour of crawl originals


def _rows(folder, key: str) -> list[dict]:
    return pq.read_table(folder).sort_by(key).to_pylist()


def test_many_partitions_give_the_output_of_one(ray_session, planted, near_run, tmp_path):
    """Every shuffle forced into many partitions (the giant cluster's 150 members among them):
    exact dedup, ids, LSH, verification and survivors write what one partition writes."""
    root, _, _ = planted
    out, stats = near_run
    forced = tmp_path / "run"
    stats_forced = run(config_for([root / "in"], forced, "ray.partition_rows=60"))
    state = json.loads((forced / "run.json").read_text())["stages"]
    one = json.loads((out / "run.json").read_text())["stages"]
    assert state["exact_dedup"]["partitions"] > 1 and one["exact_dedup"]["partitions"] == 1
    for step in ("lsh", "verify", "survivors"):
        assert state["near_dedup"][step]["partitions"] > one["near_dedup"][step]["partitions"], step
    assert state["near_dedup"]["verify"]["candidates"] == one["near_dedup"]["verify"]["candidates"]
    assert stats_forced["conservation"] == stats["conservation"]
    assert _rows(forced / "duplicates", "id") == _rows(out / "duplicates", "id")
    assert _rows(forced / "clusters", "cluster_id") == _rows(out / "clusters", "cluster_id")
    assert _rows(forced / "documents", "id") == _rows(out / "documents", "id")


def test_dups_cli_shows_a_near_cluster_side_by_side(near_run, capsys):
    out, _ = near_run
    giant = [c for c in pq.read_table(out / "clusters").to_pylist() if c["kept_id"].startswith("giant-")][0]
    assert cli.main(["dups", str(out), "--cluster", giant["cluster_id"]]) == 0
    shown = capsys.readouterr().out
    assert "kind near" in shown and "kept giant-000" in shown and "and 144 more" in shown
    assert "[-" in shown and "{+" in shown  # the changed word, marked on both sides
    assert "jaccard" in shown


def test_source_priority_survivor(ray_session, planted, tmp_path):
    root, _, _ = planted
    stats = run(
        config_for(
            [root / "in"],
            tmp_path / "run",
            "dedup.near.survivor=source_priority",
            "dedup.near.source_priority=[mirror, crawl]",
        )
    )
    dups = [d for d in pq.read_table(tmp_path / "run" / "duplicates").to_pylist() if d["kind"] == "near"]
    families = [d for d in dups if d["id"].startswith("base-")]
    assert families and all(d["kept_source"] == "mirror" for d in families)
    assert stats["conservation"]["holds"]


def test_resume_in_the_middle_of_near_dedup(ray_session, planted, near_run, tmp_path, monkeypatch):
    root, _, _ = planted
    out = tmp_path / "run"
    config = config_for([root / "in"], out)

    def crash(*args, **kwargs):
        raise RuntimeError("killed in the survivors step")

    with monkeypatch.context() as m:
        m.setattr(near, "_survivors", crash)
        with pytest.raises(RuntimeError, match="survivors step"):
            run(config)
    state = json.loads((out / "run.json").read_text())["stages"]["near_dedup"]
    assert state["steps_done"] == ["lsh", "verify", "components"]
    edges_before = sorted(p.stat().st_mtime_ns for p in (out / "_work" / "near" / "edges").iterdir())
    run(config)
    edges_after = sorted(p.stat().st_mtime_ns for p in (out / "_work" / "near" / "edges").iterdir())
    assert edges_before == edges_after  # finished steps are not redone
    ref_out, _ = near_run
    for sub in ("duplicates", "clusters"):
        assert (
            pq.read_table(out / sub)
            .sort_by("id" if sub == "duplicates" else "cluster_id")
            .select(["cluster_id", "kept_id"])
            .equals(
                pq.read_table(ref_out / sub)
                .sort_by("id" if sub == "duplicates" else "cluster_id")
                .select(["cluster_id", "kept_id"])
            )
        )


def test_dedup_against_an_earlier_run(ray_session, planted, tmp_path):
    _, records, _ = planted
    old = [r for r in records if r["id"].startswith("base-") and "-v" not in r["id"]]
    new = [r for r in records if "-v" in r["id"]] + [{"id": "fresh", "text": "A new page. " * 40}]
    write_jsonl(tmp_path / "old" / "old.jsonl", old)
    write_jsonl(tmp_path / "new" / "new.jsonl", new)
    run(config_for([tmp_path / "old"], tmp_path / "run-old"))
    stats = run(config_for([tmp_path / "new"], tmp_path / "run-new", f"dedup.near.against=[{tmp_path / 'run-old'}]"))
    root = survivor_of(tmp_path / "run-new")
    kept = set(pq.read_table(tmp_path / "run-new" / "documents", columns=["id"])["id"].to_pylist())
    old_ids = {r["id"] for r in old}
    # the light edits of pages already published are removed in favour of the published page
    assert all(root(f"base-{i:03d}-v0") == f"base-{i:03d}" for i in range(40))
    assert "fresh" in kept and not (kept & old_ids)
    assert stats["conservation"]["holds"]
    with pytest.raises(Exception, match="MinHash settings"):
        run(
            config_for(
                [tmp_path / "new"],
                tmp_path / "run-bad",
                "dedup.near.ngram=7",
                f"dedup.near.against=[{tmp_path / 'run-old'}]",
            )
        )


def edited_copy(base: str, lo: float, hi: float, rng: random.Random, vocab: list[str]) -> str | None:
    """A copy of base with words replaced whose true Jaccard to it lies in [lo, hi), or None."""
    mid = (lo + hi) / 2
    rate = 1 - (2 * mid / (1 + mid)) ** (1 / 5)  # a copy keeps about (1 - rate)^5 of the 5-grams
    for _ in range(50):
        copy = mutate(base, rate, rng, vocab)
        if lo <= true_jaccard(base, copy) < hi:
            return copy
    return None


@pytest.fixture(scope="module")
def graded(ray_session, tmp_path_factory, c4_docs):
    """Real pages, each with one edited copy: half the pairs at true Jaccard 0.82-0.88, just above
    the web preset's threshold (0.8), half at 0.55-0.65; run with the web preset's near-dedup."""
    rng = random.Random(1)
    docs = [d["text"] for d in c4_docs if len(d["text"].split()) >= 250][70:150]
    vocab = sorted({w for d in docs for w in d.split()})
    records, pairs = [], {"high": [], "low": []}
    for i, base in enumerate(docs):
        kind, lo, hi = ("high", 0.82, 0.88) if i % 2 == 0 else ("low", 0.55, 0.65)
        copy = edited_copy(base, lo, hi, rng, vocab)
        if copy is not None:
            records += [
                {"id": f"page-{i:03d}", "text": base, "source": "crawl"},
                {"id": f"page-{i:03d}-copy", "text": copy, "source": "crawl"},
            ]
            pairs[kind].append((f"page-{i:03d}", f"page-{i:03d}-copy"))
    root = tmp_path_factory.mktemp("graded")
    write_jsonl(root / "in" / "pages.jsonl", records)
    return root / "run", run(config_for([root / "in"], root / "run")), pairs


def test_pairs_just_above_the_threshold_are_merged_and_far_pairs_are_not(graded, capsys):
    out, stats, pairs = graded
    assert len(pairs["high"]) >= 35 and len(pairs["low"]) >= 35
    root = survivor_of(out)
    assert [p for p in pairs["high"] if root(p[0]) != root(p[1])] == []
    assert [p for p in pairs["low"] if root(p[0]) == root(p[1])] == []
    banding = stats["near_dedup"]["banding"]
    assert banding["chosen_by"] == "target_recall" and banding["recall_at_threshold"] >= 0.98
    assert cli.main(["stats", str(out)]) == 0
    assert "17 bands x 7 rows (threshold 0.8, expected recall there 0.982" in capsys.readouterr().out


def _edge_files(folder, u, v, files: int, seed: int = 0) -> str:
    """Edges (u, v) shuffled into `files` Parquet files, each edge in a random orientation."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(u))
    flip = rng.random(len(u)) < 0.5
    a, b = np.where(flip, v, u)[order], np.where(flip, u, v)[order]
    folder.mkdir(parents=True)
    for i, (x, y) in enumerate(zip(np.array_split(a, files), np.array_split(b, files))):
        pq.write_table(pa.table({"u": x, "v": y}), folder / f"part-{i:05d}.parquet")
    return str(folder)


def _components_of(edges_uri, out, task_edges: int) -> tuple[dict, dict]:
    edges = pq.read_table(edges_uri).num_rows
    shuffle = Shuffle(partition_rows=2_000, partition_bytes=1 << 30, max_task_memory=1 << 30)  # many partitions
    figures = find_components(edges_uri, edges, str(out), task_edges, str(out.parent / f"{out.name}-rounds"), shuffle)
    t = pq.read_table(out)
    return dict(zip(t["node"].to_pylist(), t["component"].to_pylist())), figures


@pytest.mark.slow
def test_components_in_rounds_equal_union_find_and_join_a_long_chain(ray_session, tmp_path):
    rng = np.random.default_rng(1)
    # a chain of 2,000 near-duplicates in shuffled node numbers, a clique, pairs, and random
    # sparse edges among 3,000 other nodes: the chain's diameter must not set the rounds
    chain = rng.permutation(np.arange(10_000, 12_000))
    clique = np.arange(20_000, 20_030)
    cu, cv = np.triu_indices(len(clique), 1)
    sparse_u, sparse_v = rng.integers(30_000, 33_000, 2_500), rng.integers(30_000, 33_000, 2_500)
    u = np.concatenate([chain[:-1], clique[cu], np.arange(40_000, 40_200, 2), sparse_u])
    v = np.concatenate([chain[1:], clique[cv], np.arange(40_001, 40_201, 2), sparse_v])
    edges = _edge_files(tmp_path / "edges", u, v, files=7)

    threads = pa.cpu_count(), pa.io_thread_count()
    one_task, f1 = _components_of(edges, tmp_path / "one", task_edges=10**9)
    rounds, f2 = _components_of(edges, tmp_path / "rounds", task_edges=800)  # about 7 partitions
    # the driver's pyarrow is left as it was (Ray's own Parquet reader resizes its thread pools,
    # after which pyarrow's group_by fails in the driver)
    assert (pa.cpu_count(), pa.io_thread_count()) == threads
    assert f1["rounds"] == 0 and 1 <= f2["rounds"] <= 20
    assert rounds == one_task
    assert {k: f2[k] for k in ("edges", "nodes", "components")} == {
        "edges": len({(max(a, b), min(a, b)) for a, b in zip(u.tolist(), v.tolist()) if a != b}),
        "nodes": f1["nodes"],
        "components": f1["components"],
    }
    assert {rounds[int(n)] for n in chain} == {int(chain.min())}  # one cluster, named by its lowest node
    assert {rounds[int(n)] for n in clique} == {20_000}
    assert not list((tmp_path / "rounds-rounds").glob("*"))  # the rounds' edges are cleared


@pytest.mark.slow
def test_near_dedup_with_components_in_rounds_gives_the_same_output(ray_session, planted, near_run, tmp_path):
    root, _, _ = planted
    out, stats = near_run
    forced = tmp_path / "run"
    stats_forced = run(config_for([root / "in"], forced, "dedup.near.components_task_edges=5"))
    state = json.loads((forced / "run.json").read_text())["stages"]["near_dedup"]["components"]
    assert state["rounds"] >= 1
    assert stats_forced["conservation"] == stats["conservation"]
    for folder in ("duplicates", "clusters"):
        assert (
            pq.read_table(forced / folder)
            .sort_by("id" if folder == "duplicates" else "cluster_id")
            .equals(pq.read_table(out / folder).sort_by("id" if folder == "duplicates" else "cluster_id"))
        )


@pytest.mark.slow
def test_a_chain_of_2000_near_duplicates_is_one_cluster_with_one_survivor(ray_session, c4_docs, tmp_path):
    """Each page is the one before with one word replaced, so the first and the last share
    nothing; components in rounds and survivors over many partitions still make one cluster."""
    rng = random.Random(5)
    words = " ".join(d["text"] for d in c4_docs[:40]).split()
    vocab = sorted(set(words))
    page = words[:150]
    records = []
    for i in range(2000):
        page = list(page)
        page[rng.randrange(len(page))] = rng.choice(vocab)
        records.append({"id": f"chain-{i:04d}", "text": " ".join(page), "source": "crawl"})
    params = MinHashParams(shingle="word", ngram=5, hash="xxh32", scheme="affine32")
    first, last = (shingle_set(normalize_text(r["text"]), params) for r in (records[0], records[-1]))
    assert jaccard(first, last) < 0.1
    write_jsonl(tmp_path / "in" / "chain.jsonl", records)
    sets = ["dedup.near.components_task_edges=100", "ray.partition_rows=500", "dedup.exact.enabled=false"]
    run(config_for([tmp_path / "in"], tmp_path / "run", *sets))
    state = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]["near_dedup"]
    assert state["components"]["rounds"] >= 1 and state["survivors"]["partitions"] > 1
    clusters = pq.read_table(tmp_path / "run" / "clusters").to_pylist()
    assert [(c["size"], c["removed"], c["kept_id"]) for c in clusters] == [(2000, 1999, "chain-0000")]
    assert pq.read_table(tmp_path / "run" / "documents", columns=["id"])["id"].to_pylist() == ["chain-0000"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["push_sort", "hash"])
def test_every_shuffle_strategy_gives_the_same_output(ray_session, planted, near_run, tmp_path, strategy):
    """ray.shuffle changes how rows move, not where they land (hash on 2 CPUs too: its aggregator
    actors ask for a tenth of a CPU, so a chain of shuffles cannot hold every CPU)."""
    root, _, _ = planted
    out, stats = near_run
    other = run(config_for([root / "in"], tmp_path / "run", f"ray.shuffle={strategy}"))
    assert other["conservation"] == stats["conservation"]
    for folder, key in [("documents", "id"), ("duplicates", "id"), ("clusters", "cluster_id")]:
        assert _rows(tmp_path / "run" / folder, key) == _rows(out / folder, key), folder
