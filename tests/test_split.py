"""Train/holdout split and decontamination: unit rules, then end to end on Ray."""
import pyarrow.parquet as pq

from slimpipe.config import resolve
from slimpipe.runner import run
from slimpipe.stages.decontaminate import Contaminants, contaminant_hashes, holdout_mask
from slimpipe.stages.normalize import normalize_text, text_hash

from conftest import write_jsonl


def test_holdout_is_deterministic_by_id_and_near_the_ratio():
    ids = [f"doc-{i}" for i in range(20000)]
    mask = holdout_mask(ids, 0.1, seed=3)
    assert 0.09 < mask.mean() < 0.11
    # the same id lands on the same side whatever else is in the batch, and a seed reshuffles
    assert list(holdout_mask(ids[5000:5100], 0.1, 3)) == list(mask[5000:5100])
    assert list(holdout_mask(ids, 0.1, 4)) != list(mask)
    assert not holdout_mask(ids, 0.0, 3).any()


def _index(texts, ngram):
    norms = [normalize_text(t) for t in texts]
    return Contaminants(contaminant_hashes(norms, [text_hash(n) for n in norms], ngram))


def test_exact_and_ngram_contamination(c4_docs):
    eval_text = c4_docs[0]["text"]
    quote = " ".join(eval_text.split()[20:40])
    index = _index([eval_text], 13)
    check = lambda t: index.check(normalize_text(t), text_hash(normalize_text(t)), 13)  # noqa: E731
    assert check(eval_text.upper()) == ("decontaminate.exact", 1.0)  # the same once normalised
    reason, shared = check(c4_docs[5]["text"] + "\n" + quote)
    assert reason == "decontaminate.ngram" and shared == 20 - 13 + 1
    assert check(c4_docs[5]["text"]) is None
    assert check(" ".join(eval_text.split()[20:32])) is None  # 12 words: shorter than one 13-gram
    exact_only = _index([eval_text], 0)
    assert exact_only.check(normalize_text(quote), text_hash(normalize_text(quote)), 0) is None


def test_split_and_decontamination_end_to_end(ray_session, c4_docs, tmp_path):
    docs = [dict(d, id=f"doc-{i}") for i, d in enumerate(c4_docs[:200])]
    held = [d for d in docs if holdout_mask([d["id"]], 0.2, 0)[0]]
    train = [d for d in docs if not holdout_mask([d["id"]], 0.2, 0)[0]]
    assert len(held) >= 20
    # train pages quoting 30 words of a holdout page, and one quoting the evaluation set
    quoting = [{"id": f"quote-{i}", "text": c4_docs[300 + i]["text"] + "\n" + " ".join(held[i]["text"].split()[:30])}
               for i in range(3) if not holdout_mask([f"quote-{i}"], 0.2, 0)[0]]
    eval_doc = {"question": " ".join(train[50]["text"].split()[10:40])}
    write_jsonl(tmp_path / "in" / "a.jsonl", docs + quoting)
    write_jsonl(tmp_path / "eval" / "eval.jsonl", [eval_doc, {"question": "what is two plus two?"}])
    config = resolve("slimpajama", None, ["split.holdout_ratio=0.2", "split.ngram=13", "split.eval_text_field=question",
                                          f"split.eval_files=[{tmp_path / 'eval'}]"],
                     [str(tmp_path / "in")], str(tmp_path / "run"))
    stats = run(config)
    out = pq.read_table(tmp_path / "run" / "documents").to_pylist()
    split = {d["id"]: d["split"] for d in out}
    assert all((s == "holdout") == holdout_mask([i], 0.2, 0)[0] for i, s in split.items())
    assert sum(s == "holdout" for s in split.values()) >= 20
    rejected = {r["id"]: r for r in pq.read_table(tmp_path / "run" / "rejected").to_pylist()
                if r["stage"] == "decontaminate"}
    assert {q["id"] for q in quoting} | {train[50]["id"]} == set(rejected)
    assert all(r["reason"] == "decontaminate.ngram" and r["value"] >= 1 for r in rejected.values())
    assert not set(rejected) & set(split)
    assert stats["output"]["holdout_documents"] == sum(s == "holdout" for s in split.values())
    assert stats["totals"]["decontaminate"]["removed"] == len(rejected)
    assert stats["conservation"]["holds"]
