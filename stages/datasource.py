"""Our own Parquet and Arrow IPC outputs read back as a Ray dataset, for the stages that take up
what an earlier stage wrote."""

from __future__ import annotations

import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from slimpipe.io.fs import read_arrow_stream, resolve


class OwnFiles(Datasource):
    """Our own Parquet or Arrow IPC stream outputs as a Ray dataset, one read task per group of
    files. The file list is known, so none of the listing and sampling that ray.data.read_parquet
    does up front (it takes seconds for a few hundred files)."""

    def __init__(
        self,
        uri: str,
        paths: list[str],
        columns: list[str] | None = None,
        files_per_task: int = 8,
        fmt: str = "parquet",
    ):
        self.uri = uri
        self.columns = columns
        self.fmt = fmt
        self.groups = [paths[i : i + files_per_task] for i in range(0, len(paths), files_per_task)]

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        return [
            ReadTask(
                _file_reader(self.uri, group, self.columns, self.fmt),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=tuple(group), exec_stats=None),
            )
            for group in self.groups
        ]


def _file_reader(uri: str, paths: list[str], columns: list[str] | None, fmt: str):
    def read():
        fs, _ = resolve(uri)
        for path in paths:
            if fmt == "arrow":
                yield read_arrow_stream(fs, path, columns)
            else:
                yield pq.read_table(path, filesystem=fs, columns=columns)

    return read


def read_own_files(
    uri: str, paths: list[str], columns: list[str] | None = None, fmt: str = "parquet", files_per_task: int = 8
):
    import ray.data

    source = OwnFiles(uri, paths, columns, files_per_task, fmt)
    return ray.data.read_datasource(source, override_num_blocks=len(source.groups))
