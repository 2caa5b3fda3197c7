"""Export stage: RUN/tokens -> training shards, one group (a tokens file) at a time, each split
apart so train and holdout never share a file.

- `arrow`: packed sequences (stages/pack.py) as Arrow IPC streams, OUT/SPLIT/NAME.arrow.
- `megatron`: Megatron-LM indexed datasets, OUT/SPLIT/NAME.bin + .idx, one document per
  entry, as Megatron's preprocess_data.py writes them (Megatron packs at training time). The
  .idx layout, from megatron/core/datasets/indexed_dataset.py: the magic b"MMIDIDX\\0\\0",
  version 1 (<Q), dtype code (<B), sequence count (<Q), document count (<Q), then int32
  sequence lengths, int64 byte pointers into .bin, int64 document indices (0, then the end of
  each document).

Documents are ordered by a permutation drawn from (seed, group), so an export is the same
whenever it is run. Empty documents carry no tokens and are counted, not written.
"""
from __future__ import annotations

import json
import logging
import struct
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.stages.pack import materialize_numpy, materialize_torch, packed_table, plan
from slimpipe.io.fs import (join, read_arrow_stream, resolve, write_arrow_stream_atomic, write_bytes_atomic,
    write_json_atomic)

log = logging.getLogger("slimpipe")

FORMATS = ("megatron", "arrow")
SPLITS = ("train", "holdout")
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3,
                        np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.float64): 6,
                        np.dtype(np.float32): 7, np.dtype(np.uint16): 8}


def megatron_dtype(vocab_size: int) -> np.dtype:
    """Megatron's own choice (DType.optimal_dtype): uint16 below 65,500 ids, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def megatron_index(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    lengths = np.asarray(lengths, dtype=np.int64)
    pointers = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * dtype.itemsize if len(lengths) else lengths
    return b"".join([
        MEGATRON_MAGIC,
        struct.pack("<Q", 1),
        struct.pack("<B", MEGATRON_DTYPE_CODES[dtype]),
        struct.pack("<Q", len(lengths)),
        struct.pack("<Q", len(lengths) + 1),
        lengths.astype(np.int32).tobytes(),
        pointers.astype(np.int64).tobytes(),
        np.arange(len(lengths) + 1, dtype=np.int64).tobytes(),
    ])


def group_rng(seed: int, group: str, purpose: int) -> np.random.Generator:
    """The random stream of one group for one purpose (0: document order, 1: sequence order)."""
    return np.random.default_rng([seed, zlib.crc32(group.encode()), purpose])


def split_documents(tokens: pa.Table, split: str, seed: int, group: str) -> tuple[pa.Table, int]:
    """The split's non-empty documents in the seeded order, and how many were empty."""
    rows = tokens.filter(pc.equal(tokens["split"], split))
    nonempty = rows.filter(pc.greater(pc.list_value_length(rows["input_ids"]), 0))
    order = group_rng(seed, group, 0).permutation(nonempty.num_rows)
    return nonempty.take(order), rows.num_rows - nonempty.num_rows


def flat_ids(docs: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(start of each document, all ids back to back)."""
    ids = docs["input_ids"].combine_chunks()
    offsets = ids.offsets.to_numpy()
    values = ids.values.to_numpy()[offsets[0]:offsets[-1]]
    return offsets[:-1] - offsets[0], values


def source_tokens(docs: pa.Table, lengths: pa.Array) -> dict:
    grouped = pa.table({"source": docs["source"], "tokens": lengths}).group_by("source").aggregate([("tokens", "sum")])
    return dict(zip(grouped["source"].to_pylist(), grouped["tokens_sum"].to_pylist()))


class ExportStage:
    """One task per group: read the tokens file once, write each split's shard, then the group's
    counts (which mark it done for a resumed export)."""

    def __init__(self, settings: dict, out_uri: str):
        self.s = settings
        self.out_uri = out_uri
        self.torch_device = _torch_device(settings.get("device", "cpu"))

    def __call__(self, batch: dict) -> dict:
        return {"done": [json.dumps(self.export_group(path)) for path in batch["path"]]}

    def export_group(self, path: str) -> dict:
        fs, _ = resolve(path)
        out_fs, out = resolve(self.out_uri)
        group = path.rsplit("/", 1)[-1].removesuffix(".arrow")
        tokens = read_arrow_stream(fs, path)
        counts = {}
        for split in SPLITS:
            docs, empty = split_documents(tokens, split, self.s["seed"], group)
            lengths = pc.list_value_length(docs["input_ids"])
            counts[split] = {"documents": docs.num_rows, "empty": empty, "sources": source_tokens(docs, lengths)}
            if docs.num_rows:
                counts[split].update(self.write_split(out_fs, join(out, split, group), docs, lengths.to_numpy(), group))
        done = {"group": group, "splits": counts}
        write_json_atomic(out_fs, join(out, ".work", f"{group}.json"), done)
        return done

    def write_split(self, fs, prefix: str, docs: pa.Table, lengths: np.ndarray, group: str) -> dict:
        """Write one split of one group under `prefix` (OUT/SPLIT/GROUP); returns its counts."""
        starts, ids = flat_ids(docs)
        if self.s["format"] == "megatron":
            dtype = np.dtype(self.s["megatron_dtype"])
            write_bytes_atomic(fs, prefix + ".bin", ids.astype(dtype).tobytes())
            write_bytes_atomic(fs, prefix + ".idx", megatron_index(lengths, dtype))
            return {"tokens": int(len(ids)), "file": _relative(prefix)}
        packing = plan(lengths, self.s["seq_len"], self.s["method"]).shuffled(group_rng(self.s["seed"], group, 1))
        if self.torch_device is None:
            arrays = materialize_numpy(ids, starts, packing, self.s["pad_id"])
        else:
            arrays = materialize_torch(ids, starts, packing, self.s["pad_id"], self.torch_device)
        table = packed_table(arrays, docs.schema.field("input_ids").type.value_type, docs["id"].combine_chunks(), packing)
        write_arrow_stream_atomic(fs, prefix + ".arrow", table, max_chunksize=1024)
        return {"tokens": packing.tokens(), "sequences": packing.num_sequences,
                "padding": packing.num_sequences * packing.seq_len - packing.tokens(),
                "documents_split": packing.split_documents(),
                "documents_over_seq_len": int(np.count_nonzero(lengths > packing.seq_len)),
                "file": _relative(prefix) + ".arrow"}


def _torch_device(device: str) -> str | None:
    """None for the numpy path; for "cuda", the GPU Ray gave this worker. A worker given a GPU
    that torch cannot see (a fake GPU resource, a driver problem) runs the same torch code on
    the CPU, with a warning, rather than failing the export."""
    if device == "cpu":
        return None
    import torch

    if torch.cuda.is_available():
        return "cuda"
    log.warning("export: this worker was given a GPU but torch sees no CUDA device; packing with torch on the CPU")
    return "cpu"


def _relative(prefix: str) -> str:
    """OUT/SPLIT/GROUP -> SPLIT/GROUP, how the manifest names a file."""
    return "/".join(prefix.rsplit("/", 2)[-2:])
