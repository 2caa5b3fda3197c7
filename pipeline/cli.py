"""The `slimpipe` command."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

from slimpipe import __version__
from slimpipe.config import preset_names, resolve
from slimpipe.errors import (
    ConfigError,
    ConservationError,
    InputChanged,
    InputUnreadable,
    RunConflict,
)
from slimpipe.stages.export import FORMATS

SAMPLE_DIR = Path(__file__).with_name("sample")

EXIT_CODES = """\
exit codes:
  0    done, or already complete (nothing redone)
  1    an unexpected error (a bug): its traceback is printed
  2    a config or usage error, or a run directory that cannot be used: another config or
       input, in use by another slimpipe process (RUN/.lock), a non-empty folder holding no run
  3    the conservation check failed: the outputs cannot be trusted
  4    storage refused: no space left, permission denied, read-only file system
  5    an input could not be read, or changed while the run read it
  130  stopped by Ctrl-C or SIGTERM; the same command resumes

An expected failure is one line on stderr; -v/--verbose adds its traceback."""

STOPPED = "stopped; run the same command to resume"


def _cmd_run(args) -> int:
    from slimpipe.rundir import AlreadyComplete
    from slimpipe.runner import run
    from slimpipe.stats import summary_text

    inputs = args.input or ([str(SAMPLE_DIR)] if not args.config else None)
    config = resolve(args.preset, args.config, args.set, inputs, args.output, args.address)
    if not config["input"]["paths"]:
        config["input"]["paths"] = [str(SAMPLE_DIR)]
    stats = run(config, force=args.force)
    if isinstance(stats, AlreadyComplete):
        print(f"{config['output']['path']}: already complete (same config and input); nothing was redone\n")
    print(summary_text(stats))
    print(f"\nrun directory: {config['output']['path']}")
    return 0


def _load_stats(run_dir: str) -> dict:
    from slimpipe.io.fs import read_json
    from slimpipe.io.fs import resolve as resolve_path

    fs, path = resolve_path(run_dir)
    try:
        return read_json(fs, f"{path.rstrip('/')}/stats.json")
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} has no stats.json: is it a finished slimpipe run?") from None


def _cmd_stats(args) -> int:
    from slimpipe.stats import report_html, summary_text

    stats = _load_stats(args.run)
    if args.json:
        print(json.dumps(stats, indent=2))
    elif args.html:
        print(report_html(stats))
    else:
        print(summary_text(stats))
    return 0


def _cmd_dups(args) -> int:
    from slimpipe.dups import show_cluster, show_sample

    text = show_cluster(args.run, args.cluster) if args.cluster else show_sample(args.run, args.sample)
    print(text)
    return 0


def _cmd_train_quality(args) -> int:
    from slimpipe.quality import train_quality

    result = train_quality(
        args.positive,
        args.negative,
        args.output,
        text_field=args.text_field,
        holdout=args.holdout,
        epoch=args.epoch,
        lr=args.lr,
        word_ngrams=args.word_ngrams,
        dim=args.dim,
        seed=args.seed,
    )
    print(json.dumps(result, indent=2))
    return 0


def _later_step(fn, *args, **kwargs) -> int:
    """Run a step after `slimpipe run` and print its result as JSON; its known failures are
    messages, not tracebacks (main)."""
    from slimpipe.rundir import AlreadyComplete

    result = fn(*args, **kwargs)
    if isinstance(result, AlreadyComplete):
        print("slimpipe: already complete (same settings); nothing was redone", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def _with_flags(args, keys: dict[str, str]) -> list[str]:
    """--set overrides plus the flags given that stand for config keys (flag name -> key)."""
    return [
        *args.set,
        *(f"{key}={getattr(args, flag)}" for flag, key in keys.items() if getattr(args, flag) is not None),
    ]


def _cmd_train_tokenizer(args) -> int:
    from slimpipe.tokens import train_tokenizer

    sets = _with_flags(args, {"vocab_size": "tokenizer.vocab_size", "model_type": "tokenizer.model_type"})
    return _later_step(train_tokenizer, args.run, sets)


def _cmd_tokenize(args) -> int:
    from slimpipe.tokens import tokenize

    return _later_step(tokenize, args.run, args.model, args.set, args.address)


def _cmd_export(args) -> int:
    from slimpipe.export import export

    sets = _with_flags(args, {"seq_len": "pack.seq_len", "method": "pack.method", "seed": "pack.seed"})
    return _later_step(export, args.run, args.format, args.out, sets, args.address)


def build_parser() -> argparse.ArgumentParser:
    # -v works before or after the command: each parser has it, none overwrites another's value
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="print the traceback of a failure"
    )
    p = argparse.ArgumentParser(
        prog="slimpipe",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"slimpipe {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, parents=[common], epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
        )

    r = add_parser("run", help="run (or resume) the pipeline; with no arguments, the bundled sample")
    r.add_argument("--config", help="YAML config file")
    r.add_argument("--preset", help=f"named preset ({', '.join(preset_names())}); default: web")
    r.add_argument("--input", nargs="+", metavar="PATH", help="files, folders (recursive) or globs")
    r.add_argument("--output", help="run directory (default runs/sample)")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set filters.length.min_chars=100",
    )
    r.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    r.add_argument(
        "--force",
        action="store_true",
        help="run into a non-empty folder that holds no run: slimpipe's own entries there (documents/, "
        "rejected/, duplicates/, clusters/, tokenizer/, tokens/, export/, _work/, stats.json, report.html) "
        "are deleted first; every other file is left as it is",
    )
    r.set_defaults(func=_cmd_run)

    s = add_parser("stats", help="print a run's statistics")
    s.add_argument("run")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--html", action="store_true")
    s.set_defaults(func=_cmd_stats)

    d = add_parser("dups", help="show duplicate clusters of a run")
    d.add_argument("run")
    d.add_argument("--sample", type=int, default=5, metavar="N", help="show the N largest clusters of each kind")
    d.add_argument("--cluster", metavar="ID", help="show one cluster by id")
    d.set_defaults(func=_cmd_dups)

    q = add_parser("train-quality", help="train a fastText quality classifier for filters.quality")
    q.add_argument("--positive", nargs="+", required=True, metavar="PATH", help="good examples (JSONL, Parquet)")
    q.add_argument("--negative", nargs="+", required=True, metavar="PATH", help="bad examples")
    q.add_argument("--output", required=True, help="the model file to write (.bin)")
    q.add_argument("--text-field", default="text")
    q.add_argument("--holdout", type=float, default=0.1, help="share of examples held out to score the model")
    q.add_argument("--epoch", type=int, default=5)
    q.add_argument("--lr", type=float, default=0.5)
    q.add_argument("--word-ngrams", type=int, default=2)
    q.add_argument("--dim", type=int, default=64)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_train_quality)

    set_help = "override a config key, e.g. --set tokenize.bos=false"
    t = add_parser("train-tokenizer", help="train a SentencePiece model on a sample of RUN/documents")
    t.add_argument("run")
    t.add_argument("--vocab-size", type=int, metavar="N")
    t.add_argument("--model-type", choices=["unigram", "bpe"])
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    t.set_defaults(func=_cmd_train_tokenizer)

    k = add_parser("tokenize", help="tokenize RUN/documents into RUN/tokens/*.arrow")
    k.add_argument("run")
    k.add_argument(
        "--model", metavar="FILE", help="a SentencePiece .model (default: the one train-tokenizer stored in RUN)"
    )
    k.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    k.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    k.set_defaults(func=_cmd_tokenize)

    e = add_parser("export", help="export RUN/tokens as training shards")
    e.add_argument("run")
    e.add_argument("--format", required=True, choices=list(FORMATS))
    e.add_argument("--out", metavar="DIR", help="an empty folder (default: RUN/export/FORMAT)")
    e.add_argument("--seq-len", type=int, metavar="N", help="sequence length of packed Arrow (pack.seq_len)")
    e.add_argument("--method", choices=["bfd", "concat"], help="packing method (pack.method)")
    e.add_argument("--seed", type=int, help="document and sequence order (pack.seed)")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    e.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    e.set_defaults(func=_cmd_export)
    return p


# --- failures and signals ----------------------------------------------------------------------

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
REFUSED = {errno.EACCES, errno.EPERM, errno.EROFS}
# what a traceback's text says of our exceptions or an errno, for a Ray wrapper that kept only text
_OURS_IN_TEXT = re.compile(r"^(?:slimpipe\.errors\.)?(InputUnreadable|InputChanged): (.+)$", re.M)
_ERRNO_IN_TEXT = re.compile(r"^(?:\w+\.)*\w*Error: \[Errno (\d+)\] (.+)$", re.M)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """exc and what caused it, outermost first. A Ray wrapper (RayTaskError and its dual classes,
    whose text is the remote traceback) gives way to the exception the task raised (`.cause`);
    Ray Data may wrap once more, hence the walk down `__cause__` too."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "cause", None)
        if isinstance(inner, BaseException) and inner is not e:
            e = inner
            continue
        yield e
        e = e.__cause__


# what Ray Data appends to the message of an exception it gave up retrying
_RAY_RETRY_NOTE = re.compile(r"\nFailed to .*? after \d+/\d+ attempts \(total backoff.*", re.S)


def _one_line(exc: BaseException | str) -> str:
    text = _RAY_RETRY_NOTE.sub("", str(exc))
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip()) or type(exc).__name__


def _os_error_line(e: OSError) -> str:
    """[Errno N] what, and the file when it is one (Ray may put its own note where it belongs)."""
    text = f"[Errno {e.errno}] {e.strerror or ''}".strip()
    name = e.filename
    if isinstance(name, str | bytes | os.PathLike) and "\n" not in str(name):
        text += f": {os.fsdecode(name)}"
    return _one_line(text)


def _storage(code: int | None, text: str) -> tuple[int, str] | None:
    if code in NO_SPACE:
        return 4, f"no space left: {text}"
    if code == errno.EROFS:
        return 4, f"read-only file system: {text}"
    if code in REFUSED:
        return 4, f"permission denied: {text}"
    return None


def failure(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, the line to print) for an expected failure; None for a bug."""
    from slimpipe.stages.tokenize import TokenizerError

    if isinstance(exc, KeyboardInterrupt):
        return 130, STOPPED
    for e in _chain(exc):
        if isinstance(e, ConfigError | RunConflict | TokenizerError):
            return 2, f"error: {_one_line(e)}"
        if isinstance(e, ConservationError):
            return 3, f"conservation check failed: {_one_line(e)}"
        if isinstance(e, InputChanged):
            return 5, f"input changed during the run: {_one_line(e)}"
        if isinstance(e, InputUnreadable):
            return 5, f"input unreadable: {_one_line(e)}"
        if isinstance(e, OSError) and (found := _storage(e.errno, _os_error_line(e))):
            return found
    for e in _chain(exc):  # a wrapper that kept only the remote traceback's text
        if not type(e).__module__.startswith("ray"):
            continue
        text = str(e)
        if ours := _OURS_IN_TEXT.findall(text):
            kind, message = ours[-1]
            return 5, f"{'input changed during the run' if kind == 'InputChanged' else 'input unreadable'}: {message}"
        for number, message in reversed(_ERRNO_IN_TEXT.findall(text)):
            if found := _storage(int(number), f"[Errno {number}] {message}"):
                return found
    return None


def _stop(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class _QuietRayData(logging.Filter):
    """Ray Data logs a failed task's traceback itself, twice; without -v the CLI prints one line
    instead (an unexpected error still ends in Python's traceback, which holds the remote one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "ray.data.exceptions":
            return record.levelno < logging.ERROR
        record.exc_info = None
        record.exc_text = None
        return True


_QUIET = _QuietRayData()
QUIETED = ("ray.data.exceptions", "ray.data._internal.execution.streaming_executor_state")


def main(argv: list[str] | None = None) -> int:
    """The command. With argv None this process is the command: once it has a status, a SIGTERM
    that comes while Python tears down (Ray's exit hooks take a moment) ends it with that status;
    a caller that passes argv gets its own SIGTERM handler back."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    for name in QUIETED:
        (logging.getLogger(name).removeFilter if verbose else logging.getLogger(name).addFilter)(_QUIET)
    # SIGTERM stops a command as Ctrl-C does: the run records `interrupted`, gives back its
    # lock and shuts down the Ray it started (runner.init_ray keeps this handler over Ray's)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    status = 1
    try:
        status = _status_of(args, verbose)
        return status
    finally:
        if main_thread and argv is None:
            signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(status))
        elif main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _status_of(args, verbose: bool) -> int:
    """Run the command; an expected failure is one line and its exit status."""
    try:
        return args.func(args)
    except (KeyboardInterrupt, Exception) as exc:
        found = failure(exc)
        if found is None:
            raise
        if verbose:
            traceback.print_exception(exc)
        print(f"slimpipe: {found[1]}", file=sys.stderr)
        return found[0]


if __name__ == "__main__":
    sys.exit(main())
