"""Input discovery: the input arguments (files, folders, globs; local or object storage) walked to
the files to read, each real file once, and every file probed (size, mtime, the hash of its ends
that tells a resumed run it changed, and how its records are laid out). Paths that hold nothing to
read are passed over with a reason; one that cannot be read is an error, or passed over, as
input.on_io_error says."""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import replace

import pyarrow.fs as pafs

from slimpipe.errors import ConfigError
from slimpipe.io.fs import resolve
from slimpipe.io.inputs import (
    FORMATS,
    Inputs,
    SkippedInput,
    file_format,
)
from slimpipe.io.probe import Found, InputError, fail_if_configured, file_type, one_line, probe_all, shown, uri_of

_LOCAL = pafs.LocalFileSystem()


def discover(paths: list[str], input_cfg: dict, output: str | None = None) -> Inputs:
    """Expand files, folders (recursively, following links) and globs, and probe every file found.
    A path that matches nothing, or (with on_io_error fail) one that cannot be read, is an error
    raised here, before any cluster starts. A local `output` folder (the run directory) found among
    the inputs is not walked: a run never reads its own outputs."""
    if not paths:
        raise ConfigError("no input: give --input PATH or input.paths in the config")
    walk = _Walk(input_cfg, os.path.realpath(output) if output and "://" not in output else None)
    bases = [walk.expand(arg) for arg in paths]
    found = _unique(_rebase(walk.found, bases), walk.skipped)
    files = probe_all(found, input_cfg, walk.skipped)
    skipped = sorted({(s.uri, s.reason): s for s in walk.skipped}.values(), key=lambda s: (s.uri, s.reason))
    if not files and not skipped:  # found input files that are all empty, say, are no error
        names = ", ".join(
            suffix + ("[.gz|.zst]" if spec.compressible else "")
            for spec in FORMATS.values()
            for suffix in spec.suffixes
        )
        raise ConfigError(f"no input files ({names}) under {', '.join(paths)}")
    return Inputs(files, skipped)


class _Walk:
    """The walks of all input arguments: the files they find and the paths they pass over."""

    def __init__(self, input_cfg: dict, output: str | None = None):
        self.cfg = input_cfg
        self.output = output  # the real path of a folder not to walk
        self.fmt = input_cfg.get("format", "auto")
        self.fixed_source = input_cfg.get("source")
        self.found: list[Found] = []
        self.skipped: list[SkippedInput] = []

    def expand(self, arg: str) -> str:
        """Walk one input argument; returns the root its files' rels are relative to."""
        fs, path = resolve(arg)
        if _has_glob(arg):
            if not isinstance(fs, pafs.LocalFileSystem):
                raise ConfigError(f"globs are supported on local paths only: {arg}")
            # Ids derive from paths relative to the glob's fixed prefix, so they stay unique.
            parts = path.split("/")
            fixed = next(i for i, p in enumerate(parts) if _has_glob(p))
            prefix = "/".join(parts[:fixed]) or "/"
            if not self.glob(prefix, parts[fixed:], prefix, set()):
                raise ConfigError(f"input glob {arg} matches no file")
            return prefix
        if not isinstance(fs, pafs.LocalFileSystem):
            return self.expand_remote(fs, path, arg)
        if not os.path.lexists(path):
            raise ConfigError(f"input path does not exist: {arg}")
        st = _stat(path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            root = path.rstrip("/") or "/"
            self.walk_dir(root, root)
            return root
        kind = _named_kind(path, self.fmt)
        self.local_file(path, st, os.path.dirname(path), os.path.basename(path), self.source_of(path), kind)
        return os.path.dirname(path)

    def source_of(self, path: str) -> str:
        return self.fixed_source or _parent_name(path)

    # --- local ---------------------------------------------------------------------------------

    def walk_dir(self, folder: str, base: str) -> None:
        """Every input file below a local folder, following links. A folder met a second time (a link
        loop, or two links to one folder) is walked once; the repeat is passed over as same_file."""
        seen: dict[tuple[int, int], str] = {}
        st = _stat(folder)
        if st is not None:
            seen[(st.st_dev, st.st_ino)] = folder

        def visit(current: str) -> None:
            for name in self.listdir(current):
                path = os.path.join(current, name)
                st = _stat(path)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if not _decodable(path):
                        self.skip(path, "undecodable_name", "a folder")
                    elif self.output and os.path.realpath(path) == self.output:
                        continue
                    elif key in seen:
                        self.skip(path, "same_file", seen[key])
                    else:
                        seen[key] = path
                        visit(path)
                elif (kind := file_format(name, self.fmt)) is not None:
                    rel = _rel(path, base)
                    under = _rel(path, folder).split("/", 1)
                    source = self.fixed_source or (under[0] if len(under) > 1 else os.path.basename(folder))
                    self.local_file(path, st, base, rel, source, kind)

        visit(folder)

    def glob(self, path: str, parts: list[str], prefix: str, seen: set) -> int:
        """Paths matching the pattern components `parts` below `path` (glob's rules: a wildcard does
        not match a leading dot, ** spans folders); each (folder, rest of the pattern) is visited once,
        so a link loop ends. Returns how many paths matched, input files or not."""
        if not parts or parts == ["**"]:  # a trailing ** matches the folder and all below it
            return self.glob_match(path, prefix)
        st = _stat(path)
        if st is None or not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino, len(parts)) in seen:
            return 0
        seen.add((st.st_dev, st.st_ino, len(parts)))
        head, rest = parts[0], parts[1:]
        if head == "**":
            subs = [os.path.join(path, n) for n in self.listdir(path) if not n.startswith(".")]
            return self.glob(path, rest, prefix, seen) + sum(self.glob(s, parts, prefix, seen) for s in subs)
        if not _has_glob(head):
            child = os.path.join(path, head)
            return self.glob(child, rest, prefix, seen) if os.path.lexists(child) else 0
        names = [n for n in self.listdir(path) if _wild_match(n, head)]
        return sum(self.glob(os.path.join(path, n), rest, prefix, seen) for n in names)

    def glob_match(self, path: str, prefix: str) -> int:
        st = _stat(path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            if _decodable(path):
                self.walk_dir(path.rstrip("/") or "/", prefix)
            else:
                self.skip(path, "undecodable_name", "a folder")
        elif (kind := file_format(path, self.fmt)) is not None:
            self.local_file(path, st, prefix, _rel(path, prefix), self.source_of(path), kind)
        return 1

    def listdir(self, folder: str) -> list[str]:
        try:
            return sorted(os.listdir(folder))
        except OSError as exc:  # never nothing: an error, or a folder passed over that stats name
            fail_if_configured(self.cfg, "cannot read input folder", folder, exc)
            self.skip(folder, "unreadable_folder", one_line(exc))
            return []

    def local_file(
        self, path: str, st: os.stat_result | None, base: str, rel: str, source: str, kind: tuple[str, str | None]
    ) -> None:
        """A local path of an input format, by what stat (following links) says of it; a failed stat
        (a broken link, a folder that can be listed but not entered) leaves it to the probe."""
        if not _decodable(path):
            self.skip(path, "undecodable_name")
        elif st is not None and not stat.S_ISREG(st.st_mode):
            self.skip(path, "special_file", file_type(st.st_mode))  # never opened: a FIFO would block
        elif st is not None and st.st_size == 0:
            self.skip(path, "empty_file")
        else:
            real = (st.st_dev, st.st_ino) if st is not None else None
            self.found.append(Found(_LOCAL, path, base, rel, source, kind, real))

    # --- object stores -------------------------------------------------------------------------

    def expand_remote(self, fs: pafs.FileSystem, path: str, arg: str) -> str:
        try:
            info = fs.get_file_info(path)
        except OSError as exc:
            raise InputError(f"cannot inspect input {arg}: {one_line(exc)}") from exc
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(f"input path does not exist: {arg}")
        if info.type != pafs.FileType.Directory:
            base = uri_of(fs, path.rsplit("/", 1)[0])
            self.remote_file(fs, info, base, info.base_name, self.source_of(path), _named_kind(path, self.fmt))
            return base
        root = path.rstrip("/")
        try:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        except OSError as exc:
            fail_if_configured(self.cfg, "cannot list input folder", uri_of(fs, root), exc)
            self.skip(uri_of(fs, root), "unreadable_folder", one_line(exc))
            infos = []
        for info in sorted(infos, key=lambda i: i.path):
            if info.type == pafs.FileType.File and (kind := file_format(info.path, self.fmt)) is not None:
                rel = info.path[len(root) + 1 :]
                first = rel.split("/", 1)
                source = self.fixed_source or (first[0] if len(first) > 1 else os.path.basename(root))
                self.remote_file(fs, info, uri_of(fs, root), rel, source, kind)
        return uri_of(fs, root)

    def remote_file(self, fs, info: pafs.FileInfo, base: str, rel: str, source: str, kind) -> None:
        if info.size == 0:
            self.skip(uri_of(fs, info.path), "empty_file")
        else:
            self.found.append(Found(fs, info.path, base, rel, source, kind))

    def skip(self, path: str, reason: str, detail: str = "") -> None:
        self.skipped.append(SkippedInput(shown(path), reason, detail))


def _named_kind(path: str, fmt: str) -> tuple[str, str | None]:
    """A file named explicitly is read even with an unusual name: as JSONL unless configured."""
    return file_format(path, fmt) or (fmt if fmt != "auto" else "jsonl", None)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _rel(path: str, base: str) -> str:
    """path below base (which it starts with), as a relative path."""
    return path[len(base.rstrip("/")) + 1 :]


def _decodable(path: str) -> bool:
    """os.listdir hands a name that is not UTF-8 back with surrogate escapes: such a name cannot be
    written in ids, rows or stats."""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _wild_match(name: str, pattern: str) -> bool:
    return (not name.startswith(".") or pattern.startswith(".")) and fnmatch.fnmatchcase(name, pattern)


def _parent_name(path: str) -> str:
    return os.path.basename(os.path.dirname(path.rstrip("/"))) or "default"


def _rebase(found: list[Found], bases: list[str]) -> list[Found]:
    """With several input roots, rels are taken from the roots' common parent, so one layout under two
    roots (/a/data/x.jsonl, /b/data/x.jsonl) gives distinct ids; one root keeps its plain rels."""
    roots = {b.rstrip("/") for b in bases}
    if len(roots) < 2:
        return found
    split = {r: r.split("/") for r in roots}
    common = os.path.commonprefix(list(split.values()))
    out = []
    for f in found:
        above = [p for p in split[f.base.rstrip("/")][len(common) :] if p]
        out.append(replace(f, rel="/".join([*above, f.rel])))
    return out


def _unique(found: list[Found], skipped: list[SkippedInput]) -> list[Found]:
    """One Found per real file, in uri order: a path given twice is one, and a second path to the
    same local file (a link, a folder given twice under two names) is passed over, naming the first."""
    by_uri: dict[str, Found] = {}
    for f in sorted(found, key=lambda f: f.uri):  # stable: the first argument's rel and source win
        by_uri.setdefault(f.uri, f)
    first_of: dict[tuple[int, int], str] = {}
    out = []
    for f in by_uri.values():
        if f.real is not None and f.real in first_of:
            skipped.append(SkippedInput(shown(f.uri), "same_file", first_of[f.real]))
            continue
        if f.real is not None:
            first_of[f.real] = shown(f.uri)
        out.append(f)
    return out


# --- probing ---------------------------------------------------------------------------------------
