"""`slimpipe dups`: look at what deduplication removed, cluster by cluster. A near-duplicate is
shown against its survivor word by word, `[-only in the survivor-]` and `{+only in the removed
copy+}`, with the similarity the run estimated from signatures and the true Jaccard of the two
shingle sets, so a person can judge each removal."""

from __future__ import annotations

import difflib

import pyarrow.compute as pc
import pyarrow.dataset as pads

from slimpipe.errors import ConfigError
from slimpipe.io.fs import exists, join, read_json, resolve
from slimpipe.rundir import DOCUMENTS, PARTS
from slimpipe.stages.minhash import MinHashParams, jaccard, shingle_set
from slimpipe.stages.normalize import normalize_text

CONTEXT_WORDS = 8
MAX_CHANGES = 12
MAX_MEMBERS = 5


class _Run:
    def __init__(self, run_dir: str):
        fs, path = resolve(run_dir)
        dup_dir, doc_dir, part_dir = join(path, "duplicates"), join(path, DOCUMENTS), join(path, *PARTS)
        if not exists(fs, doc_dir):
            raise ConfigError(f"{run_dir} has no documents/: is it a finished slimpipe run?")
        self.dups = pads.dataset(dup_dir, filesystem=fs, format="parquet") if exists(fs, dup_dir) else None
        self.docs = pads.dataset(doc_dir, filesystem=fs, format="parquet")
        # removed documents live on in the filtered parts, which every run keeps
        self.parts = pads.dataset(part_dir, filesystem=fs, format="parquet") if exists(fs, part_dir) else None
        near = read_json(fs, join(path, "run.json"))["config"]["dedup"].get("near", {})
        self.params = MinHashParams.from_config(near) if near.get("enabled") else None

    def kept_text(self, doc_id: str) -> str:
        t = self.docs.to_table(columns=["text"], filter=pc.field("id") == doc_id)
        return t["text"][0].as_py() if t.num_rows else ""

    def removed_text(self, file: str, line: int) -> str:
        if self.parts is None:
            return ""
        t = self.parts.to_table(columns=["text"], filter=(pc.field("file") == file) & (pc.field("line") == line))
        return t["text"][0].as_py() if t.num_rows else ""


def word_diff(kept: str, removed: str) -> str:
    """The changed words in context; long unchanged stretches elided."""
    a, b = kept.split(), removed.split()
    out, changes = [], 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            same = a[i1:i2]
            if len(same) > 2 * CONTEXT_WORDS:
                same = (same[:CONTEXT_WORDS] if out else []) + ["..."] + same[-CONTEXT_WORDS:]
            out.extend(same)
            continue
        changes += 1
        if changes > MAX_CHANGES:
            out.append("... (more changes)")
            break
        if i2 > i1:
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    if changes == 0:
        return "(same words; differences in case, punctuation or spacing only)"
    return " ".join(out)


def _format_cluster(run: _Run, cluster_id: str) -> str:
    members = run.dups.to_table(filter=pc.field("cluster_id") == cluster_id)
    if members.num_rows == 0:
        raise ConfigError(f"no duplicate cluster {cluster_id!r}")
    members = members.sort_by([("similarity", "descending"), ("id", "ascending")])
    kind = members["kind"][0].as_py()
    kept_id = members["kept_id"][0].as_py()
    kept = run.kept_text(kept_id)
    lines = [
        f"cluster {cluster_id}: kept {kept_id} ({members['kept_source'][0].as_py()}), "
        f"{members.num_rows} removed, kind {kind}"
    ]
    rows = members.select(["id", "source", "file", "line", "similarity"]).to_pylist()
    for row in rows[:MAX_MEMBERS] if kind == "near" else rows:
        head = f"  removed {row['id']} ({row['source']}) {row['file']}:{row['line']}"
        if kind != "near":
            lines.append(head)
            continue
        removed = run.removed_text(row["file"], row["line"])
        true = jaccard(shingle_set(normalize_text(kept), run.params), shingle_set(normalize_text(removed), run.params))
        lines.append(f"{head} similarity {row['similarity']:.3f} (estimated), jaccard {true:.3f} (true)")
        lines.append("    " + word_diff(kept, removed))
    if kind == "near" and len(rows) > MAX_MEMBERS:
        lines.append(f"  ... and {len(rows) - MAX_MEMBERS} more")
    preview = kept[:600] + ("..." if len(kept) > 600 else "")
    lines.append("  kept text: " + preview.replace("\n", "\n    "))
    return "\n".join(lines)


def show_cluster(run_dir: str, cluster_id: str) -> str:
    run = _Run(run_dir)
    if run.dups is None:
        raise ConfigError(f"{run_dir} has no duplicates")
    return _format_cluster(run, cluster_id)


def show_sample(run_dir: str, n: int) -> str:
    """The n largest clusters of each kind (exact first), ties by cluster id."""
    run = _Run(run_dir)
    if run.dups is None:
        return "no duplicates in this run"
    counts = (
        run.dups.to_table(columns=["cluster_id", "kind"])
        .group_by(["kind", "cluster_id"])
        .aggregate([("cluster_id", "count")])
        .sort_by([("kind", "ascending"), ("cluster_id_count", "descending"), ("cluster_id", "ascending")])
    )
    picked = []
    for kind in ("exact", "near"):
        ids = counts.filter(pc.equal(counts["kind"], kind))["cluster_id"].to_pylist()
        picked += ids[:n]
    return "\n\n".join(_format_cluster(run, c) for c in picked)
