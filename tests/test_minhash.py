"""MinHash signatures, LSH banding, components and survivors, without Ray."""

import numpy as np
import pyarrow as pa
import pytest
from datasketch import LeanMinHash, MinHash
from datasketch.lsh import _optimal_param
from hypothesis import given, settings
from hypothesis import strategies as st

from slimpipe.config import resolve
from slimpipe.errors import ConfigError
from slimpipe.near import banding_of
from slimpipe.stages.minhash import (
    MinHashParams,
    Signer,
    datasketch_minhash,
    hash32,
    jaccard,
    shingle_set,
    shingles,
    to_datasketch,
)
from slimpipe.stages.near_dedup.components import components
from slimpipe.stages.near_dedup.lsh import bucket_edges, catch_probability, optimal_bands_rows, resolve_bands
from slimpipe.stages.near_dedup.survivors import choose_survivors
from slimpipe.stages.near_dedup.verify import verify

ALL_PARAMS = [
    MinHashParams(shingle=sh, ngram=n, hash=h, scheme=sc, short_docs=short, num_perm=64, seed=seed)
    for sh, n in (("char", 13), ("word", 5), ("char", 1))
    for h in ("sha1", "xxh32")
    for sc in ("affine32", "legacy")
    for short, seed in (("whole", 1), ("skip", 7))
]

SPECIAL = [
    "",
    "   ",
    "!!! ... ???",
    "short",
    "a b c",
    "Exactly thirteen",
    "one two three four five",
    "Grüße aus Köln — naïve café, ÆØÅ; Ελληνικά κείμενα; русский текст; 日本語のテキストです。",
    "emoji 🙂🚀 and combining e\u0301 marks, tabs\tand\nnewlines\n\n  spaced   out",
]


@pytest.fixture(scope="module")
def texts(c4_docs):
    long_doc = " ".join(d["text"] for d in c4_docs[:60])  # more shingles than one fold block
    assert len(long_doc) > 3 * 4096
    return SPECIAL + [d["text"] for d in c4_docs[:25]] + [long_doc]


@pytest.mark.parametrize("params", ALL_PARAMS, ids=lambda p: f"{p.shingle}{p.ngram}-{p.hash}-{p.scheme}-{p.short_docs}")
def test_signatures_equal_datasketch_bit_for_bit(texts, params):
    sigs, counts = Signer(params).sign(texts)
    for text, sig, count in zip(texts, sigs, counts):
        expected = datasketch_minhash(text, params)
        assert count == len(shingles(text, params))
        assert np.array_equal(sig.astype(np.uint64), expected.hashvalues.astype(np.uint64)), text[:60]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab c,.!\n\tÄé日本🙂 -x")), max_size=120))
def test_signatures_equal_datasketch_on_any_text(text):
    for params in (
        MinHashParams(shingle="char", ngram=5, num_perm=16, hash="xxh32", scheme="affine32"),
        MinHashParams(shingle="word", ngram=2, num_perm=16, hash="sha1", scheme="legacy"),
    ):
        sig, _ = Signer(params).sign([text])
        assert np.array_equal(sig[0].astype(np.uint64), datasketch_minhash(text, params).hashvalues.astype(np.uint64))


def test_datasketch_default_matches_the_sha1_affine32_signature(c4_docs):
    """Plain datasketch (its own default hash and scheme) on our shingles gives our signature."""
    params = MinHashParams(shingle="word", ngram=5, hash="sha1", scheme="affine32")
    text = c4_docs[3]["text"]
    m = MinHash(num_perm=128, seed=1)
    m.update_batch(shingles(text, params))
    assert np.array_equal(Signer(params).sign([text])[0][0], m.hashvalues)


def test_stored_signature_loads_as_lean_minhash(c4_docs):
    params = MinHashParams(shingle="word", ngram=5, hash="xxh32", scheme="affine32")
    sigs, _ = Signer(params).sign([d["text"] for d in c4_docs[:2]])
    lean = to_datasketch(sigs[0], params)
    assert isinstance(lean, LeanMinHash)
    assert lean.jaccard(datasketch_minhash(c4_docs[0]["text"], params)) == 1.0
    assert lean.jaccard(to_datasketch(sigs[1], params)) < 0.2


def test_short_documents_follow_the_rule():
    whole = MinHashParams(shingle="word", ngram=5, short_docs="whole")
    skip = MinHashParams(shingle="word", ngram=5, short_docs="skip")
    assert shingles("Only three words!", whole) == [b"only three words"]
    assert shingles("Only three words!", skip) == []
    assert list(Signer(skip).sign(["Only three words!", "..."])[1]) == [0, 0]
    assert list(Signer(whole).sign(["Only three words!", "..."])[1]) == [1, 0]  # nothing to shingle


def test_hash_functions_are_the_published_ones():
    import hashlib
    import struct

    import xxhash

    assert hash32(b"slimpipe", "sha1") == struct.unpack("<I", hashlib.sha1(b"slimpipe").digest()[:4])[0]
    assert hash32(b"slimpipe", "xxh32") == xxhash.xxh32_intdigest(b"slimpipe")


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_band_search_is_datasketchs(threshold):
    assert optimal_bands_rows(threshold, 128) == _optimal_param(threshold, 128, 0.5, 0.5)


def test_banding_records_s_curve():
    b = resolve_bands({"threshold": 0.8, "num_perm": 128, "bands": 9, "rows": 13})
    assert (b["bands"], b["rows"], b["permutations_used"]) == (9, 13, 117)
    assert b["s_curve"]["0.80"] == pytest.approx(catch_probability(0.8, 9, 13), abs=1e-6)
    assert b["s_curve"]["0.50"] < 0.01 < 0.9 < b["s_curve"]["0.95"]
    with pytest.raises(ValueError, match="exceeds num_perm"):
        resolve_bands({"threshold": 0.8, "num_perm": 64, "bands": 9, "rows": 13})


VERIFIED = {"threshold": 0.8, "num_perm": 128, "bands": None, "rows": None, "verify": True, "target_recall": 0.98}


def least_false_candidates(threshold: float, num_perm: int, target: float) -> tuple[int, int]:
    """Brute force over every banding, areas by the midpoint rule: the one that reaches the
    target with the least area under its S-curve below the threshold."""
    s = (np.arange(2000) + 0.5) / 2000 * threshold
    feasible = [
        (b, r)
        for b in range(1, num_perm + 1)
        for r in range(1, num_perm // b + 1)
        if catch_probability(threshold, b, r) >= target
    ]
    return min(feasible, key=lambda br: catch_probability(s, *br).mean())


@pytest.mark.parametrize("threshold, num_perm", [(0.5, 128), (0.7, 64), (0.8, 128), (0.85, 256), (0.9, 128)])
def test_verified_banding_meets_the_recall_target(threshold, num_perm):
    b = resolve_bands({**VERIFIED, "threshold": threshold, "num_perm": num_perm})
    bands, rows = b["bands"], b["rows"]
    assert b["chosen_by"] == "target_recall" and bands * rows <= num_perm
    assert b["recall_at_threshold"] == pytest.approx(catch_probability(threshold, bands, rows), abs=1e-6)
    assert catch_probability(threshold, bands, rows) >= 0.98
    assert catch_probability(threshold, bands - 1, rows) < 0.98  # not a band more than it needs
    assert (bands, rows) == least_false_candidates(threshold, num_perm, 0.98)


def test_recall_target_is_a_setting():
    strict = resolve_bands({**VERIFIED, "target_recall": 0.999})
    assert strict["recall_at_threshold"] >= 0.999 > resolve_bands(VERIFIED)["recall_at_threshold"]
    with pytest.raises(ConfigError, match="target_recall"):  # 4 permutations cannot reach it at 0.3
        banding_of({**VERIFIED, "threshold": 0.3, "num_perm": 4})


def test_unverified_banding_is_datasketchs():
    b = resolve_bands({**VERIFIED, "verify": False})
    assert (b["bands"], b["rows"]) == _optimal_param(0.8, 128, 0.5, 0.5) == (9, 13)
    assert b["chosen_by"] == "datasketch" and b["recall_at_threshold"] == pytest.approx(0.40, abs=0.01)


def test_presets_banding():
    web = resolve_bands(resolve("web")["dedup"]["near"])
    assert (web["bands"], web["rows"], web["chosen_by"]) == (17, 7, "target_recall")
    assert web["recall_at_threshold"] >= 0.98 and web["s_curve"]["0.85"] >= 0.998
    slimpajama = resolve_bands(resolve("slimpajama")["dedup"]["near"])
    assert (slimpajama["bands"], slimpajama["rows"], slimpajama["chosen_by"]) == (9, 13, "config")


def test_a_giant_bucket_gives_one_edge_per_member():
    n = 200_000
    rng = np.random.default_rng(0)
    nodes = rng.permutation(n).astype(np.int64) + 10
    rows = pa.table(
        {
            "band": np.zeros(n, np.int32),
            "key": np.full(n, 42, np.uint64),
            "node": nodes,
            "partition": np.zeros(n, np.int64),
        }
    )
    edges = bucket_edges(rows)
    assert edges.num_rows == n - 1
    assert set(edges["v"].to_pylist()) == {10}
    # a second band with the same bucket adds no new edge; another bucket adds its own
    more = pa.table(
        {
            "band": np.array([1, 1, 0, 0], np.int32),
            "key": np.array([42, 42, 7, 7], np.uint64),
            "node": np.array([11, 10, 500_000, 500_001], np.int64),
            "partition": np.zeros(4, np.int64),
        }
    )
    edges = bucket_edges(pa.concat_tables([rows, more]))
    assert edges.num_rows == n - 1 + 1
    assert edges.filter(pa.compute.equal(edges["u"], 500_001))["v"].to_pylist() == [500_000]


def test_components_of_a_chain_and_a_star():
    u = np.array([5, 6, 7, 100, 101, 102], np.int64)
    v = np.array([6, 7, 8, 99, 99, 99], np.int64)
    nodes, comp = components(u, v)
    assert dict(zip(nodes.tolist(), comp.tolist())) == {5: 5, 6: 5, 7: 5, 8: 5, 99: 99, 100: 99, 101: 99, 102: 99}


def _members(rows):
    cols = ["node", "component", "id", "source", "bytes", "file", "line", "chunk", "reference"]
    t = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})
    sig = np.arange(8, dtype=np.uint32)
    return t.append_column("minhash", pa.array([sig.tobytes()] * len(rows), pa.binary()))


def test_survivor_policies_are_deterministic():
    rows = [
        (1, 1, "b", "cc", 500, "f", 1, "c0", False),
        (2, 1, "a", "cc", 100, "f", 2, "c0", False),
        (3, 1, "c", "wiki", 100, "f", 3, "c0", False),
        (9, 9, "x", "cc", 10, "f", 9, "c0", False),
        (8, 9, "y", "cc", 10, "f", 8, "c0", False),
    ]
    kept = lambda dups: sorted({(d["kept_id"]) for d in dups.to_pylist()})  # noqa: E731
    d, c = choose_survivors(_members(rows), "lowest_id", [])
    assert kept(d) == ["a", "x"] and d.num_rows == 3
    d, _ = choose_survivors(_members(rows), "longest", [])
    assert kept(d) == ["b", "x"]  # equal lengths: the lower id
    d, _ = choose_survivors(_members(rows), "source_priority", ["wiki", "cc"])
    assert kept(d) == ["c", "x"]
    shuffled = _members(rows[::-1])
    assert (
        choose_survivors(shuffled, "longest", [])[0]
        .sort_by("id")
        .equals(choose_survivors(_members(rows), "longest", [])[0].sort_by("id"))
    )
    assert sorted(c["size"].to_pylist()) == [2, 3]
    assert sorted(map(tuple, c["sources"].to_pylist())) == [("cc",), ("cc", "wiki")]


def test_an_earlier_runs_document_always_survives_and_is_never_removed():
    rows = [(1, 1, "a", "cc", 900, "f", 1, "c0", False), (2, 1, "z", "old", 10, "g", 2, "c9", True)]
    d, c = choose_survivors(_members(rows), "longest", [])
    assert d["id"].to_pylist() == ["a"] and d["kept_id"].to_pylist() == ["z"]
    assert c["removed"].to_pylist() == [1] and c["size"].to_pylist() == [2]


def test_verification_keeps_true_pairs_and_drops_template_lookalikes(c4_docs):
    params = MinHashParams(shingle="word", ngram=5, hash="xxh32", scheme="affine32")
    base = " ".join(c4_docs[0]["text"].split())
    close = base.replace(" the ", " a ", 1)
    template = " ".join(c4_docs[1]["text"].split()[:150])
    neg_a = template + " " + " ".join(c4_docs[2]["text"].split()[:120])
    neg_b = template + " " + " ".join(c4_docs[3]["text"].split()[:120])
    assert jaccard(shingle_set(base, params), shingle_set(close, params)) > 0.9
    edges = pa.table({"hi": [2, 4], "lo": [1, 3]})
    texts = pa.table({"node": [2, 1, 4, 3], "text": [close, base, neg_b, neg_a]})
    out = verify(edges, texts, params, 0.8)
    assert out["u"].to_pylist() == [2]
    assert out["similarity"][0].as_py() > 0.9


@pytest.mark.parametrize(
    "params",
    [MinHashParams(), MinHashParams(shingle="word", ngram=5, hash="xxh32", scheme="affine32", short_docs="skip")],
)
def test_torch_path_gives_the_same_signatures(texts, params):
    """The GPU path's arithmetic, run by torch on the CPU (on a GPU where one is present)."""
    torch = pytest.importorskip("torch")
    expected, counts = Signer(params).sign(texts)
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        sigs, torch_counts = Signer(params, device=device).sign(texts)
        assert np.array_equal(sigs, expected) and np.array_equal(torch_counts, counts)


def test_gpu_device_without_a_gpu_is_a_clear_error(ray_session, tmp_path, c4_docs):
    from conftest import write_jsonl

    from slimpipe.config import resolve
    from slimpipe.errors import ConfigError
    from slimpipe.runner import run

    if ray_session.cluster_resources().get("GPU"):
        pytest.skip("this machine has a GPU")
    write_jsonl(tmp_path / "in" / "a.jsonl", c4_docs[:5])
    config = resolve("slimpajama", None, ["dedup.near.device=gpu"], [str(tmp_path / "in")], str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="no GPU"):
        run(config)


def test_both_sha1_kernels_equal_hashlib():
    """The compiled SHA-1 and libcrypto's (used where the machine has it) give the same digest
    prefix as hashlib for every length, one and several blocks."""
    import hashlib
    import struct

    from slimpipe.stages import shingle_hash

    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 400, dtype=np.uint8)
    w = np.empty(80, np.uint64)
    kernels = [shingle_hash._sha1_32] + ([shingle_hash._sha1_32_openssl] if shingle_hash.OPENSSL_SHA1 else [])
    for n in range(0, 200):
        expected = struct.unpack("<I", hashlib.sha1(bytes(data[7 : 7 + n])).digest()[:4])[0]
        assert all(k(data, 7, 7 + n, w) == expected for k in kernels), n


def test_shingle_hash_from_python_is_the_kernels_hash():
    import hashlib
    import struct

    import xxhash

    from slimpipe.stages.shingle_hash import HASH_TAGS, shingle_hash

    data = np.frombuffer("naïve shingles, 東京".encode(), np.uint8)
    w = np.empty(80, np.uint64)
    for start, end in ((0, 6), (3, 17), (0, len(data))):
        piece = data[start:end].tobytes()
        assert (
            shingle_hash(HASH_TAGS["sha1"], data, start, end, w)
            == struct.unpack("<I", hashlib.sha1(piece).digest()[:4])[0]
        )
        assert shingle_hash(HASH_TAGS["xxh32"], data, start, end, w) == xxhash.xxh32_intdigest(piece)
