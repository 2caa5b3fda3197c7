"""Tokenize stage: documents -> token ids with a SentencePiece model.

The work unit is a run of row groups of one documents shard. An actor loads the model once,
then for each unit reads the rows, encodes them in one call, flattens the ids into a single
array (no per-document Python lists reach Arrow) and writes the unit's tokens file (Arrow IPC
stream, the format Hugging Face `datasets` memory-maps) atomically where it is told, then
hands back the unit's counts. Reading and writing happen inside the actor, so the stage needs
no read tasks competing for the CPUs the actors hold.

Policy: BOS/EOS are added as configured; an empty text gives no ids at all (not a lone
BOS/EOS pair) and is counted as `empty`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from slimpipe.io.fs import resolve, write_arrow_stream_atomic
from slimpipe.schemas import TOKENIZE_DONE, TOKENIZE_UNIT, tokens_schema

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


def sample_texts(files: list[str], settings: dict, counts: dict) -> Iterator[str]:
    """Train documents of row groups drawn at random (seeded) from the documents shards (URIs)
    until their text reaches sample_bytes, cut into pieces of at most max_piece_chars (the
    trainer skips longer sentences); `counts` gathers their documents and bytes. Only the drawn
    row groups are read, one at a time: the driver never streams the whole corpus."""
    groups = []
    for uri in files:
        meta = _parquet_metadata(uri)
        col = meta.schema.names.index("text")
        groups += [
            (uri, rg, meta.row_group(rg).column(col).total_uncompressed_size) for rg in range(meta.num_row_groups)
        ]
    chosen, size = [], 0
    for i in np.random.default_rng(settings["seed"]).permutation(len(groups)):
        if size >= settings["sample_bytes"]:
            break
        chosen.append(groups[i][:2])
        size += groups[i][2]
    step = settings["max_piece_chars"]
    for uri, rg in sorted(chosen):
        fs, path = resolve(uri)
        docs = pq.ParquetFile(path, filesystem=fs).read_row_group(rg, columns=["text", "split"])
        for text, split in zip(docs["text"].to_pylist(), docs["split"].to_pylist()):
            if split != "train" or not text:
                continue
            counts["documents"] += 1
            counts["bytes"] += len(text.encode())
            for i in range(0, len(text), step):
                yield text[i : i + step]


def train_model(sentences: Iterator[str], settings: dict) -> bytes:
    """A SentencePiece model trained on the sentences with the tokenizer settings."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.set_random_generator_seed(settings["seed"])
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model,
        model_type=settings["model_type"],
        vocab_size=settings["vocab_size"],
        byte_fallback=settings["byte_fallback"],
        user_defined_symbols=settings["user_symbols"],
        character_coverage=settings["character_coverage"],
        split_digits=settings["split_digits"],
        # Web text and code need their newlines and runs of spaces: no NFKC rewriting, no
        # whitespace clean-up, no dummy leading space, so decode(encode(text)) == text.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=4 * settings["max_piece_chars"],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    return model.getvalue()


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
        ids = self.sp.encode([texts[i] for i in nonempty], add_bos=self.bos, add_eos=self.eos, num_threads=1)
        lengths = np.zeros(len(texts), np.int64)
        lengths[nonempty] = np.fromiter(map(len, ids), np.int64, len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), self.type.to_pandas_dtype(), int(lengths.sum()))
        return np.concatenate([[0], np.cumsum(lengths)]), flat

    def __call__(self, docs: pa.Table) -> pa.Table:
        offsets, flat = self.encode(docs["text"].to_pylist())
        ids = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(flat, self.type))
        return pa.table(
            {"id": docs["id"], "source": docs["source"], "split": docs["split"], "input_ids": ids}, schema=self.schema
        )


def unit_counts(docs: pa.Table, tokens: pa.Table) -> list[dict]:
    """Documents, empty documents, tokens and text bytes per (source, split)."""
    lengths = pc.list_value_length(tokens["input_ids"])
    table = pa.table(
        {
            "source": docs["source"],
            "split": docs["split"],
            "tokens": lengths,
            "empty": pc.cast(pc.equal(lengths, 0), pa.int64()),
            "bytes": pc.binary_length(docs["text"]),
        }
    )
    grouped = table.group_by(["source", "split"]).aggregate(
        [("tokens", "count"), ("empty", "sum"), ("tokens", "sum"), ("bytes", "sum")]
    )
    return [
        {
            "source": r["source"],
            "split": r["split"],
            "documents": r["tokens_count"],
            "empty": r["empty_sum"],
            "tokens": r["tokens_sum"],
            "bytes": r["bytes_sum"],
        }
        for r in grouped.to_pylist()
    ]


def tokenize_unit(encoder: Encoder, unit: dict) -> dict:
    """Tokenize one TOKENIZE_UNIT row into its `out` file; returns its TOKENIZE_DONE row."""
    fs, path = resolve(unit["file"])
    docs = pq.ParquetFile(path, filesystem=fs).read_row_groups(unit["row_groups"], columns=DOCUMENT_COLUMNS)
    tokens = encoder(docs)
    out_fs, out = resolve(unit["out"])
    write_arrow_stream_atomic(out_fs, out, tokens, max_chunksize=8192)
    return {"unit": unit["name"], "counts": unit_counts(docs, tokens)}


class TokenizeActor:
    """The Ray actor: the model loads once, then units stream through."""

    def __init__(self, model: bytes, bos: bool, eos: bool):
        self.encoder = Encoder(model, bos, eos)

    def __call__(self, units: pa.Table) -> pa.Table:
        done = [tokenize_unit(self.encoder, u) for u in units.to_pylist()]
        return pa.Table.from_pylist(done, schema=TOKENIZE_DONE)


def tokenize_units(units: list[dict], model: bytes, bos: bool, eos: bool, actors: int | None) -> Iterator[dict]:
    """Tokenize TOKENIZE_UNIT rows on Ray, `actors` actors (default: one per CPU of the cluster),
    each writing its units' tokens files; yields each unit's TOKENIZE_DONE row as it finishes."""
    import ray

    if not units:
        return
    size = min(len(units), actors or max(1, int(ray.cluster_resources().get("CPU", 1))))
    # One block per unit, so that units spread over the actors one at a time.
    ds = ray.data.from_arrow([pa.Table.from_pylist([u], schema=TOKENIZE_UNIT) for u in units])
    # A fixed pool, all actors started at once: the stage reads its own input, so there are no
    # read tasks that actors holding every CPU could starve.
    ds = ds.map_batches(
        TokenizeActor,
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=size),
        fn_constructor_kwargs={"model": model, "bos": bos, "eos": eos},
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield from batch.to_pylist()


def plan_units(files: list[str], unit_bytes: int, min_units: int = 64) -> list[dict]:
    """Consecutive row groups of each documents shard (URIs), about `unit_bytes` of text each,
    or smaller so that a small run still makes `min_units` units to spread over the actors (a
    row group is the smallest unit). Depends on the documents and the config alone, so a
    resumed run finds the same units."""
    metas = [(uri, _parquet_metadata(uri)) for uri in files]
    total = sum(m.row_group(rg).total_byte_size for _, m in metas for rg in range(m.num_row_groups))
    target = max(1, min(unit_bytes, total // min_units))
    units = []
    for uri, meta in metas:
        stem = uri.rsplit("/", 1)[-1].removesuffix(".parquet")
        group: list[int] = []
        size = 0
        for rg in range(meta.num_row_groups):
            group.append(rg)
            size += meta.row_group(rg).total_byte_size
            if size >= target or rg == meta.num_row_groups - 1:
                units.append({"name": f"{stem}-{group[0]:05d}", "file": uri, "row_groups": group})
                group, size = [], 0
    return units


def _parquet_metadata(uri: str):
    fs, path = resolve(uri)
    return pq.ParquetFile(path, filesystem=fs).metadata
