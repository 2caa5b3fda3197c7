"""Packed Arrow: fixed-length training sequences (stages/pack.py) as an Arrow IPC stream,
PREFIX.arrow, the sequences in an order drawn from (seed, group)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from slimpipe.io.fs import write_arrow_stream_atomic
from slimpipe.stages.export.base import ExportFormat, flat_ids, group_rng
from slimpipe.stages.pack import materialize_numpy, materialize_torch, packed_table, plan

log = logging.getLogger("slimpipe")


class PackedArrow(ExportFormat):
    suffix = ".arrow"
    counters = ("sequences", "padding_tokens", "documents_split", "documents_over_seq_len")
    uses_device = True

    def __init__(self, settings: dict, device: str = "cpu"):
        super().__init__(settings, device)
        self.torch_device = _torch_device(device)

    @staticmethod
    def settings_of(pack: dict, vocab_size: int) -> dict:
        return {"seq_len": pack["seq_len"], "method": pack["method"]}

    def write(self, fs: pafs.FileSystem, prefix: str, docs: pa.Table, lengths: np.ndarray, group: str) -> dict:
        starts, ids = flat_ids(docs)
        packing = plan(lengths, self.s["seq_len"], self.s["method"]).shuffled(group_rng(self.s["seed"], group, 1))
        if self.torch_device is None:
            arrays = materialize_numpy(ids, starts, packing, self.s["pad_id"])
        else:
            arrays = materialize_torch(ids, starts, packing, self.s["pad_id"], self.torch_device)
        token_type = docs.schema.field("input_ids").type.value_type
        table = packed_table(arrays, token_type, docs["id"].combine_chunks(), packing)
        write_arrow_stream_atomic(fs, prefix + self.suffix, table, max_chunksize=1024)
        return {
            "tokens": packing.tokens(),
            "sequences": packing.num_sequences,
            "padding_tokens": packing.num_sequences * packing.seq_len - packing.tokens(),
            "documents_split": packing.split_documents(),
            "documents_over_seq_len": int(np.count_nonzero(lengths > packing.seq_len)),
        }


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
