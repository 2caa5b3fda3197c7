"""Filter stage: an ordered list of filters, each a small class with one rule and one reason.
The first filter that rejects a row decides; the row travels on, marked with stage "filter",
the filter's reason, the value it measured and a sentence saying why."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Filter(ABC):
    """One rule with a name and a reason code."""

    name: str = ""
    reason: str = ""

    @abstractmethod
    def measure(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the value the rule compares, and whether the row is kept."""

    def describe(self, value: float) -> str:
        return f"{self.name}: {value}"


class LengthFilter(Filter):
    """SlimPajama's rule: drop documents under `min_chars` characters once lower-cased, stripped
    of punctuation and with whitespace collapsed (the `norm_chars` column)."""

    name = "length"
    reason = "too_short"

    def __init__(self, min_chars: int = 200):
        self.min_chars = min_chars

    def measure(self, table):
        values = table.column("norm_chars").to_numpy(zero_copy_only=False)
        values = np.nan_to_num(values.astype(np.float64), nan=0.0)
        return values, values >= self.min_chars

    def describe(self, value):
        return f"{int(value)} normalised characters, under the minimum of {self.min_chars}"


FILTERS = {"length": LengthFilter}


def build_filters(filters_cfg: dict) -> list[Filter]:
    out = []
    for name, cfg in filters_cfg.items():
        cfg = dict(cfg)
        if cfg.pop("enabled", True):
            out.append(FILTERS[name](**cfg))
    return out


class FilterStage:
    """Runs the filters over rows not yet rejected."""

    def __init__(self, filters_cfg: dict):
        self.filters = build_filters(filters_cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        if not self.filters:
            return table
        stage = table.column("reject_stage").to_pylist()
        reason = table.column("reject_reason").to_pylist()
        value = table.column("reject_value").to_pylist()
        detail = table.column("reject_detail").to_pylist()
        live = np.asarray(pc.is_null(table.column("reject_stage")).to_numpy(zero_copy_only=False))
        for flt in self.filters:
            if not live.any():
                break
            values, keep = flt.measure(table)
            for i in np.flatnonzero(live & ~keep):
                stage[i], reason[i], value[i] = "filter", flt.reason, float(values[i])
                detail[i] = flt.describe(values[i])
            live &= keep
        for name, data, typ in (("reject_stage", stage, pa.string()), ("reject_reason", reason, pa.string()),
                                ("reject_value", value, pa.float64()), ("reject_detail", detail, pa.string())):
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(data, typ))
        return table
