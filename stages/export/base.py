"""What every export format shares: the interface a format implements, and the order and the
flat ids of a split's documents that formats write from."""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs


class ExportFormat(ABC):
    """How one split of one group (a tokens file) is written. A format names the settings it
    depends on, writes its files under the prefix it is given and reports its counts; it is
    registered by name in FORMATS (stages/export/__init__.py)."""

    suffix = ""  # what the manifest appends to a prefix to name a written file
    counters: tuple[str, ...] = ()  # the format's own counts, summed per split in the manifest
    uses_device = False  # whether it computes enough to run on a GPU where there is one

    def __init__(self, settings: dict, device: str = "cpu"):
        self.s = settings
        self.device = device

    @staticmethod
    def settings_of(pack: dict, vocab_size: int) -> dict:
        """The settings of this format that make two exports the same, from the pack config."""
        return {}

    @staticmethod
    def manifest_entries(settings: dict, shards: dict[str, list[tuple[str, int]]]) -> dict:
        """Manifest keys of this format, given each split's (file, tokens) in order."""
        return {}

    @abstractmethod
    def write(self, fs: pafs.FileSystem, prefix: str, docs: pa.Table, lengths: np.ndarray, group: str) -> dict:
        """Write a split's documents (none empty) under `prefix`; returns {"tokens", *counters}."""


def group_rng(seed: int, group: str, purpose: int) -> np.random.Generator:
    """The random stream of one group for one purpose (0: document order, 1: sequence order)."""
    return np.random.default_rng([seed, zlib.crc32(group.encode()), purpose])


def flat_ids(docs: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(start of each document, all ids back to back)."""
    ids = docs["input_ids"].combine_chunks()
    offsets = ids.offsets.to_numpy()
    values = ids.values.to_numpy()[offsets[0] : offsets[-1]]
    return offsets[:-1] - offsets[0], values
