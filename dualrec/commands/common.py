"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dualrec.config import SPLIT_MODES, DataConfig
from dualrec.llm import PRESETS

MODEL_HELP = (
    f"LLM preset ({', '.join(PRESETS)}), 'custom', a local folder / .gguf path, or PRESET+ADAPTER_FOLDER (a LoRA "
    f"adapter of `dualrec finetune`) (default %(default)s)"
)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """--data-dir and the dataset options that change windows and splits."""
    defaults = DataConfig()
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", help="MovieLens 1M folder (default: $DUALREC_DATA_DIR, else downloaded once)")
    group.add_argument("--split-seed", type=int, default=defaults.split_seed, help="seed of the user split (default %(default)s)")
    group.add_argument(
        "--split-mode",
        choices=SPLIT_MODES,
        default=defaults.split_mode,
        help="split users (default) or, as the poster did, windows",
    )
    group.add_argument(
        "--windows-per-user",
        type=int,
        default=defaults.max_windows_per_user,
        help="most recent windows kept per user (default %(default)s)",
    )
    group.add_argument("--no-cache", action="store_true", help="rebuild the dataset instead of reading the cached build")


def data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(split_seed=args.split_seed, split_mode=args.split_mode, max_windows_per_user=args.windows_per_user)


def positive_minutes(text: str) -> float:
    """An argparse type: a time budget in minutes, a number above zero."""
    try:
        minutes = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not minutes > 0:
        raise argparse.ArgumentTypeError(f"the budget must be above 0 minutes, not {text}")
    return minutes


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
