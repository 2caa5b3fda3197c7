"""Feed a packed Arrow export to a training loop.

`PackedLoader` is for a torch loop or a Ray Train worker alike. Its rank and world size are the
ones given, else those of torch.distributed, the Ray Train context and the environment
(RANK/WORLD_SIZE, as torchrun sets them), which must agree; an incomplete or contradictory
setting is a `RankError`, never a silent single process. Each rank takes its own slice
of a seeded per-epoch permutation of the sequences (every rank the same number, so collective
steps stay in step), batches are collated on the device, and `state_dict()` /
`load_state_dict()` resume exactly at the next batch. The export's files are memory-mapped:
only the rows a batch takes are read.

For Ray Train's own data path, `packed_dataset()` is the export as a Ray dataset to hand to
the trainer (`datasets={"train": ...}`), and `iter_shard_batches()` collates the batches of
`ray.train.get_dataset_shard("train")` the same way.

A batch: input_ids, position_ids, labels as int64 [batch, seq_len]; cu_seqlens as int32, the
boundaries of every piece of every row in the flattened batch (what varlen attention kernels
take); max_seqlen the longest piece.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from slimpipe.io.fs import join, read_arrow_stream, read_json, resolve
from slimpipe.stages.datasource import read_own_files

BATCH_COLUMNS = ["input_ids", "position_ids", "labels", "cu_seqlens"]


def _export_files(export_dir: str, split: str) -> tuple[dict, list[str]]:
    """The manifest, and the split's files as paths inside the export's filesystem."""
    fs, path = resolve(export_dir)
    manifest = read_json(fs, join(path, "manifest.json"))
    if manifest["format"] != "arrow":
        raise ValueError(
            f"{export_dir} is a {manifest['format']} export; the loader reads packed Arrow "
            "(slimpipe export --format arrow)"
        )
    return manifest, [join(path, f) for f in manifest["splits"][split]["files"]]  # paths inside fs


def collate(rows: pa.Table, device="cpu") -> dict:
    """Packed rows -> a batch of torch tensors on `device`; the flattening of cu_seqlens runs
    there too."""
    import torch

    def column(name) -> pa.Array:
        return rows[name].combine_chunks()

    def matrix(name):
        col = column(name)
        return torch.from_numpy(col.flatten().to_numpy().astype(np.int64).reshape(len(col), -1))

    out = {name: matrix(name).to(device, non_blocking=True) for name in ("input_ids", "position_ids", "labels")}
    n, seq_len = out["input_ids"].shape
    cu = column("cu_seqlens")
    values = torch.as_tensor(cu.flatten().to_numpy().astype(np.int64), device=device)
    row = torch.repeat_interleave(
        torch.arange(n, device=device), torch.as_tensor(np.diff(cu.offsets.to_numpy()), device=device)
    )
    flat = torch.unique_consecutive(values + row * seq_len)  # a row's end is the next row's start
    out["cu_seqlens"] = flat.to(torch.int32)
    out["max_seqlen"] = int((flat[1:] - flat[:-1]).max()) if len(flat) > 1 else 0
    return out


class PackedLoader:
    """Batches of one split of a packed Arrow export for one rank, resumable."""

    def __init__(
        self,
        export_dir: str,
        split: str = "train",
        batch_size: int = 8,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        device="cpu",
        drop_last: bool = True,
    ):
        _require_torch()
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world_size}")
        self.manifest, files = _export_files(export_dir, split)
        fs, _ = resolve(export_dir)
        tables = [read_arrow_stream(fs, f, BATCH_COLUMNS) for f in files]
        self.table = pa.concat_tables(tables) if tables else None
        self.batch_size, self.seed, self.device, self.drop_last = batch_size, seed, device, drop_last
        self.sequences = self.table.num_rows if self.table is not None else 0
        self.epoch = 0
        self.batch = 0  # the next batch of this epoch

    def _my_rows(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.sequences)
        per_rank = self.sequences // self.world_size
        return perm[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        per_rank = self.sequences // self.world_size
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self):
        """The rest of the current epoch; the next iteration starts the next epoch."""
        rows = self._my_rows(self.epoch)
        while self.batch < len(self):
            take = rows[self.batch * self.batch_size : (self.batch + 1) * self.batch_size]
            self.batch += 1  # counted before it is handed out: a state saved now resumes after it
            yield collate(self.table.take(pa.array(take)), self.device)
        self.epoch += 1
        self.batch = 0

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "sequences": self.sequences,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "world_size", "batch_size", "sequences"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"the saved loader state has {key}={state[key]}, this loader "
                    f"{getattr(self, key)}; it cannot resume from it"
                )
        self.epoch, self.batch = state["epoch"], state["batch"]


class RankError(ValueError):
    """The loader cannot tell its rank: a distributed setting is incomplete or two disagree."""


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "the loader needs torch: pip install 'slimpipe[gpu]' (or 'slimpipe[train]' for Ray Train)"
        ) from e


def _from_torch() -> tuple[int, int] | None:
    try:
        import torch.distributed as dist
    except ImportError:  # no torch, or a build without distributed
        return None
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _from_ray_train() -> tuple[int, int] | None:
    try:
        import ray.train
    except ImportError:  # ray without its train extra
        return None
    try:
        ctx = ray.train.get_context()
    except RuntimeError:  # not inside a Ray Train worker
        return None
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    return None if rank is None or world is None else (rank, world)


def _from_env() -> tuple[int, int] | None:
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None and world is None:
        return None
    if rank is None or world is None:
        missing, there = ("RANK", f"WORLD_SIZE={world}") if rank is None else ("WORLD_SIZE", f"RANK={rank}")
        raise RankError(f"{there} is set but {missing} is not; set both (torchrun does) or pass rank= and world_size=")
    try:
        return int(rank), int(world)
    except ValueError:
        raise RankError(f"RANK={rank!r} and WORLD_SIZE={world!r} must be integers") from None


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed, the Ray Train context and the environment
    (RANK/WORLD_SIZE), which must agree where more than one is set; a single process only when
    none of them is. Explicit values win (a data-parallel rank may differ from the global one)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    found = [
        (name, got)
        for name, probe in (
            ("torch.distributed", _from_torch),
            ("the Ray Train context", _from_ray_train),
            ("the environment (RANK/WORLD_SIZE)", _from_env),
        )
        if (got := probe()) is not None
    ]
    for name, got in found[1:]:
        if got != found[0][1]:
            (first, a), b = found[0], got
            raise RankError(
                f"{first} says rank {a[0]} of {a[1]} but {name} says rank {b[0]} of {b[1]}; "
                "pass rank= and world_size= to choose"
            )
    if found:
        detected_rank, detected_world = found[0][1]
        if rank is not None and world_size is None:
            return rank, detected_world
        if world_size is not None and world_size != detected_world:
            raise RankError(
                f"world_size={world_size} was given but {found[0][0]} says {detected_world}; pass rank= too"
            )
        return detected_rank, detected_world
    if rank is None and world_size is None:
        return 0, 1
    given = f"rank={rank}" if rank is not None else f"world_size={world_size}"
    raise RankError(f"{given} was given alone and no distributed setting supplies the other; pass both")


def packed_dataset(export_dir: str, split: str = "train"):
    """The split as a Ray dataset (rows in file order), for a Ray Train trainer's `datasets`."""
    _, files = _export_files(export_dir, split)
    return read_own_files(export_dir, files, BATCH_COLUMNS, fmt="arrow", files_per_task=1)


def iter_shard_batches(shard, batch_size: int, device="cpu", skip_batches: int = 0):
    """Collated batches of a Ray Train dataset shard (`ray.train.get_dataset_shard`), after
    skipping `skip_batches` (a resumed worker's progress; exact when the dataset's order is
    deterministic, i.e. DataContext.execution_options.preserve_order)."""
    _require_torch()
    return _shard_batches(shard, batch_size, device, skip_batches)


def _shard_batches(shard, batch_size: int, device, skip_batches: int):
    for i, batch in enumerate(shard.iter_batches(batch_size=batch_size, batch_format="pyarrow", drop_last=True)):
        if i >= skip_batches:
            yield collate(batch, device)
