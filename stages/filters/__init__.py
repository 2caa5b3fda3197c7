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
from slimpipe.stages.normalize import Normalizer

FILTERS: dict[str, type[Filter]] = {
    "length": LengthFilter,
    "language": LanguageFilter,
    "gopher_quality": GopherQuality,
    "gopher_repetition": GopherRepetition,
    "c4": C4Quality,
    "fineweb": FineWebQuality,
    "quality": QualityFilter,
}


def build_filter(name: str, settings: dict) -> Filter:
    """One filter from its config section (`enabled` is the stage's business, not the filter's)."""
    return FILTERS[name](**{k: v for k, v in settings.items() if k != "enabled"})


def build_filters(filters_cfg: dict) -> list[Filter]:
    """The enabled filters, in the order the config lists them."""
    return [build_filter(name, cfg) for name, cfg in filters_cfg.items() if cfg.get("enabled", True)]


class FilterStage:
    """Runs the filters over the rows not yet rejected. A filter that rewrites a document it
    keeps (C4's line removal) hands the new text to the filters after it; if the document is
    kept in the end, the row takes the new text, its bytes (`bytes_cut`: how many went) and
    its normalised forms again, so that dedup sees the text that is written."""

    def __init__(self, filters_cfg: dict, normalizer: Normalizer | None = None):
        self.filters = build_filters(filters_cfg)
        self.normalizer = normalizer or Normalizer()

    def decide(self, doc: Doc) -> Rejection | None:
        """The first objection to the document, or None to keep it."""
        return self.judge(doc)[0]

    def judge(self, doc: Doc) -> tuple[Rejection | None, str | None]:
        """(the first objection, or None; the text as the filters left it, if one rewrote it)."""
        edited = None
        for flt in self.filters:
            rejection = flt.check(doc)
            if rejection is not None:
                return rejection, None
            text = flt.edit(doc)
            if text is not None:
                edited = text
                doc = Doc(text, doc.norm_chars, doc.annotations)
        return None, edited

    def annotate(self, texts: list[str]) -> dict[str, list]:
        out: dict[str, list] = {}
        for flt in self.filters:
            out.update(flt.annotate(texts))
        return out

    def __call__(self, table: pa.Table) -> pa.Table:
        if not self.filters:
            return table
        columns = {
            name: table[name].to_pylist() for name in ("reject_stage", "reject_reason", "reject_value", "reject_detail")
        }
        texts = table["text"].to_pylist()
        norm_chars = table["norm_chars"].to_pylist()
        live = [i for i, stage in enumerate(columns["reject_stage"]) if stage is None]
        found = self.annotate([texts[i] for i in live])
        annotated = {name: [None] * table.num_rows for name in found}
        edits: dict[int, str] = {}
        for j, i in enumerate(live):
            notes = {name: values[j] for name, values in found.items()}
            for name, value in notes.items():
                annotated[name][i] = value
            rejection, edited = self.judge(Doc(texts[i], norm_chars[i] or 0, notes))
            if rejection is not None:
                columns["reject_stage"][i] = "filter"
                columns["reject_reason"][i] = rejection.reason
                columns["reject_value"][i] = rejection.value
                columns["reject_detail"][i] = rejection.detail
            elif edited is not None:
                edits[i] = edited
        for name, values in {**columns, **annotated}.items():
            table = _set_column(table, name, values)
        return self._apply_edits(table, edits) if edits else table

    def _apply_edits(self, table: pa.Table, edits: dict[int, str]) -> pa.Table:
        rows = sorted(edits)
        texts = [edits[i] for i in rows]
        new_bytes = [len(text.encode("utf-8")) for text in texts]
        edited = table.take(pa.array(rows))
        old_bytes = edited["bytes_clean"].to_pylist()
        renormalized = self.normalizer(_set_column(edited, "text", texts))
        replace = {
            "text": texts,
            "bytes_clean": new_bytes,
            "bytes_cut": [o - n for o, n in zip(old_bytes, new_bytes)],
            **{name: renormalized[name].to_pylist() for name in ("norm_chars", "text_hash", "norm_text")},
        }
        for name, values in replace.items():
            column = table[name].to_pylist()
            for i, value in zip(rows, values):
                column[i] = value
            table = _set_column(table, name, column)
        return table


def _filter_batch(table: pa.Table, filters_cfg: dict, hash_normalized: bool, keep_normalized: bool) -> pa.Table:
    return FilterStage(filters_cfg, Normalizer(hash_normalized, keep_normalized))(table)


def filter_documents(ds, filters_cfg: dict, hash_normalized: bool, keep_normalized: bool):
    """The filter stage over a Ray dataset of records; a kept page a filter rewrote is normalised
    again as the normalise stage did it."""
    return ds.map_batches(
        _filter_batch,
        fn_kwargs={"filters_cfg": filters_cfg, "hash_normalized": hash_normalized, "keep_normalized": keep_normalized},
        batch_format="pyarrow",
        batch_size=None,
        zero_copy_batch=True,
    )


def _set_column(table: pa.Table, name: str, values: list) -> pa.Table:
    field = table.schema.field(name)
    return table.set_column(table.schema.get_field_index(name), field, pa.array(values, field.type))


__all__ = ["FILTERS", "Doc", "Filter", "FilterStage", "Rejection", "build_filter", "build_filters", "filter_documents"]
