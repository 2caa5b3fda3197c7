"""The train/holdout split and decontamination of a run, after dedup: which contaminants to gather,
where the stage's index files, rejected rows and removed lines go in the run directory, and its
figures in run.json (the work itself is stages/decontaminate).

All or nothing on resume: an interrupted split is redone whole (it is cheap beside dedup).
"""

from __future__ import annotations

from slimpipe.io.discover import discover
from slimpipe.io.inputs import InputFile
from slimpipe.rundir import EXACT_DUPSETS, NEAR_DUPSETS, SPLIT_MATCHES, RunDir
from slimpipe.stages.decontaminate import step
from slimpipe.stages.shuffle import Shuffle


def _eval_input(config: dict) -> dict:
    split = config["split"]
    return {
        **config["input"],
        "text_field": split["eval_text_field"] or config["input"]["text_field"],
        "source": "eval",
    }


def _holdout_counts(config: dict) -> bool:
    """After exact dedup of the normalised text no train document has the text of a holdout one, so
    the holdout adds nothing unless its n-grams count (the writer still marks each document's split)."""
    split, exact_dedup = config["split"], config["dedup"]["exact"]
    return split["holdout_ratio"] > 0 and (
        split["holdout_ngrams"] and split["ngram"] > 0 or not (exact_dedup["enabled"] and exact_dedup["normalized"])
    )


def _kept_documents(rd: RunDir, chunks) -> step.KeptDocuments:
    """The kept parts by chunk, in input order, less what dedup removed (an earlier decontamination
    is redone whole)."""
    parts: dict[str, list[str]] = {}
    for chunk, path, _ in rd.in_input_order(rd.kept_parts(), chunks):
        parts.setdefault(chunk, []).append(path)
    # earlier decontamination is not subtracted: it is redone whole
    return step.KeptDocuments(parts, rd.uri_of("_work"), tuple(rd.removed_lines_uris((EXACT_DUPSETS, NEAR_DUPSETS))))


def _decontaminate(rd: RunDir, chunks, config: dict, evals: list[InputFile], holdout: bool, shuffle: Shuffle) -> dict:
    """The stage's figures: the index's, and what it removed."""
    split = config["split"]
    kept_parts = rd.kept_parts().values()
    # a hash per document, and one per word (about 6 bytes of text) with n-grams
    train_rows = sum(p.rows for p in kept_parts) + (sum(p.text_bytes for p in kept_parts) // 6 if split["ngram"] else 0)
    outputs = step.DecontaminationOutputs(
        matches=rd.uri_of(*SPLIT_MATCHES), rejected=rd.uri_of("rejected"), removed_lines=rd.decontaminated_uri()
    )
    return step.decontaminate(
        _kept_documents(rd, chunks),
        split,
        holdout,
        evals,
        _eval_input(config),
        config["clean"],
        train_rows,
        shuffle,
        outputs,
        config["output"]["compression_level"],
    )


def stage_split(rd: RunDir, chunks, config: dict, shuffle: Shuffle) -> None:
    split = config["split"]
    if rd.state["stages"].get("split", {}).get("status") == "done":
        return
    rd.clear_split(step.STAGE)
    evals = discover(split["eval_files"], _eval_input(config)).files if split["eval_files"] else []
    holdout = _holdout_counts(config)
    if not split["decontaminate"] or not evals and not holdout:
        rd.set_stage("split", status="done", holdout_ratio=split["holdout_ratio"], decontaminated=0)
        return
    rd.set_stage(
        "split",
        status="done",
        holdout_ratio=split["holdout_ratio"],
        eval_files=len(evals),
        **_decontaminate(rd, chunks, config, evals, holdout, shuffle),
    )
