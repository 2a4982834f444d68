"""The `dualrec` command: parses arguments, runs one subcommand, and turns project errors into one clear line."""

from __future__ import annotations

import argparse
import logging
import sys

from dualrec import __version__
from dualrec.commands import COMMAND_MODULES
from dualrec.errors import DualrecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualrec", description="DUALRec: LSTM + LLM movie recommendation on MovieLens 1M")
    parser.add_argument("--version", action="version", version=f"dualrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except DualrecError as error:
        print(f"dualrec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dualrec: interrupted", file=sys.stderr)
        return 130
    return 0
