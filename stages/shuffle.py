"""Shuffles with bounded input per task. Every stage that brings rows together by a key (exact
dedup, ids, near-dedup, decontamination) goes through Shuffle.group: the number of partitions
comes from the data (about `partition_rows` rows, and at most `partition_bytes` bytes, a task),
never from the number of CPUs, so a task's input stays the same size as the corpus grows; and
each task declares to Ray the memory its partition needs, so a node runs only as many at once as
it can hold."""

from __future__ import annotations

import math
from dataclasses import dataclass

import ray
from ray.data.context import ShuffleStrategy

# ray.shuffle -> Ray Data's strategy. sort: map tasks cut each block into one object per
# reducer (blocks x partitions objects); push_sort merges those as they come (fewer objects
# alive at once); hash: aggregator actors (they keep their CPUs until the dataset ends).
STRATEGIES = {
    "sort": ShuffleStrategy.SORT_SHUFFLE_PULL_BASED,
    "push_sort": ShuffleStrategy.SORT_SHUFFLE_PUSH_BASED,
    "hash": ShuffleStrategy.HASH_SHUFFLE,
}
HASH_AGGREGATOR_CPUS = 0.1
WORKING_SET = 4  # a partition's Arrow rows, their sorted copy, the function's arrays and its output
TASK_BASE_MEMORY = 256 << 20  # a worker process's own footprint (Python, pyarrow, numpy)


@dataclass(frozen=True)
class Shuffle:
    """How the stages shuffle (the config's `ray` section): rows and bytes per partition, the
    most memory one task may declare (no node could run a task asking for more) and Ray Data's
    strategy (a key of STRATEGIES)."""

    partition_rows: int
    partition_bytes: int
    max_task_memory: int
    strategy: str = "sort"

    @classmethod
    def for_cluster(cls, ray_cfg: dict) -> Shuffle:
        nodes = [n["Resources"].get("memory", 0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
        # half the smallest worker's memory: a task may always run, next to another
        max_task_memory = int(min(nodes, default=2 << 30) / 2)
        return cls(ray_cfg["partition_rows"], ray_cfg["partition_bytes"], max_task_memory, ray_cfg["shuffle"])

    def partitions(self, rows: int, row_bytes: int) -> int:
        """Partitions for `rows` rows of about `row_bytes` bytes each."""
        return max(1, math.ceil(rows / self.partition_rows), math.ceil(rows * row_bytes / self.partition_bytes))

    def task_memory(self, rows: int, row_bytes: int, partitions: int) -> int:
        return min(self.max_task_memory, TASK_BASE_MEMORY + WORKING_SET * row_bytes * math.ceil(rows / partitions))

    def group(
        self, ds: ray.data.Dataset, key: str, fn, rows: int, row_bytes: int, partitions: int | None = None, **kwargs
    ) -> ray.data.Dataset:
        """`fn(rows, **kwargs)` over each group of rows sharing `key` (all of a group in one call),
        the `rows` rows (about `row_bytes` each) in `partitions` tasks (default: from their size)."""
        partitions = partitions or self.partitions(rows, row_bytes)
        ds.context.shuffle_strategy = STRATEGIES[self.strategy]
        # hash: its aggregator actors keep what they ask for until the dataset ends; asking for
        # a whole CPU each, a chain of shuffles took every CPU of a small node and waited forever
        ds.context.hash_shuffle_operator_actor_num_cpus_override = HASH_AGGREGATOR_CPUS
        return ds.groupby(key, num_partitions=partitions).map_groups(
            fn,
            fn_kwargs=kwargs,
            batch_format="pyarrow",
            memory=self.task_memory(rows, row_bytes, partitions),
        )
