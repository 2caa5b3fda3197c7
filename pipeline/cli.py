"""The `slimpipe` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from slimpipe import __version__
from slimpipe.config import preset_names, resolve
from slimpipe.errors import ConfigError
from slimpipe.stages.export import FORMATS

SAMPLE_DIR = Path(__file__).with_name("sample")


def _cmd_run(args) -> int:
    from slimpipe.errors import ConservationError, RunConflict
    from slimpipe.runner import run
    from slimpipe.stats import summary_text

    inputs = args.input or ([str(SAMPLE_DIR)] if not args.config else None)
    try:
        config = resolve(args.preset, args.config, args.set, inputs, args.output, args.address)
        if not config["input"]["paths"]:
            config["input"]["paths"] = [str(SAMPLE_DIR)]
        stats = run(config)
    except (ConfigError, RunConflict) as exc:
        print(f"slimpipe: error: {exc}", file=sys.stderr)
        return 2
    except ConservationError as exc:
        print(f"slimpipe: conservation check failed: {exc}", file=sys.stderr)
        return 3
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

    try:
        stats = _load_stats(args.run)
    except ConfigError as exc:
        print(f"slimpipe: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(stats, indent=2))
    elif args.html:
        print(report_html(stats))
    else:
        print(summary_text(stats))
    return 0


def _cmd_dups(args) -> int:
    from slimpipe.dups import show_cluster, show_sample

    try:
        text = show_cluster(args.run, args.cluster) if args.cluster else show_sample(args.run, args.sample)
    except ConfigError as exc:
        print(f"slimpipe: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _cmd_train_quality(args) -> int:
    from slimpipe.quality import train_quality

    try:
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
    except ConfigError as exc:
        print(f"slimpipe: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def _later_step(fn, *args, **kwargs) -> int:
    """Run a step after `slimpipe run`; its known failures are messages, not tracebacks."""
    from slimpipe.errors import RunConflict
    from slimpipe.stages.tokenize import TokenizerError

    try:
        result = fn(*args, **kwargs)
    except (ConfigError, RunConflict, TokenizerError) as exc:
        print(f"slimpipe: error: {exc}", file=sys.stderr)
        return 2
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
    p = argparse.ArgumentParser(prog="slimpipe", description=__doc__)
    p.add_argument("--version", action="version", version=f"slimpipe {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run (or resume) the pipeline; with no arguments, the bundled sample")
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
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser("stats", help="print a run's statistics")
    s.add_argument("run")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--html", action="store_true")
    s.set_defaults(func=_cmd_stats)

    d = sub.add_parser("dups", help="show duplicate clusters of a run")
    d.add_argument("run")
    d.add_argument("--sample", type=int, default=5, metavar="N", help="show the N largest clusters of each kind")
    d.add_argument("--cluster", metavar="ID", help="show one cluster by id")
    d.set_defaults(func=_cmd_dups)

    q = sub.add_parser("train-quality", help="train a fastText quality classifier for filters.quality")
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
    t = sub.add_parser("train-tokenizer", help="train a SentencePiece model on a sample of RUN/documents")
    t.add_argument("run")
    t.add_argument("--vocab-size", type=int, metavar="N")
    t.add_argument("--model-type", choices=["unigram", "bpe"])
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    t.set_defaults(func=_cmd_train_tokenizer)

    k = sub.add_parser("tokenize", help="tokenize RUN/documents into RUN/tokens/*.arrow")
    k.add_argument("run")
    k.add_argument(
        "--model", metavar="FILE", help="a SentencePiece .model (default: the one train-tokenizer stored in RUN)"
    )
    k.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    k.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    k.set_defaults(func=_cmd_tokenize)

    e = sub.add_parser("export", help="export RUN/tokens as training shards")
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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
