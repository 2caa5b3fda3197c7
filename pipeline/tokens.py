"""The steps after `slimpipe run` that make tokens: train a tokenizer on the run's documents,
then tokenize them into RUN/tokens. Each records what it used in run.json and its counts in
stats.json; a killed tokenize resumes with the units it had not finished."""

from __future__ import annotations

import logging

import ray

from slimpipe.config import later_config
from slimpipe.errors import RunConflict
from slimpipe.io.fs import join, read_json, remove_stale_tmp, write_bytes_atomic, write_json_atomic
from slimpipe.rundir import (
    STATS,
    TOKENIZER_INFO,
    TOKENIZER_MODEL,
    TOKENS,
    TOKENS_DONE,
    AlreadyComplete,
    RunDir,
    run_lock,
)
from slimpipe.stages.tokenize import (
    TokenizerError,
    load_model,
    model_sha256,
    plan_units,
    read_model,
    sample_texts,
    special_ids,
    token_type,
    tokenize_units,
    train_model,
)

log = logging.getLogger("slimpipe")

# What makes two tokenizations of the same documents the same.
TOKENIZE_SHAPING = ("model_sha256", "bos", "eos", "unit_bytes")


# --- train-tokenizer --------------------------------------------------------------------------


@run_lock("train-tokenizer")
def train_tokenizer(run_uri: str, overrides: list[str] | None = None) -> dict:
    """Train a SentencePiece model on a sample of the run's train documents and store it in
    RUN/tokenizer/ with its checksum. Returns what tokenizer.json records."""
    rd = RunDir(run_uri)
    state = rd.load_finished()
    settings = later_config(state["config"], overrides)["tokenizer"]
    counts = {"documents": 0, "bytes": 0}
    try:
        blob = train_model(sample_texts(rd.document_uris(), settings, counts), settings)
    except RuntimeError as exc:
        raise TokenizerError(
            f"SentencePiece could not train on the sample of {counts['documents']} "
            f"documents ({counts['bytes']} bytes): {exc}. A smaller --vocab-size or a "
            "larger tokenizer.sample_bytes may help."
        ) from None
    write_bytes_atomic(rd.fs, join(rd.path, *TOKENIZER_MODEL), blob)
    sp = load_model(blob)
    info = {
        "sha256": model_sha256(blob),
        "vocab_size": sp.vocab_size(),
        "settings": settings,
        "sample": counts,
        "special_ids": special_ids(sp, False, False),
    }
    write_json_atomic(rd.fs, join(rd.path, *TOKENIZER_INFO), info)
    rd.set_stage("train_tokenizer", status="done", sha256=info["sha256"], vocab_size=info["vocab_size"], sample=counts)
    return info


# --- tokenize ---------------------------------------------------------------------------------


@run_lock("tokenize")
def tokenize(
    run_uri: str, model_path: str | None = None, overrides: list[str] | None = None, address: str | None = None
) -> dict:
    """Tokenize RUN/documents into RUN/tokens/*.arrow; returns the token statistics."""
    from slimpipe.runner import init_ray
    from slimpipe.stats import write_reports

    rd = RunDir(run_uri)
    state = rd.load_finished()
    config = later_config(state["config"], overrides)
    cfg = config["tokenize"]
    model_uri = model_path or rd.uri_of(*TOKENIZER_MODEL)
    if model_path is None and not rd.has_tokenizer():
        raise TokenizerError(
            f"{run_uri} has no tokenizer yet: run `slimpipe train-tokenizer {run_uri}` first, or pass --model FILE"
        )
    model = read_model(model_uri)
    sp = load_model(model, model_uri)
    settings = {
        "model": model_uri,
        "model_sha256": model_sha256(model),
        "vocab_size": sp.vocab_size(),
        "dtype": str(token_type(sp.vocab_size())),
        "special_ids": special_ids(sp, cfg["bos"], cfg["eos"]),
        "bos": cfg["bos"],
        "eos": cfg["eos"],
        "unit_bytes": cfg["unit_bytes"],
    }
    _check_same_tokens(rd, state.get("stages", {}).get("tokenize"), settings)
    was_done = state.get("stages", {}).get("tokenize", {}).get("status") == "done"
    rd.set_stage("tokenize", status="running", **settings)

    units = plan_units(rd.document_uris(), cfg["unit_bytes"])
    markers = rd.tokens_done()
    done = markers.done()
    todo = [dict(u, out=rd.tokens_uri(u["name"])) for u in units if u["name"] not in done]
    if todo:  # a killed tokenize may have left temporary files (on S3: copied, not yet deleted)
        remove_stale_tmp(rd.fs, join(rd.path, TOKENS))
    log.info("tokenize: %d units, %d already done", len(units), len(units) - len(todo))
    if todo:
        started = init_ray(dict(config["ray"], address=address or config["ray"].get("address")))
        try:
            for record in tokenize_units(todo, model, cfg["bos"], cfg["eos"], cfg["actors"]):
                markers.write(record["unit"], record)
        finally:
            if started:
                ray.shutdown()

    token_stats = _token_stats(markers.read([u["name"] for u in units]), settings)
    stats = read_json(rd.fs, join(rd.path, STATS))
    stats["tokens"] = token_stats
    write_reports(rd, stats)
    rd.set_stage("tokenize", status="done", units=len(units))
    return AlreadyComplete(token_stats) if was_done and not todo else token_stats


def _check_same_tokens(rd: RunDir, previous: dict | None, settings: dict) -> None:
    """Tokens of another model or policy must not mix with these."""
    if not previous or not rd.tokens_names():
        return
    changed = [k for k in TOKENIZE_SHAPING if previous.get(k) != settings[k]]
    if changed:
        raise RunConflict(
            f"{rd.uri_of(TOKENS)} holds tokens made with other settings ({', '.join(changed)} differ; model "
            f"{previous.get('model_sha256', '?')[:12]} then, {settings['model_sha256'][:12]} now). "
            f"Delete {rd.uri_of(TOKENS)} and {rd.uri_of(*TOKENS_DONE)} to tokenize again."
        )


def _token_stats(units: list[dict], settings: dict) -> dict:
    per_source: dict = {}
    per_split: dict = {}
    keys = ("documents", "empty", "tokens", "bytes")
    for unit in units:
        for row in unit["counts"]:
            for table, key in ((per_source, row["source"]), (per_split, row["split"])):
                acc = table.setdefault(key, dict.fromkeys(keys, 0))
                for k in keys:
                    acc[k] += row[k]
    total = {k: sum(v[k] for v in per_source.values()) for k in keys}
    for acc in (*per_source.values(), *per_split.values(), total):
        acc["tokens_per_byte"] = round(acc["tokens"] / acc["bytes"], 4) if acc["bytes"] else 0.0
    return {
        "per_source": per_source,
        "per_split": per_split,
        "total": total,
        "model_sha256": settings["model_sha256"],
        "vocab_size": settings["vocab_size"],
        "dtype": settings["dtype"],
        "bos": settings["bos"],
        "eos": settings["eos"],
        "files": len(units),
    }
