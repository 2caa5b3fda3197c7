"""Tokenize stage: documents -> token ids with a SentencePiece model.

The work unit is a run of row groups of one documents shard. An actor loads the model once,
then for each unit reads the rows, encodes them in one call, flattens the ids into a single
array (no per-document Python lists reach Arrow) and writes RUN/tokens/UNIT.arrow (Arrow IPC
stream, the format Hugging Face `datasets` memory-maps) atomically, then a small JSON of the
unit's counts that marks it done. Reading and writing happen inside the actor, so the stage
needs no read tasks competing for the CPUs the actors hold.

Policy: BOS/EOS are added as configured; an empty text gives no ids at all (not a lone
BOS/EOS pair) and is counted as `empty`.
"""
from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from slimpipe.schemas import tokens_schema
from slimpipe.io.fs import join, resolve, write_arrow_stream_atomic, write_json_atomic

DOCUMENT_COLUMNS = ["id", "source", "split", "text"]


class TokenizerError(ValueError):
    """The model cannot be used: missing, not a SentencePiece model, or without a needed token."""


def load_model(model: bytes, name: str = "model"):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(model)
    except (RuntimeError, OSError) as exc:
        raise TokenizerError(f"{name} is not a SentencePiece model ({exc})") from None
    return sp


def read_model(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer model {uri} does not exist") from None


def model_sha256(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()


def token_type(vocab_size: int) -> pa.DataType:
    """uint16 while every id fits in it, else uint32."""
    return pa.uint16() if vocab_size <= 1 << 16 else pa.uint32()


def special_ids(sp, bos: bool, eos: bool) -> dict:
    """The ids the policy needs; a model without a needed token is refused up front."""
    ids = {"bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id(), "unk": sp.unk_id()}
    for name, wanted in (("bos", bos), ("eos", eos)):
        if wanted and ids[name] < 0:
            raise TokenizerError(f"the model has no {name.upper()} token; set tokenize.{name}: false")
    return ids


class Encoder:
    """One model, one policy: a table of documents -> a table of TOKENS rows."""

    def __init__(self, model: bytes, bos: bool, eos: bool):
        self.sp = load_model(model)
        special_ids(self.sp, bos, eos)
        self.bos, self.eos = bos, eos
        self.type = token_type(self.sp.vocab_size())
        self.schema = tokens_schema(self.type)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, ids) of the texts' id lists, ids flat in one array."""
        nonempty = [i for i, t in enumerate(texts) if t]
        ids = self.sp.encode([texts[i] for i in nonempty], add_bos=self.bos, add_eos=self.eos,
                             num_threads=1)
        lengths = np.zeros(len(texts), np.int64)
        lengths[nonempty] = np.fromiter(map(len, ids), np.int64, len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), self.type.to_pandas_dtype(), int(lengths.sum()))
        return np.concatenate([[0], np.cumsum(lengths)]), flat

    def __call__(self, docs: pa.Table) -> pa.Table:
        offsets, flat = self.encode(docs["text"].to_pylist())
        ids = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(flat, self.type))
        return pa.table({"id": docs["id"], "source": docs["source"], "split": docs["split"],
                         "input_ids": ids}, schema=self.schema)


def unit_counts(docs: pa.Table, tokens: pa.Table) -> list[dict]:
    """Documents, empty documents, tokens and text bytes per (source, split)."""
    lengths = pc.list_value_length(tokens["input_ids"])
    table = pa.table({"source": docs["source"], "split": docs["split"], "tokens": lengths,
                      "empty": pc.cast(pc.equal(lengths, 0), pa.int64()),
                      "bytes": pc.binary_length(docs["text"])})
    grouped = table.group_by(["source", "split"]).aggregate(
        [("tokens", "count"), ("empty", "sum"), ("tokens", "sum"), ("bytes", "sum")])
    return [{"source": r["source"], "split": r["split"], "documents": r["tokens_count"],
             "empty": r["empty_sum"], "tokens": r["tokens_sum"], "bytes": r["bytes_sum"]}
            for r in grouped.to_pylist()]


def tokenize_unit(encoder: Encoder, run_uri: str, unit: dict) -> dict:
    fs, run_path = resolve(run_uri)
    docs = pq.ParquetFile(unit["file"], filesystem=fs).read_row_groups(unit["row_groups"], columns=DOCUMENT_COLUMNS)
    tokens = encoder(docs)
    write_arrow_stream_atomic(fs, join(run_path, "tokens", f"{unit['name']}.arrow"), tokens, max_chunksize=8192)
    done = {"unit": unit["name"], "counts": unit_counts(docs, tokens)}
    write_json_atomic(fs, join(run_path, "_work", "tokens", f"{unit['name']}.json"), done)
    return done


class TokenizeStage:
    """The Ray actor: the model loads once, then units stream through."""

    def __init__(self, model: bytes, bos: bool, eos: bool, run_uri: str):
        self.encoder = Encoder(model, bos, eos)
        self.run_uri = run_uri

    def __call__(self, batch: dict) -> dict:
        done = [tokenize_unit(self.encoder, self.run_uri, json.loads(u)) for u in batch["unit"]]
        return {"done": [json.dumps(d) for d in done]}


def plan_units(run_uri: str, files: list[str], unit_bytes: int, min_units: int = 64) -> list[dict]:
    """Consecutive row groups of each documents shard, about `unit_bytes` of text each, or
    smaller so that a small run still makes `min_units` units to spread over the actors (a
    row group is the smallest unit). Depends on the documents and the config alone, so a
    resumed run finds the same units."""
    fs, _ = resolve(run_uri)
    metas = [(path, pq.ParquetFile(path, filesystem=fs).metadata) for path in files]
    total = sum(m.row_group(rg).total_byte_size for _, m in metas for rg in range(m.num_row_groups))
    target = max(1, min(unit_bytes, total // min_units))
    units = []
    for path, meta in metas:
        stem = path.rsplit("/", 1)[-1].removesuffix(".parquet")
        group: list[int] = []
        size = 0
        for rg in range(meta.num_row_groups):
            group.append(rg)
            size += meta.row_group(rg).total_byte_size
            if size >= target or rg == meta.num_row_groups - 1:
                units.append({"name": f"{stem}-{group[0]:05d}", "file": path, "row_groups": group})
                group, size = [], 0
    return units
