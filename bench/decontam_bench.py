"""Decontamination on a templated crawl: good pages removed and planted contamination caught, with
the old rule (every word 13-gram of the holdout counts, no cap) and the new default side by side.

The corpus: real C4 pages (../shared/data/c4-en-1k) as the bodies of the pages of 8 sites, each
page inside its site's header, menu, tagline, newsletter and legal lines, paragraphs separated by
blank lines. Each template line takes one of a few phrasings, so sites built on the same theme or
legal boilerplate share some lines; a cookie notice and a CMS credit recur across sites. C4 pages
kept out of the crawl give the evaluation set (question/answer JSONL): 60 passages of 30-80 words,
and 4 whole pages of a site, template included, as benchmarks scraped from the web may carry it.
Contamination is planted into 40 crawl pages: a whole item pasted in as a paragraph (20), 20-40
words of one quoted (12), 3 paragraphs of a whole-page item's body quoted (4), a whole-page item
verbatim (4).

Then `slimpipe run --preset web` on the same corpus (exact and near dedup as configured; the
length filter alone unless `--filters preset`, so that every page reaches the split and the
figures measure decontamination alone), per holdout ratio: the old rule
(`split.holdout_ngrams=true`, `split.max_ngram_doc_freq=null`), the new default, the new default
without the cap, and with `split.min_shared_ngrams=3`. For each: of the pages that reached the
split stage as train, the good ones removed (false positives; how many matched the holdout) and
the planted ones caught, the n-grams the cap ignored, the train pages that shared only those with
the evaluation data (spared by the cap), and the split stage's seconds.

    python bench/decontam_bench.py [--c4 ../shared/data/c4-en-1k/c4_sample.jsonl]
        [--holdout-ratio 0.001 0.01] [--filters length|preset]

A 0.1% holdout of a crawl of millions of pages has a page on nearly every site of more than a
thousand pages; on this crawl of about 900 pages 0.1% draws about one page, 1% a page on most
sites. Results land in bench/out/decontam_results.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from run_bench import OUT, slimpipe_env  # noqa: E402

from slimpipe.config import load_preset  # noqa: E402

C4 = Path(__file__).resolve().parents[2] / "shared" / "data" / "c4-en-1k" / "c4_sample.jsonl"
SITES = [
    ("Riverside Gazette", "local news", "News Media Ltd"),
    ("Maple Hardware", "home improvement", "Maple Inc."),
    ("Coastline Travel", "travel", "Coastline Group"),
    ("Bright Path Health", "health", "Bright Path LLC"),
    ("Gadget Garage", "technology", "Garage Digital"),
    ("Green Thumb Daily", "gardening", "GTD Publishing"),
    ("Ledger & Coin", "personal finance", "Ledger Media"),
    ("Kitchen Table Stories", "food", "KTS Ltd"),
]
# Each line of a template in a few phrasings, one per site: sites built on the same theme or legal
# boilerplate share a phrasing, as real ones do
TAGLINES = [
    "{name} is an independent {topic} publication with news, reviews and practical guides for our readers since 2004.",
    "Welcome to {name}, where our editors share honest {topic} advice, tested recommendations and stories "
    "from our community.",
    "For over a decade {name} has helped readers make better decisions about {topic} with clear and "
    "independent reporting.",
]
NEWSLETTERS = [
    "Sign up for the {name} newsletter to receive our latest articles, exclusive offers and event "
    "invitations straight to your inbox.",
    "Join thousands of readers: get the best of {name} delivered every Friday, and unsubscribe at any "
    "time with one click.",
    "Never miss a story from {name}. Subscribe to our weekly {topic} digest and follow us on Facebook, "
    "Twitter and Instagram.",
]
LEGAL = [
    "Copyright 2020 {owner}. All rights reserved. The material on this site may not be reproduced, distributed, "
    "transmitted, cached or otherwise used, except with the prior written permission of {name}.",
    "(c) {owner} 2021. Content on {name} is provided for general information only and does not constitute "
    "professional advice of any kind; please consult a qualified expert.",
    "All content copyright {owner}. Some links on this page are affiliate links, which means we may earn a "
    "small commission if you buy through them, at no extra cost to you.",
]
COOKIES = (
    "We use cookies to ensure that we give you the best experience on our website. If you continue to "
    "use this site we will assume that you are happy with it."
)
CMS = "Proudly powered by WordPress. Theme designed and developed by the team at Flavor Themes, all rights reserved."
RUNS = {
    "old: holdout 13-grams, no cap": ["split.holdout_ngrams=true", "split.max_ngram_doc_freq=null"],
    "new default": [],
    "new default without the cap": ["split.max_ngram_doc_freq=null"],
    "new default, min_shared_ngrams=3": ["split.min_shared_ngrams=3"],
}


def template(rng: random.Random, name: str, topic: str, owner: str) -> tuple[list[str], list[str]]:
    """A site's lines above and below every page body, its phrasings drawn by `rng`; a cookie notice
    on half the sites, a CMS credit on a third."""
    fill = dict(name=name, topic=topic, owner=owner)
    head = [
        f"{name} | Home | Latest | {topic.title()} | Guides | About | Contact",
        f"You are here: Home > {topic.title()} > Articles",
        rng.choice(TAGLINES).format(**fill),
    ]
    foot = [rng.choice(NEWSLETTERS).format(**fill), rng.choice(LEGAL).format(**fill)]
    return head, foot + [COOKIES] * (rng.random() < 0.5) + [CMS] * (rng.random() < 0.33)


def page(site: tuple, body: list[str]) -> str:
    head, foot = site
    return "\n\n".join(head + body + foot)


def paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n") if p.strip()]


def build(c4: Path, out: Path, seed: int = 0) -> dict:
    """Writes out/crawl/crawl.jsonl and out/eval/items.jsonl; returns each page's site and what was planted."""
    rng = random.Random(seed)
    docs = [json.loads(line)["text"] for line in c4.read_text().splitlines() if line.strip()]
    rng.shuffle(docs)
    reserved, crawl_bodies = docs[:100], docs[100:]
    sites = [template(rng, *s) for s in SITES]
    pages = [
        {"id": f"page-{i}", "site": i % len(sites), "text": page(sites[i % len(sites)], paragraphs(b))}
        for i, b in enumerate(crawl_bodies)
    ]
    long_passages = [d for d in reserved if len(d.split()) >= 120]
    items = []
    for text in long_passages[:60]:
        words = text.split()
        start, n = rng.randrange(0, len(words) - 90), rng.randint(30, 80)
        items.append(
            {"question": " ".join(words[start : start + n]), "answer": " ".join(words[start + n : start + n + 5])}
        )
    whole = [page(sites[k], paragraphs(text)) for k, text in enumerate(long_passages[60:64])]
    items += [{"question": text, "answer": "a whole page"} for text in whole]
    planted = {}
    victims = rng.sample(range(len(pages)), 40)
    for j, v in enumerate(victims):
        p = pages[v]
        body = paragraphs(p["text"])
        if j < 20:  # a whole item pasted in as a paragraph
            insert, kind = items[j]["question"], "item pasted in"
        elif j < 32:  # a passage of 20-40 words of an item quoted
            words = items[j]["question"].split()
            n = min(len(words), rng.randint(20, 40))
            insert, kind = " ".join(words[:n]), "part of an item quoted"
        elif j < 36:  # the body of a whole-page item quoted on another site
            insert, kind = " ".join(paragraphs(long_passages[60 + j - 32])[:3]), "whole-page item's body quoted"
        else:  # a whole-page item, verbatim
            p["text"], kind = whole[j - 36], "whole-page item verbatim"
            planted[p["id"]] = kind
            continue
        pos = rng.randint(3, len(body) - 3)
        p["text"] = "\n\n".join(body[:pos] + [insert] + body[pos:])
        planted[p["id"]] = kind
    for name, rows in (("crawl/crawl.jsonl", pages), ("eval/items.jsonl", items)):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"site": {p["id"]: p["site"] for p in pages}, "planted": planted, "eval_items": len(items)}


def filter_sets(which: str) -> list[str]:
    """--set overrides that leave the length filter alone (`length`) or the preset's filters (`preset`)."""
    return (
        []
        if which == "preset"
        else [f"filters.{f}.enabled=false" for f in load_preset("web")["filters"] if f != "length"]
    )


def run(corpus: Path, out: Path, sets: list[str], holdout_ratio: float) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "slimpipe.cli",
        "run",
        "--preset",
        "web",
        "--input",
        str(corpus / "crawl"),
        "--output",
        str(out),
        "--set",
        "ray.progress_bars=false",
        "--set",
        f"split.holdout_ratio={holdout_ratio}",
        "--set",
        f"split.eval_files=[{corpus / 'eval'}]",
        "--set",
        "split.eval_text_field=question",
        *sum((["--set", s] for s in sets), []),
    ]
    subprocess.run(cmd, env=slimpipe_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "stats.json").read_text())


def outcome(out: Path, stats: dict, truth: dict) -> dict:
    docs = pq.read_table(out / "documents", columns=["id", "split"]).to_pylist()
    rejected = pq.read_table(out / "rejected", columns=["id", "stage", "reason", "detail"]).to_pylist()
    removed = {r["id"]: r for r in rejected if r["stage"] == "decontaminate"}
    holdout_sites = {truth["site"][d["id"]] for d in docs if d["split"] == "holdout"}
    train = [d["id"] for d in docs if d["split"] == "train"] + list(removed)  # train when the split stage began
    good = [i for i in train if i not in truth["planted"]]
    planted = [i for i in train if i in truth["planted"]]
    false_pos = [i for i in good if i in removed]
    return {
        "good_train_pages": len(good),
        "good_removed": len(false_pos),
        "good_removed_pct": round(100 * len(false_pos) / len(good), 2),
        "good_removed_matching_the_holdout": sum("the holdout" in removed[i]["detail"] for i in false_pos),
        "good_removed_on_sites_with_a_holdout_page": sum(truth["site"][i] in holdout_sites for i in false_pos),
        "planted_reaching_split": len(planted),
        "planted_caught": sum(i in removed for i in planted),
        "planted_missed": {i: truth["planted"][i] for i in planted if i not in removed},
        "holdout_pages": sum(d["split"] == "holdout" for d in docs),
        "sites_with_a_holdout_page": len(holdout_sites),
        "index": {k: stats["split"].get(k) for k in ("exact_hashes", "ngrams", "ngrams_ignored", "spared_by_cap")},
        "split_stage_s": round(stats["timings_s"]["split"], 2),
        "run_s": round(stats["timings_s"]["total"], 2),
        "good_removed_details": sorted({removed[i]["detail"] for i in false_pos})[:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--c4", type=Path, default=C4)
    ap.add_argument("--holdout-ratio", type=float, nargs="+", default=[0.001, 0.01])
    ap.add_argument("--filters", choices=["length", "preset"], default="length")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        truth = build(args.c4, Path(tmp) / "corpus")
        results = {
            "corpus": {
                "pages": len(truth["site"]),
                "sites": len(SITES),
                "eval_items": truth["eval_items"],
                "planted": truth["planted"],
                "filters": args.filters,
            }
        }
        print(
            f"{'holdout':>8} {'run':<36}{'good removed':>16}{'by holdout':>12}{'caught':>9}{'ignored':>9}"
            f"{'spared':>8}{'split s':>9}"
        )
        for ratio in args.holdout_ratio:
            for i, (name, sets) in enumerate(RUNS.items()):
                out = Path(tmp) / f"run-{ratio}-{i}"
                r = outcome(out, run(Path(tmp) / "corpus", out, filter_sets(args.filters) + sets, ratio), truth)
                results[f"holdout {ratio}: {name}"] = r
                good = f"{r['good_removed']}/{r['good_train_pages']} ({r['good_removed_pct']}%)"
                caught = f"{r['planted_caught']}/{r['planted_reaching_split']}"
                print(
                    f"{ratio:>8} {name:<36}{good:>16}{r['good_removed_matching_the_holdout']:>12}{caught:>9}"
                    f"{r['index']['ngrams_ignored']:>9}{r['index']['spared_by_cap'] or 0:>8}{r['split_stage_s']:>9}",
                    flush=True,
                )
    (OUT / "decontam_results.json").write_text(json.dumps(results, indent=1))
    print(f"details in {OUT / 'decontam_results.json'}")


if __name__ == "__main__":
    main()
