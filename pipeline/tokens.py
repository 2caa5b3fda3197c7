"""The steps after `slimpipe run` that make tokens: train a tokenizer on the run's documents,
then tokenize them into RUN/tokens. Each records what it used in run.json and its counts in
stats.json; a killed tokenize resumes with the units it had not finished."""
from __future__ import annotations

import io
import json
import logging
import os

import ray

from slimpipe.config import later_config
from slimpipe.errors import RunConflict
from slimpipe.rundir import RunDir
from slimpipe.stages.tokenize import (TokenizeStage, TokenizerError, load_model, model_sha256,
                                      plan_units, read_model, special_ids, token_type)
from slimpipe.io.fs import exists, join, list_files, read_json, write_bytes_atomic, write_json_atomic

log = logging.getLogger("slimpipe")

MODEL_FILE = ("tokenizer", "tokenizer.model")
# What makes two tokenizations of the same documents the same.
TOKENIZE_SHAPING = ("model_sha256", "bos", "eos", "unit_bytes")


# --- train-tokenizer --------------------------------------------------------------------------


def _sample_texts(rd: RunDir, settings: dict, counts: dict):
    """Train documents of row groups drawn at random (seeded) from RUN/documents until their text
    reaches sample_bytes, cut into pieces of at most max_piece_chars (the trainer skips longer
    sentences). Only the drawn row groups are read, one at a time: the driver never streams the
    whole corpus."""
    import numpy as np
    import pyarrow.parquet as pq

    groups = []
    for path in rd.files("documents"):
        meta = pq.ParquetFile(path, filesystem=rd.fs).metadata
        col = meta.schema.names.index("text")
        groups += [(path, rg, meta.row_group(rg).column(col).total_uncompressed_size)
                   for rg in range(meta.num_row_groups)]
    chosen, size = [], 0
    for i in np.random.default_rng(settings["seed"]).permutation(len(groups)):
        if size >= settings["sample_bytes"]:
            break
        chosen.append(groups[i][:2])
        size += groups[i][2]
    step = settings["max_piece_chars"]
    for path, rg in sorted(chosen):
        docs = pq.ParquetFile(path, filesystem=rd.fs).read_row_group(rg, columns=["text", "split"])
        for text, split in zip(docs["text"].to_pylist(), docs["split"].to_pylist()):
            if split != "train" or not text:
                continue
            counts["documents"] += 1
            counts["bytes"] += len(text.encode())
            for i in range(0, len(text), step):
                yield text[i : i + step]


def train_tokenizer(run_uri: str, overrides: list[str] | None = None) -> dict:
    """Train a SentencePiece model on a sample of the run's train documents and store it in
    RUN/tokenizer/ with its checksum. Returns what tokenizer.json records."""
    import sentencepiece as spm

    rd = RunDir(run_uri)
    state = rd.load_finished()
    settings = later_config(state["config"], overrides)["tokenizer"]
    counts = {"documents": 0, "bytes": 0}
    model = io.BytesIO()
    spm.set_random_generator_seed(settings["seed"])
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_sample_texts(rd, settings, counts), model_writer=model,
            model_type=settings["model_type"], vocab_size=settings["vocab_size"],
            byte_fallback=settings["byte_fallback"], user_defined_symbols=settings["user_symbols"],
            character_coverage=settings["character_coverage"], split_digits=settings["split_digits"],
            # Web text and code need their newlines and runs of spaces: no NFKC rewriting, no
            # whitespace clean-up, no dummy leading space, so decode(encode(text)) == text.
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
            allow_whitespace_only_pieces=True, max_sentence_length=4 * settings["max_piece_chars"],
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, num_threads=os.cpu_count() or 1, minloglevel=2)
    except RuntimeError as exc:
        raise TokenizerError(f"SentencePiece could not train on the sample of {counts['documents']} "
                             f"documents ({counts['bytes']} bytes): {exc}. A smaller --vocab-size or a "
                             "larger tokenizer.sample_bytes may help.") from None
    blob = model.getvalue()
    write_bytes_atomic(rd.fs, join(rd.path, *MODEL_FILE), blob)
    sp = load_model(blob)
    info = {"sha256": model_sha256(blob), "vocab_size": sp.vocab_size(), "settings": settings,
            "sample": counts, "special_ids": special_ids(sp, False, False)}
    write_json_atomic(rd.fs, join(rd.path, "tokenizer", "tokenizer.json"), info)
    rd.set_stage("train_tokenizer", status="done", sha256=info["sha256"], vocab_size=info["vocab_size"],
                 sample=counts)
    return info


# --- tokenize ---------------------------------------------------------------------------------


def tokenize(run_uri: str, model_path: str | None = None, overrides: list[str] | None = None,
             address: str | None = None) -> dict:
    """Tokenize RUN/documents into RUN/tokens/*.arrow; returns the token statistics."""
    from slimpipe.runner import init_ray
    from slimpipe.stats import write_reports

    rd = RunDir(run_uri)
    state = rd.load_finished()
    config = later_config(state["config"], overrides)
    cfg = config["tokenize"]
    model_uri = model_path or rd.uri_of(*MODEL_FILE)
    if model_path is None and not exists(rd.fs, join(rd.path, *MODEL_FILE)):
        raise TokenizerError(f"{run_uri} has no tokenizer yet: run `slimpipe train-tokenizer {run_uri}` "
                             "first, or pass --model FILE")
    model = read_model(model_uri)
    sp = load_model(model, model_uri)
    settings = {"model": model_uri, "model_sha256": model_sha256(model), "vocab_size": sp.vocab_size(),
                "dtype": str(token_type(sp.vocab_size())), "special_ids": special_ids(sp, cfg["bos"], cfg["eos"]),
                "bos": cfg["bos"], "eos": cfg["eos"], "unit_bytes": cfg["unit_bytes"]}
    _check_same_tokens(rd, state.get("stages", {}).get("tokenize"), settings)
    rd.set_stage("tokenize", status="running", **settings)

    units = plan_units(rd.uri, rd.files("documents"), cfg["unit_bytes"])
    done = {i.base_name[:-5] for i in list_files(rd.fs, join(rd.work, "tokens")) if i.base_name.endswith(".json")}
    todo = [u for u in units if u["name"] not in done]
    log.info("tokenize: %d units, %d already done", len(units), len(units) - len(todo))
    if todo:
        ray_cfg = dict(config["ray"], address=address or config["ray"].get("address"))
        started = init_ray(ray_cfg)
        try:
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            actors = min(len(todo), cfg["actors"] or cpus)
            ds = ray.data.from_items([{"unit": json.dumps(u)} for u in todo], override_num_blocks=len(todo))
            # A fixed pool, all actors started at once: the stage reads its own input, so there
            # are no read tasks that actors holding every CPU could starve.
            ds = ds.map_batches(TokenizeStage, batch_size=1, num_cpus=1,
                                compute=ray.data.ActorPoolStrategy(size=actors),
                                fn_constructor_kwargs={"model": model, "bos": cfg["bos"], "eos": cfg["eos"],
                                                       "run_uri": rd.uri})
            for _ in ds.iter_rows():
                pass
        finally:
            if started:
                ray.shutdown()

    counts = [read_json(rd.fs, join(rd.work, "tokens", f"{u['name']}.json")) for u in units]
    token_stats = _token_stats(counts, settings)
    stats = read_json(rd.fs, join(rd.path, "stats.json"))
    stats["tokens"] = token_stats
    write_reports(rd, stats)
    rd.set_stage("tokenize", status="done", units=len(units))
    return token_stats


def _check_same_tokens(rd: RunDir, previous: dict | None, settings: dict) -> None:
    """Tokens of another model or policy must not mix with these."""
    has_tokens = any(i.base_name.endswith(".arrow") for i in list_files(rd.fs, join(rd.path, "tokens")))
    if not previous or not has_tokens:
        return
    changed = [k for k in TOKENIZE_SHAPING if previous.get(k) != settings[k]]
    if changed:
        raise RunConflict(
            f"{rd.uri}/tokens holds tokens made with other settings ({', '.join(changed)} differ; model "
            f"{previous.get('model_sha256', '?')[:12]} then, {settings['model_sha256'][:12]} now). "
            f"Delete {rd.uri}/tokens and {rd.uri}/_work/tokens to tokenize again.")


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
    return {"per_source": per_source, "per_split": per_split, "total": total,
            "model_sha256": settings["model_sha256"], "vocab_size": settings["vocab_size"],
            "dtype": settings["dtype"], "bos": settings["bos"], "eos": settings["eos"], "files": len(units)}
