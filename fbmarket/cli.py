"""The `fbmarket` command line (SPEC §8). Each subcommand fills `Settings` and calls library code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fbmarket.config import Settings

Handler = Callable[[argparse.Namespace], int]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags common to the pipeline commands -> one Settings object."""
    settings = Settings()
    bundle = getattr(args, "bundle", None)
    if bundle is not None and (Path(bundle) / "settings.json").is_file():
        settings = Settings.load(Path(bundle) / "settings.json")
        settings.out_dir = Path(bundle)
    if getattr(args, "data", None):
        settings.data_dir = Path(args.data) if "://" not in str(args.data) else args.data
    if getattr(args, "out", None):
        settings.out_dir = Path(args.out)
    if getattr(args, "seed", None) is not None:
        settings.seed = args.seed
    if getattr(args, "database", None):
        settings.database_url = args.database
    if getattr(args, "quick", False):
        settings.apply_quick()
    return settings.with_environment()


def cmd_sample(args: argparse.Namespace) -> int:
    from fbmarket.data.sample import write_sample

    summary = write_sample(
        Path(args.out), n_products=args.products, seed=args.seed, show_progress=not args.quiet
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from fbmarket.pipeline import prepare_data

    prepared = prepare_data(settings_from_args(args), show_progress=not args.quiet)
    print(json.dumps(prepared.report.to_json(), indent=2, default=str))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fbmarket.workflow import run

    run(settings_from_args(args), show_progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbmarket", description="Multimodal marketplace search and recommendation."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        return command

    sample = add(
        "sample", cmd_sample, "write the synthetic marketplace (Products/Images/Users/Interactions + photos)"
    )
    sample.add_argument("--out", required=True, type=Path, help="folder to write")
    sample.add_argument("--products", type=int, default=2000, help="number of listings (default 2000)")
    sample.add_argument("--seed", type=int, default=42)

    for name, handler, text in (
        ("prepare", cmd_prepare, "clean, geocode, featurise and split a dataset into the database"),
        ("run", cmd_run, "the whole pipeline, as `python main.py`"),
    ):
        command = add(name, handler, text)
        command.add_argument("--data", help="dataset folder or SQLAlchemy URL (default: synthetic)")
        command.add_argument("--out", type=Path, help="output/bundle folder (default artifacts/)")
        command.add_argument("--seed", type=int)
        command.add_argument("--database", help="SQLAlchemy URL (default SQLite inside --out)")
        command.add_argument("--quick", action="store_true", help="tiny settings for a fast end-to-end run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError) as error:  # user mistakes: a message, not a traceback
        print(f"fbmarket {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
