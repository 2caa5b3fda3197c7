"""Export stage: tokens files -> training shards, one group (a tokens file) at a time, each split
apart so train and holdout never share a file. Each format is a module with an ExportFormat
class, registered by name in FORMATS:

- `megatron`: Megatron-LM indexed datasets, PREFIX.bin + .idx (megatron.py).
- `arrow`: packed sequences as Arrow IPC streams, PREFIX.arrow (packed.py).

Documents are ordered by a permutation drawn from (seed, group), so an export is the same
whenever it is run. Empty documents carry no tokens and are counted, not written.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.errors import ConfigError
from slimpipe.io.fs import read_arrow_stream, resolve
from slimpipe.schemas import EXPORT_DONE, EXPORT_GROUP
from slimpipe.stages.export.base import ExportFormat, group_rng
from slimpipe.stages.export.megatron import Megatron, megatron_dtype
from slimpipe.stages.export.packed import PackedArrow

__all__ = ["FORMATS", "SPLITS", "ExportFormat", "export_group", "export_groups", "megatron_dtype"]

log = logging.getLogger("slimpipe")

FORMATS: dict[str, type[ExportFormat]] = {
    "megatron": Megatron,
    "arrow": PackedArrow,
}
SPLITS = ("train", "holdout")


def split_documents(tokens: pa.Table, split: str, seed: int, group: str) -> tuple[pa.Table, int]:
    """The split's non-empty documents in the seeded order, and how many were empty."""
    rows = tokens.filter(pc.equal(tokens["split"], split))
    nonempty = rows.filter(pc.greater(pc.list_value_length(rows["input_ids"]), 0))
    order = group_rng(seed, group, 0).permutation(nonempty.num_rows)
    return nonempty.take(order), rows.num_rows - nonempty.num_rows


def source_tokens(docs: pa.Table, lengths: pa.Array) -> dict:
    grouped = pa.table({"source": docs["source"], "tokens": lengths}).group_by("source").aggregate([("tokens", "sum")])
    return dict(zip(grouped["source"].to_pylist(), grouped["tokens_sum"].to_pylist()))


def export_group(fmt: ExportFormat, group: dict) -> dict:
    """Read one EXPORT_GROUP row's tokens file once and write each split's shard under the
    prefix given for it; returns the group's EXPORT_DONE row."""
    fs, path = resolve(group["tokens"])
    tokens = read_arrow_stream(fs, path)
    splits = []
    for out in group["outputs"]:
        docs, empty = split_documents(tokens, out["split"], fmt.s["seed"], group["group"])
        lengths = pc.list_value_length(docs["input_ids"])
        counts = {"tokens": 0}
        if docs.num_rows:
            out_fs, prefix = resolve(out["prefix"])
            counts = fmt.write(out_fs, prefix, docs, lengths.to_numpy(), group["group"])
        splits.append(
            {
                "split": out["split"],
                "documents": docs.num_rows,
                "empty": empty,
                "tokens": counts.pop("tokens"),
                "sources": source_tokens(docs, lengths),
                "counters": counts,
            }
        )
    return {"group": group["group"], "splits": splits}


class ExportActor:
    """One format instance per actor (a packing actor holds its GPU); groups stream through."""

    def __init__(self, fmt: str, settings: dict, device: str):
        self.format = FORMATS[fmt](settings, device)

    def __call__(self, groups: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([export_group(self.format, g) for g in groups.to_pylist()], schema=EXPORT_DONE)


def export_groups(groups: list[dict], fmt: str, settings: dict, device: str) -> Iterator[dict]:
    """Export EXPORT_GROUP rows on Ray in format `fmt`, one actor per CPU (or per GPU where the
    format packs on one; `device` is pack.device: auto, cpu or cuda); yields each group's
    EXPORT_DONE row as it finishes."""
    import ray

    if not groups:
        return
    device = _device(device, FORMATS[fmt])
    workers = int(ray.cluster_resources().get("GPU" if device == "cuda" else "CPU", 1))
    # One block per group, so that groups spread over the actors one at a time.
    ds = ray.data.from_arrow([pa.Table.from_pylist([g], schema=EXPORT_GROUP) for g in groups])
    ds = ds.map_batches(
        ExportActor,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_kwargs={"fmt": fmt, "settings": settings, "device": device},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(workers, len(groups)))),
        **({"num_gpus": 1} if device == "cuda" else {"num_cpus": 1}),
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield from batch.to_pylist()


def _device(setting: str, fmt: type[ExportFormat]) -> str:
    """Where a format runs: the GPU path when the cluster has a GPU (auto) or it is asked for."""
    import ray

    if not fmt.uses_device:
        return "cpu"
    gpus = ray.cluster_resources().get("GPU", 0)
    if setting == "cuda" and not gpus:
        raise ConfigError("pack.device is cuda but the Ray cluster has no GPU")
    if setting == "auto" and gpus and importlib.util.find_spec("torch") is None:
        log.warning("export: the cluster has a GPU but torch is not installed (the gpu extra); packing on the CPU")
        return "cpu"
    return "cuda" if setting == "cuda" or (setting == "auto" and gpus) else "cpu"
