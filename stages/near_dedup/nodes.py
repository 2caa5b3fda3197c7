"""Node numbers: a document's number in a near-dedup run is (index of its part file << 32) | its
row in that part, so any step can find a node's part (to read its text or metadata) without a
lookup table."""

from __future__ import annotations

import numpy as np

ROW_BITS = 32


def node_numbers(part_index: int, rows: np.ndarray) -> np.ndarray:
    return (np.int64(part_index) << np.int64(ROW_BITS)) | rows.astype(np.int64)


def part_of(nodes: np.ndarray) -> np.ndarray:
    return nodes >> np.int64(ROW_BITS)


def row_of(nodes: np.ndarray) -> np.ndarray:
    return nodes & np.int64((1 << ROW_BITS) - 1)
