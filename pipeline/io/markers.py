"""Completion records (Ray-free): one small JSON file per finished unit of work, the commit that
readers and resumed steps honour (on object storage, where there is no rename of a set of files)."""

from __future__ import annotations

import pyarrow.fs as pafs

from slimpipe.io.fs import join, list_files, read_json_many, write_json_atomic


class Markers:
    """Completion records in one folder, NAME.json each: a unit with a record is done, and a
    resumed step skips it. The driver writes them as units finish, so a killed step keeps them."""

    def __init__(self, fs: pafs.FileSystem, folder: str):
        self.fs, self.folder = fs, folder

    def done(self) -> set[str]:
        return {
            i.base_name.removesuffix(".json") for i in list_files(self.fs, self.folder) if i.base_name.endswith(".json")
        }

    def write(self, name: str, record: dict) -> None:
        write_json_atomic(self.fs, join(self.folder, f"{name}.json"), record)

    def records(self) -> dict[str, dict]:
        """Every record here, by name (read in bulk)."""
        names = sorted(self.done())
        return dict(zip(names, self.read(names)))

    def read(self, names: list[str]) -> list[dict]:
        """The records of `names`, in order (read in bulk)."""
        return read_json_many(self.fs, [join(self.folder, f"{name}.json") for name in names])
