"""Train/holdout split and decontamination: unit rules, then end to end on Ray."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import write_jsonl

from slimpipe.config import load_preset, resolve
from slimpipe.runner import run
from slimpipe.stages.decontaminate import (
    EVAL,
    HOLDOUT,
    contaminant_hashes,
    holdout_mask,
    matches,
    train_hashes,
    verdicts,
)
from slimpipe.stages.minhash import ngram_hashes
from slimpipe.stages.normalize import normalize_text


def test_holdout_is_deterministic_by_id_and_near_the_ratio():
    ids = [f"doc-{i}" for i in range(20000)]
    mask = holdout_mask(ids, 0.1, seed=3)
    assert 0.09 < mask.mean() < 0.11
    # the same id lands on the same side whatever else is in the batch, and a seed reshuffles
    assert list(holdout_mask(ids[5000:5100], 0.1, 3)) == list(mask[5000:5100])
    assert list(holdout_mask(ids, 0.1, 4)) != list(mask)
    assert not holdout_mask(ids, 0.0, 3).any()


def _index(texts, ngram, origin=EVAL):
    return contaminant_hashes([normalize_text(t) for t in texts], ngram, origin)


def _check(index, texts, ngram, min_shared=1, max_doc_freq=None, partitions=1):
    """The join's rules, in `partitions` partitions of the hashes as the Ray tasks see them: per
    text its verdict or None; how many the cap spared; the index's figures."""
    norms = [normalize_text(t) for t in texts]
    rows = pa.concat_tables([index, train_hashes(norms, list(range(len(norms))), "c0", ngram)])
    part = rows["hash"].to_numpy() % np.uint64(partitions)
    found, figures = [], {}
    for p in range(partitions):
        m, f = matches(rows.filter(pa.array(part == p)), max_doc_freq)
        found.append(m)
        figures = {k: figures.get(k, 0) + v for k, v in f.items()}
    hits, spared = verdicts(
        pa.concat_tables(found), lambda line: len(ngram_hashes(norms[line], ngram)), ngram, min_shared
    )
    got = dict(hits)
    return [got.get(i) for i in range(len(norms))], spared, figures


def test_exact_and_ngram_contamination(c4_docs):
    eval_text = c4_docs[0]["text"]
    quote = " ".join(eval_text.split()[20:40])
    index = _index([eval_text], 13)
    check = lambda t, min_shared=1: _check(index, [t], 13, min_shared)[0][0]  # noqa: E731
    assert check(eval_text.upper()) == (
        "decontaminate.exact",
        1.0,  # the same once normalised
        "the same normalised text as a document in the evaluation data",
    )
    reason, shared, detail = check(c4_docs[5]["text"] + "\n" + quote)
    assert reason == "decontaminate.ngram" and shared == 20 - 13 + 1
    assert detail.startswith("shares 8 of its ") and detail.endswith(" word 13-grams with the evaluation data")
    assert check(c4_docs[5]["text"] + "\n" + quote, min_shared=9) is None  # fewer than asked for
    assert check(c4_docs[5]["text"]) is None
    assert check(" ".join(eval_text.split()[20:32])) is None  # 12 words: shorter than one 13-gram
    assert _check(_index([eval_text], 0), [quote], 0)[0] == [None]
    # a text in both the holdout (its n-grams asked for) and the evaluation data: the detail names both
    both = pa.concat_tables([contaminant_hashes([normalize_text(eval_text)], 13, origin) for origin in (HOLDOUT, EVAL)])
    assert _check(both, [eval_text], 13)[0][0][2] == (
        "the same normalised text as a document in the holdout and the evaluation data"
    )
    assert _check(both, [quote], 13)[0][0][2].endswith(
        "with the holdout and the evaluation data (8 with the holdout, 8 with the evaluation data)"
    )


# --- a crawl of templated sites -------------------------------------------------------------------

SITES = ("Riverside Gazette", "Maple Hardware", "Coastline Travel")


def _template(site: str) -> tuple[str, str]:
    """A site's header and nav, and its footer and legal lines, as its every page carries them."""
    head = (
        f"{site} | Home | News | Reviews | About us | Contact\n"
        f"Menu: Latest stories, Most popular, Opinion, Newsletter sign-up, Advertise with {site}\n"
        f"Welcome to {site}, your trusted source for local news, reviews and practical advice since 1998."
    )
    foot = (
        f"Subscribe to the {site} newsletter and get the best of our stories delivered to your inbox every week.\n"
        f"Copyright 2021 {site} Media Group. All rights reserved. No part of this site may be reproduced "
        "without our written permission.\n"
        "This website uses cookies to improve your experience. By continuing to browse the site you are "
        "agreeing to our use of cookies as described in our privacy policy and terms of service."
    )
    return head, foot


def _page(site: str, body: str) -> str:
    """Blank-line paragraphs between the template and the body, as HTML extractions give them."""
    head, foot = _template(site)
    return "\n\n".join([head, *[p for p in body.split("\n") if p.strip()], foot])


def _templated_crawl(c4_docs, per_site: int) -> list[dict]:
    bodies = [d["text"] for d in c4_docs if len(d["text"].split()) >= 80]
    return [
        {"id": f"{site.split()[0].lower()}-{i}", "site": site, "text": _page(site, bodies[s * per_site + i])}
        for s, site in enumerate(SITES)
        for i in range(per_site)
    ]


def _words(text: str, start: int, n: int) -> str:
    return " ".join(text.split()[start : start + n])


def test_document_frequency_cap_ignores_template_ngrams(c4_docs):
    pages = _templated_crawl(c4_docs, per_site=15)
    # an evaluation item scraped with its site's template, which a page of another site quotes
    item = _page(SITES[0], c4_docs[590]["text"])
    copier = _page(SITES[1], c4_docs[591]["text"] + "\n" + _words(c4_docs[590]["text"], 10, 40))
    index = _index([item], 13)
    texts = [p["text"] for p in pages] + [copier]
    riverside = [i for i, p in enumerate(pages) if p["site"] == SITES[0]]
    # uncapped, every page of the item's site shares its template
    uncapped, spared, figures = _check(index, texts, 13)
    assert all(uncapped[i] for i in riverside) and spared == 0 and figures["ngrams_ignored"] == 0
    # capped, only the copier matches: the site's own template is on its 15 pages, the legal
    # lines every site carries on all 46, each counted once per page that holds it
    capped, spared, figures = _check(index, texts, 13, max_doc_freq=10)
    assert not any(capped[i] for i in riverside)
    assert spared == len(pages)  # every page shares the legal lines; counted in stats
    assert capped[-1][:2] == ("decontaminate.ngram", 40 - 13 + 1)
    item_grams = len(ngram_hashes(normalize_text(item), 13))
    assert figures["ngrams_ignored"] > 0 and figures["ngrams"] + figures["ngrams_ignored"] == item_grams
    assert figures["exact_hashes"] == 1
    # a page of the item's site is no longer spared with a cap above its 15 copies of the template
    assert sum(v is not None for v in _check(index, texts, 13, max_doc_freq=20)[0]) == len(riverside) + 1
    # the hashes cut into partitions as the Ray tasks see them: the same verdicts and figures
    assert _check(index, texts, 13, max_doc_freq=10, partitions=7) == (capped, spared, figures)


def test_templated_crawl_keeps_holdout_siblings_and_removes_eval_copies(ray_session, c4_docs, tmp_path):
    ratio = 0.1
    pages = _templated_crawl(c4_docs, per_site=30)
    holdout = {p["id"] for p in pages if holdout_mask([p["id"]], ratio, 0)[0]}
    assert {p["site"] for p in pages if p["id"] in holdout} == set(SITES)  # every site has holdout pages
    # evaluation items: passages of pages not in the crawl, and one page scraped with a site's template
    sources = [d["text"] for d in c4_docs[500:] if len(d["text"].split()) >= 120]
    items = [{"question": _words(sources[i], 20, 45), "answer": f"answer {i}"} for i in range(3)]
    items.append({"question": _page(SITES[2], sources[3]), "answer": "a whole page"})
    items.append({"question": sources[4], "answer": "copied whole"})
    planted = {  # train pages that copy evaluation data: one item embedded in a longer page, or all of it
        "riverside-copy": _page(SITES[0], sources[10] + "\n" + items[0]["question"]),
        "maple-copy": _page(SITES[1], sources[11] + "\n" + items[1]["question"] + " " + items[2]["question"]),
        "quotes-coastline-item": _page(SITES[0], sources[12] + "\n" + _words(sources[3], 30, 40)),
        "verbatim": sources[4].upper(),
    }
    assert not holdout_mask(list(planted), ratio, 0).any()
    write_jsonl(tmp_path / "in" / "crawl.jsonl", pages + [{"id": i, "text": t} for i, t in planted.items()])
    write_jsonl(tmp_path / "eval" / "items.jsonl", items)
    # the web preset's split settings, on the length filter alone (the rule filters are not tested here)
    sets = [f"split.holdout_ratio={ratio}", "split.eval_text_field=question", f"split.eval_files=[{tmp_path / 'eval'}]"]
    config = resolve(
        "slimpajama",
        None,
        [*sets, "split.ngram=13", "dedup.near.enabled=false"],
        [str(tmp_path / "in")],
        str(tmp_path / "run"),
    )
    assert config["split"] == resolve("web", None, sets, [str(tmp_path / "in")], str(tmp_path / "run"))["split"]
    stats = run(config)
    split = {d["id"]: d["split"] for d in pq.read_table(tmp_path / "run" / "documents").to_pylist()}
    rejected = {r["id"]: r for r in pq.read_table(tmp_path / "run" / "rejected").to_pylist()}
    assert set(rejected) == set(planted)
    # every sibling of a holdout page stays in train: the template they share is not contamination
    assert {i for i, s in split.items() if s == "train"} == {p["id"] for p in pages} - holdout
    assert {i for i, s in split.items() if s == "holdout"} == holdout
    assert {i: r["reason"] for i, r in rejected.items()} == {
        "riverside-copy": "decontaminate.ngram",
        "maple-copy": "decontaminate.ngram",
        "quotes-coastline-item": "decontaminate.ngram",
        "verbatim": "decontaminate.exact",
    }
    grams = lambda i: len(ngram_hashes(normalize_text(items[i]["question"]), 13))  # noqa: E731
    assert rejected["riverside-copy"]["value"] == grams(0)
    assert rejected["maple-copy"]["value"] == grams(1) + grams(2)  # both items (not the n-grams across them)
    assert rejected["riverside-copy"]["detail"].endswith("word 13-grams with the evaluation data")
    assert rejected["verbatim"]["detail"] == "the same normalised text as a document in the evaluation data"
    # the whole-page item's template n-grams were on every Coastline page: ignored, and counted
    assert stats["split"]["ngrams_ignored"] > 0 and stats["split"]["decontaminated"] == len(planted)
    assert stats["split"]["spared_by_cap"] > 0  # the template siblings of the whole-page eval item
    assert stats["totals"]["decontaminate"]["removed"] == len(planted)
    assert stats["conservation"]["holds"]
    # what the old rule (the holdout's 13-grams, no cap) would have done to the same crawl
    old = _index([p["text"] for p in pages if p["id"] in holdout], 13, HOLDOUT)
    assert all(_check(old, [p["text"] for p in pages if p["id"] not in holdout], 13)[0])
    # the join's hashes forced into many partitions: the same documents go, for the same reasons
    config["output"]["path"] = str(tmp_path / "forced")
    config["ray"]["partition_rows"] = 500
    forced = run(config)
    figures = lambda s: {k: v for k, v in s["split"].items() if k != "seconds"}  # noqa: E731
    assert figures(forced) == figures(stats)
    assert (
        pq.read_table(tmp_path / "forced" / "rejected")
        .sort_by("id")
        .equals(pq.read_table(tmp_path / "run" / "rejected").sort_by("id"))
    )


def test_holdout_ngrams_when_asked_end_to_end(ray_session, c4_docs, tmp_path):
    docs = [dict(d, id=f"doc-{i}") for i, d in enumerate(c4_docs[:200])]
    held = [d for d in docs if holdout_mask([d["id"]], 0.2, 0)[0]]
    train = [d for d in docs if not holdout_mask([d["id"]], 0.2, 0)[0]]
    assert len(held) >= 20
    # train pages quoting 30 words of a holdout page, and one quoting the evaluation set
    quoting = [
        {"id": f"quote-{i}", "text": c4_docs[300 + i]["text"] + "\n" + " ".join(held[i]["text"].split()[:30])}
        for i in range(3)
        if not holdout_mask([f"quote-{i}"], 0.2, 0)[0]
    ]
    eval_doc = {"question": " ".join(train[50]["text"].split()[10:40])}
    write_jsonl(tmp_path / "in" / "a.jsonl", docs + quoting)
    write_jsonl(tmp_path / "eval" / "eval.jsonl", [eval_doc, {"question": "what is two plus two?"}])
    config = resolve(
        "slimpajama",
        None,
        [
            "split.holdout_ratio=0.2",
            "split.ngram=13",
            "split.holdout_ngrams=true",
            "split.eval_text_field=question",
            f"split.eval_files=[{tmp_path / 'eval'}]",
        ],
        [str(tmp_path / "in")],
        str(tmp_path / "run"),
    )
    stats = run(config)
    out = pq.read_table(tmp_path / "run" / "documents").to_pylist()
    split = {d["id"]: d["split"] for d in out}
    assert all((s == "holdout") == holdout_mask([i], 0.2, 0)[0] for i, s in split.items())
    assert sum(s == "holdout" for s in split.values()) >= 20
    rejected = {
        r["id"]: r for r in pq.read_table(tmp_path / "run" / "rejected").to_pylist() if r["stage"] == "decontaminate"
    }
    assert {q["id"] for q in quoting} | {train[50]["id"]} == set(rejected)
    assert all(r["reason"] == "decontaminate.ngram" and r["value"] >= 1 for r in rejected.values())
    assert {r["detail"].rsplit(" with ", 1)[1] for r in rejected.values()} == {"the holdout", "the evaluation data"}
    assert not set(rejected) & set(split)
    assert stats["output"]["holdout_documents"] == sum(s == "holdout" for s in split.values())
    assert stats["totals"]["decontaminate"]["removed"] == len(rejected)
    assert stats["conservation"]["holds"]


def test_evaluation_data_found_nowhere(ray_session, c4_docs, tmp_path):
    """No train document holds an evaluation n-gram: the document-frequency step finds nothing."""
    write_jsonl(tmp_path / "in" / "a.jsonl", [dict(d, id=f"doc-{i}") for i, d in enumerate(c4_docs[:30])])
    item = _words(c4_docs[400]["text"], 0, 40)
    write_jsonl(tmp_path / "eval" / "e.jsonl", [{"text": item}])
    config = resolve(
        "web",
        None,
        [
            f"split.eval_files=[{tmp_path / 'eval'}]",
            "dedup.near.enabled=false",
            *(f"filters.{f}.enabled=false" for f in load_preset("web")["filters"]),
        ],
        [str(tmp_path / "in")],
        str(tmp_path / "run"),
    )
    stats = run(config)
    assert stats["split"]["ngrams"] == len(ngram_hashes(normalize_text(item), 13)) > 0
    assert stats["split"]["ngrams_ignored"] == 0
    assert stats["split"]["decontaminated"] == 0 and stats["output"]["documents"] == 30
