"""Filter stage: an ordered list of filters. The first that objects to a document decides; the
row travels on marked with stage "filter", the reason ("<filter>.<rule>"), the value the rule
measured and a sentence saying why. The statistics the filters share (lines, words, n-grams)
are computed once per document, in `Doc`."""
from __future__ import annotations

import pyarrow as pa

from slimpipe.stages.filters.base import Filter, Rejection
from slimpipe.stages.filters.c4 import C4Quality
from slimpipe.stages.filters.doc import Doc
from slimpipe.stages.filters.fineweb import FineWebQuality
from slimpipe.stages.filters.gopher import GopherQuality, GopherRepetition
from slimpipe.stages.filters.language import LanguageFilter
from slimpipe.stages.filters.length import LengthFilter
from slimpipe.stages.filters.quality import QualityFilter

FILTERS: dict[str, type[Filter]] = {
    "length": LengthFilter,
    "language": LanguageFilter,
    "gopher_quality": GopherQuality,
    "gopher_repetition": GopherRepetition,
    "c4": C4Quality,
    "fineweb": FineWebQuality,
    "quality": QualityFilter,
}


def build_filters(filters_cfg: dict) -> list[Filter]:
    """The enabled filters, in the order the config lists them."""
    out = []
    for name, cfg in filters_cfg.items():
        cfg = dict(cfg)
        if cfg.pop("enabled", True):
            out.append(FILTERS[name](**cfg))
    return out


class FilterStage:
    """Runs the filters over the rows not yet rejected."""

    def __init__(self, filters_cfg: dict):
        self.filters = build_filters(filters_cfg)

    def decide(self, doc: Doc) -> Rejection | None:
        for flt in self.filters:
            rejection = flt.check(doc)
            if rejection is not None:
                return rejection
        return None

    def annotate(self, texts: list[str]) -> dict[str, list]:
        out: dict[str, list] = {}
        for flt in self.filters:
            out.update(flt.annotate(texts))
        return out

    def __call__(self, table: pa.Table) -> pa.Table:
        if not self.filters:
            return table
        columns = {name: table[name].to_pylist()
                   for name in ("reject_stage", "reject_reason", "reject_value", "reject_detail")}
        texts = table["text"].to_pylist()
        norm_chars = table["norm_chars"].to_pylist()
        live = [i for i, stage in enumerate(columns["reject_stage"]) if stage is None]
        found = self.annotate([texts[i] for i in live])
        annotated = {name: [None] * table.num_rows for name in found}
        for j, i in enumerate(live):
            notes = {name: values[j] for name, values in found.items()}
            for name, value in notes.items():
                annotated[name][i] = value
            rejection = self.decide(Doc(texts[i], norm_chars[i] or 0, notes))
            if rejection is not None:
                columns["reject_stage"][i] = "filter"
                columns["reject_reason"][i] = rejection.reason
                columns["reject_value"][i] = rejection.value
                columns["reject_detail"][i] = rejection.detail
        for name, values in {**columns, **annotated}.items():
            field = table.schema.field(name)
            table = table.set_column(table.schema.get_field_index(name), field, pa.array(values, field.type))
        return table


__all__ = ["FILTERS", "Doc", "Filter", "FilterStage", "Rejection", "build_filters"]
