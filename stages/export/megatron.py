"""Megatron-LM indexed datasets: PREFIX.bin + PREFIX.idx, one document per entry, as Megatron's
preprocess_data.py writes them (Megatron packs at training time). The .idx layout, from
megatron/core/datasets/indexed_dataset.py: the magic b"MMIDIDX\\0\\0", version 1 (<Q), dtype
code (<B), sequence count (<Q), document count (<Q), then int32 sequence lengths, int64 byte
pointers into .bin, int64 document indices (0, then the end of each document)."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from slimpipe.io.fs import write_bytes_atomic
from slimpipe.stages.export.base import ExportFormat, flat_ids

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}


def megatron_dtype(vocab_size: int) -> np.dtype:
    """Megatron's own choice (DType.optimal_dtype): uint16 below 65,500 ids, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def megatron_index(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    lengths = np.asarray(lengths, dtype=np.int64)
    pointers = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * dtype.itemsize if len(lengths) else lengths
    return b"".join(
        [
            MEGATRON_MAGIC,
            struct.pack("<Q", 1),
            struct.pack("<B", MEGATRON_DTYPE_CODES[dtype]),
            struct.pack("<Q", len(lengths)),
            struct.pack("<Q", len(lengths) + 1),
            lengths.astype(np.int32).tobytes(),
            pointers.astype(np.int64).tobytes(),
            np.arange(len(lengths) + 1, dtype=np.int64).tobytes(),
        ]
    )


class Megatron(ExportFormat):
    """A Megatron export moves bytes; there is nothing to compute on a GPU."""

    @staticmethod
    def settings_of(pack: dict, vocab_size: int) -> dict:
        return {"megatron_dtype": megatron_dtype(vocab_size).name}

    @staticmethod
    def manifest_entries(settings: dict, shards: dict[str, list[tuple[str, int]]]) -> dict:
        # ready for Megatron's --data-path: weight (tokens) and prefix, per file
        return {
            "dtype": settings["megatron_dtype"],
            "megatron_data_path": {
                split: " ".join(f"{tokens} {file}" for file, tokens in files) for split, files in shards.items()
            },
        }

    def write(self, fs: pafs.FileSystem, prefix: str, docs: pa.Table, lengths: np.ndarray, group: str) -> dict:
        _, ids = flat_ids(docs)
        dtype = np.dtype(self.s["megatron_dtype"])
        write_bytes_atomic(fs, prefix + ".bin", ids.astype(dtype).tobytes())
        write_bytes_atomic(fs, prefix + ".idx", megatron_index(lengths, dtype))
        return {"tokens": int(len(ids))}
