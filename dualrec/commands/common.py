"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dualrec.config import Bounds, DataConfig, Kind, field_kinds, option_name, option_problem
from dualrec.data.dataset import Dataset
from dualrec.errors import ConfigError
from dualrec.grounding.history_import import read_history_file
from dualrec.grounding.matching import resolve_titles
from dualrec.llm import PRESETS

MODEL_HELP = (
    f"LLM preset ({', '.join(PRESETS)}), 'custom', a local folder / .gguf path, or PRESET+ADAPTER_FOLDER (a LoRA "
    f"adapter of `dualrec finetune`) (default %(default)s)"
)

HISTORY_FILE_HELP = (
    "a file of movies watched: a Letterboxd export (ratings.csv, diary.csv), an IMDb ratings export (ratings.csv) or a "
    "list of titles, one a line (optional year); read in its date order, ambiguous titles and titles not in MovieLens "
    "listed on stderr and left out"
)


Options = TypeVar("Options")


def add_history_options(group: argparse._MutuallyExclusiveGroup) -> None:
    """--history (typed titles) and --history-file (a Letterboxd, IMDb or plain list file), beside --user."""
    group.add_argument("--history", help='movies watched, oldest first: "Toy Story; The Matrix (1999); ..."')
    group.add_argument("--history-file", metavar="PATH", help=HISTORY_FILE_HELP)


def typed_history(dataset: Dataset, args: argparse.Namespace) -> list[int]:
    """The movie ids of --history, or of --history-file (what its rows matched, and what they did not, said on stderr)."""
    if args.history_file is None:
        return resolve_titles(dataset, args.history)
    imported = read_history_file(args.history_file, dataset)
    print("\n".join(imported.report(dataset)), file=sys.stderr)
    return imported.history()


def add_field_options(
    parser: argparse._ActionsContainer,
    cls: type,
    names: Sequence[str],
    profiles: Mapping[str, Any] | None = None,
    types: Mapping[str, Callable[[str], Any]] | None = None,
) -> None:
    """`--field-name` options for the named fields of an options dataclass (HfArgumentParser's way): flag, type, choices
    and help from the field, its default stated in the help. With `profiles`, an option left out is None, so that the
    chosen profile's value holds (`options_from_args`); `types` replaces a field's argparse type."""
    items = {item.name: item for item in dataclasses.fields(cls)}
    shown = profiles or {"default": cls()}
    for name in names:
        item, kind = items[name], field_kinds(cls)[name]
        defaults = {label: getattr(options, name) for label, options in shown.items()}
        help_text = item.metadata["help"]
        if "default" not in help_text:
            help_text += f" ({describe_defaults(defaults)})"
        flag = option_name(item)
        settings = {"dest": name, "default": None if profiles else defaults["default"], "help": help_text.replace("%", "%%")}
        if kind.scalar is bool:
            settings["action"] = argparse.BooleanOptionalAction
        elif item.metadata["choices"]:
            settings["choices"] = item.metadata["choices"]
        else:
            settings["type"] = (types or {}).get(name) or (comma_separated if kind.length is not None else kind.scalar)
            settings["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(flag, **settings)


def describe_defaults(defaults: Mapping[str, Any]) -> str:
    """'default 8' when every profile has the same value, else each profile's ('quick 0.001, full 0.0002')."""
    texts = {
        label: ",".join(map(str, value)) if isinstance(value, tuple) else "none" if value is None else str(value)
        for label, value in defaults.items()
    }
    if len(set(texts.values())) == 1:
        return f"default {next(iter(texts.values()))}"
    return ", ".join(f"{label} {text}" for label, text in texts.items())


def comma_separated(text: str) -> tuple[str, ...]:
    """An argparse type: names separated by commas, blanks dropped."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def whole_numbers(text: str) -> tuple[int, ...]:
    """An argparse type: whole numbers separated by commas."""
    try:
        return tuple(int(number) for number in text.split(",") if number.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def options_from_args(options: Options, args: argparse.Namespace) -> Options:
    """The options (a dataclass) with each field that the command line set (a value that is not None); the
    dataclass checks the result and raises ConfigError."""
    given = {item.name: getattr(args, item.name, None) for item in dataclasses.fields(options)}
    return dataclasses.replace(options, **{name: value for name, value in given.items() if value is not None})


def check_option(flag: str, value: int | None, bounds: Bounds) -> None:
    """Raise ConfigError when a command's own whole-number option (no dataclass field) is given outside its bounds."""
    if problem := option_problem(flag, value, Kind(int, optional=True), bounds):
        raise ConfigError(f"Invalid option: {problem}.")


def check_folder(flag: str, path: str | Path | None) -> None:
    """Raise ConfigError when a folder to write into cannot be made: it, or a folder above it, is a file."""
    if not path:
        return
    path = Path(path)
    blocking = next((part for part in (path, *path.parents) if part.exists() and not part.is_dir()), None)
    if blocking:
        raise ConfigError(f"{flag} {path} cannot be a folder: {blocking} is a file.")


def add_data_options(parser: argparse.ArgumentParser, negatives: bool = False) -> None:
    """--data-dir and the dataset options that change windows and splits (with `negatives`, the sampled protocol's
    negative draws too)."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", help="MovieLens 1M folder (default: $DUALREC_DATA_DIR, else downloaded once)")
    names = ("split_seed", "split_mode", "max_windows_per_user") + (("negative_seeds",) if negatives else ())
    add_field_options(group, DataConfig, names, types={"negative_seeds": whole_numbers})
    group.add_argument("--no-cache", action="store_true", help="rebuild the dataset instead of reading the cached build")


def data_config(args: argparse.Namespace) -> DataConfig:
    return options_from_args(DataConfig(), args)


def positive_minutes(text: str) -> float:
    """An argparse type: a time budget in minutes, a finite number above zero."""
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not math.isfinite(minutes):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes")
    if not minutes > 0:
        raise argparse.ArgumentTypeError(f"the budget must be above 0 minutes, not {text}")
    return minutes


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of an evaluation run (harness.evaluate, evaluate_poster) from `dualrec evaluate`'s options; its
    progress goes to stderr."""
    return {
        "split": args.split,
        "samples": args.bootstrap,
        "seed": args.seed,
        "lstm_dir": args.lstm_dir,
        "baseline_minutes": args.baseline_minutes,
        "progress": lambda message: print(message, file=sys.stderr),
    }


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
