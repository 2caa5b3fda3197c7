"""`slimpipe train-quality`: the example files, read as the pipeline reads its inputs, train the
quality filter's classifier."""

from __future__ import annotations

from collections.abc import Iterator

from slimpipe.config import load_preset
from slimpipe.io.discover import discover
from slimpipe.io.inputs import count_newlines_in_range, plan_chunks
from slimpipe.stages.filters.quality import fit
from slimpipe.stages.read import read_chunk


def example_texts(paths: list[str], text_field: str) -> Iterator[str]:
    """Texts of the example files (JSONL, plain or compressed, and Parquet), streamed."""
    read_cfg = {**load_preset("slimpajama")["input"], "text_field": text_field}
    files = discover(paths, read_cfg).files
    chunks = plan_chunks(files, read_cfg["split_bytes"], lambda jobs: [count_newlines_in_range(*j) for j in jobs])
    for chunk in chunks:
        for table in read_chunk(chunk, read_cfg):
            yield from (t for t in table["text"].to_pylist() if t)


def train_quality(
    positive: list[str], negative: list[str], output: str, text_field: str = "text", **fit_options
) -> dict:
    """Fit the classifier on the texts of the positive and negative example files; returns its
    figures on the held-out examples."""
    return fit(example_texts(positive, text_field), example_texts(negative, text_field), output, **fit_options)
