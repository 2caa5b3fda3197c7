"""Statistics from what the run wrote, not from counters kept on the way: per stage and per
source, documents and bytes in and out, and the conservation check
`input records = kept + rejected + duplicates`. Aggregations run on Ray (no process reads the
outputs whole): each task aggregates a group of files, and only a handful of rows per source
come back to be merged."""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from slimpipe.io.fs import join, read_json, resolve, write_bytes_atomic, write_json_atomic


def _kept_columns(t: pa.Table) -> pa.Table:
    return pa.table(
        {
            "source": t["source"],
            "bytes_read": t["bytes_read"],
            "bytes_clean": t["bytes_clean"],
            "bytes_cut": pc.fill_null(t["bytes_cut"], 0),
            "edited": pc.cast(pc.greater(pc.fill_null(t["bytes_cut"], 0), 0), pa.int64()),
            "utf8_repaired": pc.cast(t["utf8_repaired"], pa.int64()),
            "changed": pc.cast(pc.fill_null(t["changed_by_clean"], False), pa.int64()),
        }
    )


def _rejected_columns(t: pa.Table) -> pa.Table:
    return pa.table(
        {
            "source": t["source"],
            "stage": t["stage"],
            "reason": t["reason"],
            "bytes": pc.fill_null(t["bytes"], 0),
            "bytes_clean": pc.fill_null(pc.binary_length(t["text"]), 0),
            "utf8_repaired": pc.cast(pc.fill_null(t["utf8_repaired"], False), pa.int64()),
        }
    )


def _dup_columns(t: pa.Table) -> pa.Table:
    return t.select(["source", "kept_source", "kind", "bytes"])


def _cluster_columns(t: pa.Table) -> pa.Table:
    return t.select(["size"])


_KINDS = {
    "kept": (
        ["source", "bytes_read", "bytes_clean", "bytes_cut", "utf8_repaired", "changed_by_clean"],
        _kept_columns,
        ["source"],
        ["bytes_read", "bytes_clean", "bytes_cut", "edited", "utf8_repaired", "changed"],
    ),
    "rejected": (
        ["source", "stage", "reason", "bytes", "text", "utf8_repaired"],
        _rejected_columns,
        ["source", "stage", "reason"],
        ["bytes", "bytes_clean", "utf8_repaired"],
    ),
    "duplicates": (
        ["source", "kept_source", "kind", "bytes"],
        _dup_columns,
        ["source", "kept_source", "kind"],
        ["bytes"],
    ),
    "clusters": (["size"], _cluster_columns, ["size"], []),
}


def _aggregate(table: pa.Table, keys: list[str], sums: list[str]) -> pa.Table:
    aggs = [(keys[0], "count", pc.CountOptions(mode="all"))] + [(c, "sum") for c in sums]
    return _plain_names(table.group_by(keys).aggregate(aggs), keys[0])


def _plain_names(table: pa.Table, count_of: str) -> pa.Table:
    """ "source_count" -> "count", "bytes_sum" -> "bytes"; the key columns keep their names."""
    names = {f"{count_of}_count": "count", "count_sum": "count"}
    return table.rename_columns([names.get(n, n.removesuffix("_sum")) for n in table.column_names])


@ray.remote(num_cpus=0.5)
def _aggregate_files(uri: str, paths: list[str], kind: str) -> pa.Table:
    """Partial aggregate of some output files; only a few rows per source travel back."""
    columns, project, keys, sums = _KINDS[kind]
    fs, _ = resolve(uri)
    tables = [_aggregate(project(pq.read_table(p, columns=columns, filesystem=fs)), keys, sums) for p in paths]
    return pa.concat_tables(tables) if tables else None


def _group(rd, paths: list[str], kind: str, files_per_task: int = 64) -> list[dict]:
    if not paths:
        return []
    _, _, keys, sums = _KINDS[kind]
    refs = [
        _aggregate_files.remote(rd.uri_of(), paths[i : i + files_per_task], kind)
        for i in range(0, len(paths), files_per_task)
    ]
    partial = pa.concat_tables([t for t in ray.get(refs) if t is not None])
    total = partial.group_by(keys).aggregate([("count", "sum")] + [(c, "sum") for c in sums])
    return _plain_names(total, keys[0]).to_pylist()


SKIPPED_LISTED = 100  # paths passed over that stats.json names one by one; the rest are counted


def input_summary(discovered) -> dict:
    """The input files found, and the paths passed over (empty, special, unreadable...) by reason."""
    skipped = discovered.skipped
    return {
        "files": len(discovered.files),
        "bytes": sum(max(f.size, 0) for f in discovered.files),
        "skipped": dict(sorted(Counter(s.reason for s in skipped).items())),
        "skipped_files": [{"file": s.uri, "reason": s.reason, "detail": s.detail} for s in skipped[:SKIPPED_LISTED]],
    }


def collect_stats(rd, chunks, discovered) -> dict:
    records = rd.chunk_records()
    input_records = sum(records.get(c.key, 0) for c in chunks)
    kept = _group(rd, sorted(rd.kept_parts()), "kept")
    rejected = _group(rd, rd.files("rejected"), "rejected")
    dups = _group(rd, rd.files("duplicates"), "duplicates")
    manifest = read_json(rd.fs, join(rd.path, "documents", "_manifest.json"))

    src = defaultdict(lambda: defaultdict(int))
    reasons = defaultdict(lambda: defaultdict(lambda: {"documents": 0, "bytes": 0}))
    source_reasons = defaultdict(lambda: defaultdict(int))
    cross = {kind: defaultdict(lambda: defaultdict(int)) for kind in ("exact", "near")}
    for r in kept:
        s = src[r["source"]]
        s["kept_docs"] += r["count"]
        s["kept_bytes_read"] += r["bytes_read"] or 0
        s["kept_bytes_clean"] += r["bytes_clean"] or 0
        s["kept_bytes_cut"] += r["bytes_cut"] or 0
        s["kept_edited"] += r["edited"] or 0
        s["utf8_repaired"] += r["utf8_repaired"] or 0
        s["changed"] += r["changed"] or 0
    for r in rejected:
        s = src[r["source"]]
        stage = r["stage"]
        s[f"rej_{stage}_docs"] += r["count"]
        s[f"rej_{stage}_bytes_read"] += r["bytes"] or 0
        s[f"rej_{stage}_bytes_clean"] += r["bytes_clean"] or 0
        s["utf8_repaired"] += r["utf8_repaired"] or 0
        entry = reasons[stage][r["reason"]]
        entry["documents"] += r["count"]
        entry["bytes"] += r["bytes"] or 0
        source_reasons[r["source"]][f"{stage}: {r['reason']}"] += r["count"]
    for r in dups:
        s = src[r["source"]]
        s[f"{r['kind']}_docs"] += r["count"]
        s[f"{r['kind']}_bytes"] += r["bytes"] or 0
        cross[r["kind"]][r["source"]][r["kept_source"]] += r["count"]

    sources = {
        name: {**_source_stats(s), "rejected_by_reason": dict(sorted(source_reasons[name].items()))}
        for name, s in sorted(src.items())
    }
    totals = _source_stats({k: sum(s.get(k, 0) for s in src.values()) for k in {k for s in src.values() for k in s}})
    n_rejected = sum(e["documents"] for st in reasons.values() for e in st.values())
    n_dups = sum(s.get("exact_docs", 0) + s.get("near_docs", 0) for s in src.values())
    conservation = {
        "input_records": input_records,
        "kept": manifest["rows"],
        "rejected": n_rejected,
        "duplicates": n_dups,
        "holds": input_records == manifest["rows"] + n_rejected + n_dups,
    }
    return {
        "inputs": input_summary(discovered),
        "conservation": conservation,
        "totals": totals,
        "sources": sources,
        "rejected_by_reason": {st: dict(v) for st, v in reasons.items()},
        "duplicates_cross_source": {kind: {a: dict(b) for a, b in m.items()} for kind, m in cross.items()},
        "near_dedup": _near_stats(rd),
        # documents whose input id repeated an earlier one's: their `id` is ID#N, input_id the id as given
        "ids": {"renamed": rd.state["stages"].get("unique_ids", {}).get("renamed", 0)},
        # the decontamination index: exact hashes, n-grams checked and those ignored as boilerplate
        "split": {k: v for k, v in rd.state["stages"].get("split", {}).items() if k != "status"},
        "output": {
            "documents": manifest["rows"],
            "holdout_documents": manifest["holdout_rows"],
            "text_bytes": manifest["text_bytes"],
            "shards": len(manifest["shards"]),
        },
        "chunks": {"planned": len(chunks), "read": sum(1 for c in chunks if c.key in records)},
    }


def _near_stats(rd) -> dict:
    """The banding and its S-curve, the step figures, and the cluster-size distribution."""
    info = rd.state["stages"].get("near_dedup", {})
    sizes = {r["size"]: r["count"] for r in _group(rd, rd.files("clusters"), "clusters")}
    bins = [(2, 2), (3, 5), (6, 10), (11, 100), (101, 1000), (1001, None)]
    histogram = {
        (f"{lo}" if lo == hi else f"{lo}-{hi}" if hi else f">{lo - 1}"): sum(
            c for z, c in sizes.items() if z >= lo and (hi is None or z <= hi)
        )
        for lo, hi in bins
    }
    return {
        **{k: info[k] for k in ("banding", "lsh", "verify", "components") if k in info},
        "clusters": sum(sizes.values()),
        "largest_cluster": max(sizes, default=0),
        "cluster_sizes": histogram,
    }


def _dedup_stage(docs_in: int, bytes_in: int, docs: int, nbytes: int) -> dict:
    return {
        "documents_in": docs_in,
        "documents_out": docs_in - docs,
        "bytes_in": bytes_in,
        "bytes_out": bytes_in - nbytes,
        "duplicates": docs,
        "bytes_removed": nbytes,
        "byte_duplication_pct": round(100 * nbytes / bytes_in, 3) if bytes_in else 0.0,
    }


def _source_stats(s) -> dict:
    g = lambda k: int(s.get(k, 0))  # noqa: E731
    records = g("kept_docs") + g("rej_read_docs") + g("rej_filter_docs")
    bytes_read = g("kept_bytes_read") + g("rej_read_bytes_read") + g("rej_filter_bytes_read")
    clean_in_docs = records - g("rej_read_docs")
    clean_in_bytes = bytes_read - g("rej_read_bytes_read")
    # a filter's cuts (C4's bad lines) happen after cleaning: add them back to what cleaning gave
    clean_out_bytes = g("kept_bytes_clean") + g("kept_bytes_cut") + g("rej_filter_bytes_clean")
    dedup_in_docs, dedup_in_bytes = g("kept_docs"), g("kept_bytes_clean")
    exact = _dedup_stage(dedup_in_docs, dedup_in_bytes, g("exact_docs"), g("exact_bytes"))
    near = _dedup_stage(exact["documents_out"], exact["bytes_out"], g("near_docs"), g("near_bytes"))
    both = _dedup_stage(
        dedup_in_docs, dedup_in_bytes, g("exact_docs") + g("near_docs"), g("exact_bytes") + g("near_bytes")
    )
    decontaminated = {
        "documents_in": both["documents_out"],
        "bytes_in": both["bytes_out"],
        "documents_out": both["documents_out"] - g("rej_decontaminate_docs"),
        "bytes_out": both["bytes_out"] - g("rej_decontaminate_bytes_clean"),
        "removed": g("rej_decontaminate_docs"),
        "bytes_removed": g("rej_decontaminate_bytes_clean"),
    }
    out_docs, out_bytes = decontaminated["documents_out"], decontaminated["bytes_out"]
    return {
        "read": {
            "records": records,
            "bytes": bytes_read,
            "rejected": g("rej_read_docs"),
            "utf8_repaired": g("utf8_repaired"),
        },
        "clean": {
            "documents": clean_in_docs,
            "bytes_in": clean_in_bytes,
            "bytes_out": clean_out_bytes,
            "changed": g("changed"),
        },
        "filter": {
            "documents_in": clean_in_docs,
            "documents_out": dedup_in_docs,
            "bytes_in": clean_out_bytes,
            "bytes_out": dedup_in_bytes,
            "rejected": g("rej_filter_docs"),
            "documents_edited": g("kept_edited"),
            "bytes_cut": g("kept_bytes_cut"),
        },
        "exact_dedup": exact,
        "near_dedup": near,
        "dedup": both,  # the headline: bytes removed by exact and near dedup together
        "decontaminate": decontaminated,
        "output": {"documents": out_docs, "bytes": out_bytes},
    }


# --- reports --------------------------------------------------------------------------------


def summary_text(stats: dict) -> str:
    lines = []
    head = (
        f"{'source':<20}{'records':>10}{'rejected':>10}{'dups':>9}{'kept':>10}{'MB in':>10}{'MB out':>10}"
        f"{'dup bytes':>11}"
    )
    lines.append(head)
    lines.append("-" * len(head))
    rows = list(stats["sources"].items()) + [("TOTAL", stats["totals"])]
    for name, s in rows:
        lines.append(
            f"{name[:19]:<20}{s['read']['records']:>10}{s['read']['rejected'] + s['filter']['rejected']:>10}"
            f"{s['dedup']['duplicates']:>9}{s['output']['documents']:>10}"
            f"{s['read']['bytes'] / 1e6:>10.2f}{s['output']['bytes'] / 1e6:>10.2f}"
            f"{s['dedup']['byte_duplication_pct']:>10.2f}%"
        )
    t = stats["totals"]
    lines.append("")
    lines.append(f"{'stage':<14}{'docs in':>10}{'docs out':>10}{'MB in':>10}{'MB out':>10}")
    for stage, d_in, d_out, b_in, b_out in (
        (
            "read",
            t["read"]["records"],
            t["read"]["records"] - t["read"]["rejected"],
            t["read"]["bytes"],
            t["clean"]["bytes_in"],
        ),
        ("clean", t["clean"]["documents"], t["clean"]["documents"], t["clean"]["bytes_in"], t["clean"]["bytes_out"]),
        (
            "filter",
            t["filter"]["documents_in"],
            t["filter"]["documents_out"],
            t["filter"]["bytes_in"],
            t["filter"]["bytes_out"],
        ),
        *(
            (
                f"{kind.replace('_', ' ')}",
                t[kind]["documents_in"],
                t[kind]["documents_out"],
                t[kind]["bytes_in"],
                t[kind]["bytes_out"],
            )
            for kind in ("exact_dedup", "near_dedup", "decontaminate")
        ),
    ):
        lines.append(f"{stage:<14}{d_in:>10}{d_out:>10}{b_in / 1e6:>10.2f}{b_out / 1e6:>10.2f}")
    if stats["rejected_by_reason"]:
        lines.append("")
        lines.append("rejected by reason:")
        for stage, reasons in sorted(stats["rejected_by_reason"].items()):
            for reason, e in sorted(reasons.items()):
                lines.append(f"  {stage:<8} {reason:<36}{e['documents']:>8} docs {e['bytes'] / 1e6:>9.2f} MB")
    near = stats["near_dedup"]
    if "banding" in near:
        b = near["banding"]
        lines.append("")
        sizes = ", ".join(f"{k}: {v}" for k, v in near["cluster_sizes"].items() if v)
        lines.append(
            f"near dedup: {b['bands']} bands x {b['rows']} rows (threshold {b['threshold']}"
            f"{_recall_note(b)}); {near['clusters']} clusters"
            + (f", largest {near['largest_cluster']}; sizes {sizes}" if sizes else "")
        )
    split = stats.get("split", {})  # absent in runs made before it was recorded
    if split.get("ngrams_ignored"):
        lines.append("")
        lines.append(
            f"decontamination: {split['ngrams']} n-grams checked, {split['ngrams_ignored']} ignored as too "
            f"common in train (split.max_ngram_doc_freq); {split.get('spared_by_cap', 0)} train documents "
            "shared only ignored n-grams with the evaluation data"
        )
    if renamed := stats.get("ids", {}).get("renamed"):
        lines.append("")
        lines.append(
            f"ids: {renamed} documents repeated an earlier input id; they are ID#N, input_id keeps the id given"
        )
    if "tokens" in stats:
        tok = stats["tokens"]
        lines.append("")
        lines.append(f"tokens ({tok['dtype']}, vocabulary {tok['vocab_size']}, model {tok['model_sha256'][:12]}):")
        for name, s in [*sorted(tok["per_source"].items()), ("TOTAL", tok["total"])]:
            lines.append(
                f"  {name[:19]:<20}{s['documents']:>10} docs{s['tokens']:>14} tokens"
                f"{s['tokens_per_byte']:>8.3f} per byte{s['empty']:>6} empty"
            )
    inputs = stats.get("inputs", {})  # absent in runs made before it was recorded
    if inputs.get("skipped"):
        lines.append("")
        reasons = ", ".join(f"{n} {reason}" for reason, n in inputs["skipped"].items())
        lines.append(f"inputs: {inputs['files']} files read; passed over: {reasons} (stats.json: inputs.skipped_files)")
    c = stats["conservation"]
    verdict = "holds" if c["holds"] else "VIOLATED"
    lines.append("")
    lines.append(
        f"conservation {verdict}: {c['input_records']} input records = {c['kept']} kept + "
        f"{c['rejected']} rejected + {c['duplicates']} duplicates"
    )
    return "\n".join(lines)


def _recall_note(banding: dict) -> str:
    """The expected recall at the threshold and what chose the banding (absent in runs made before
    they were recorded)."""
    if "recall_at_threshold" not in banding:
        return ""
    return f", expected recall there {banding['recall_at_threshold']:.3f}, chosen by {banding['chosen_by']}"


def _table_html(stats: dict) -> str:
    cells = [
        "<tr><th>source</th>"
        + "".join(f"<th>{st} docs in</th><th>{st} docs out</th>" for st in ("filter", "exact_dedup", "near_dedup"))
        + "<th>records</th><th>MB read</th><th>MB kept</th><th>byte duplication</th></tr>"
    ]
    for name, s in list(stats["sources"].items()) + [("TOTAL", stats["totals"])]:
        cells.append(
            f"<tr><td>{html.escape(name)}</td>"
            f"<td>{s['filter']['documents_in']}</td><td>{s['filter']['documents_out']}</td>"
            f"<td>{s['exact_dedup']['documents_in']}</td><td>{s['exact_dedup']['documents_out']}</td>"
            f"<td>{s['near_dedup']['documents_in']}</td><td>{s['near_dedup']['documents_out']}</td>"
            f"<td>{s['read']['records']}</td><td>{s['read']['bytes'] / 1e6:.2f}</td>"
            f"<td>{s['output']['bytes'] / 1e6:.2f}</td><td>{s['dedup']['byte_duplication_pct']:.2f}%</td></tr>"
        )
    return "<table>" + "".join(cells) + "</table>"


def _bars_svg(values: dict[str, float], unit: str) -> str:
    width, row = 520, 22
    top = max(values.values(), default=0) or 1
    parts = [f'<svg width="{width + 200}" height="{row * len(values) + 10}" xmlns="http://www.w3.org/2000/svg">']
    for i, (name, v) in enumerate(values.items()):
        w = int(width * v / top)
        parts.append(
            f'<text x="0" y="{i * row + 15}" font-size="12">{html.escape(name[:24])}</text>'
            f'<rect x="170" y="{i * row + 3}" width="{w}" height="16" fill="#4c78a8"/>'
            f'<text x="{175 + w}" y="{i * row + 15}" font-size="12">{v:.2f}{unit}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def report_html(stats: dict) -> str:
    dup = {n: s["dedup"]["byte_duplication_pct"] for n, s in stats["sources"].items()}
    curve = stats["near_dedup"].get("banding", {}).get("s_curve", {})
    rej = {f"{st}: {r}": e["documents"] for st, rs in stats["rejected_by_reason"].items() for r, e in rs.items()}
    c = stats["conservation"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>slimpipe run report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style>
</head><body><h1>slimpipe run report</h1>
<p>Conservation {"holds" if c["holds"] else "<b>VIOLATED</b>"}: {c["input_records"]} input records =
{c["kept"]} kept + {c["rejected"]} rejected + {c["duplicates"]} duplicates.</p>
<h2>Per source</h2>{_table_html(stats)}
<h2>Byte duplication per source (exact and near)</h2>{_bars_svg(dup, "%")}
<h2>Cluster sizes (near)</h2>{_bars_svg(stats["near_dedup"]["cluster_sizes"], "")}
<h2>Probability of being caught by LSH, per Jaccard similarity</h2>
{_bars_svg(curve, "") if curve else "<p>near dedup off</p>"}
<h2>Rejected documents by reason</h2>{_bars_svg(rej, "") if rej else "<p>none</p>"}
<h2>All statistics</h2><pre>{html.escape(json.dumps(stats, indent=2))}</pre>
</body></html>"""


def write_reports(rd, stats: dict) -> None:
    write_json_atomic(rd.fs, join(rd.path, "stats.json"), stats)
    write_bytes_atomic(rd.fs, join(rd.path, "report.html"), report_html(stats).encode())
