"""`dualrec data stats` and `dualrec data show --user ID`."""

from __future__ import annotations

import argparse
import time

from dualrec.commands.common import add_data_options, data_config, print_json
from dualrec.config import POSTER_PROTOCOL, DataConfig
from dualrec.data.dataset import Dataset, describe_user, load_dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect the MovieLens data and its split")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="{stats,show}")
    stats = commands.add_parser("stats", help="counts of ratings, users, catalogue, windows and test cases")
    add_data_options(stats)
    stats.add_argument(
        "--protocol",
        choices=(POSTER_PROTOCOL,),
        help=f"{POSTER_PROTOCOL}: the poster protocol's sessions, split, samples and the first test sessions' candidates "
        "(PO4ISR's ML-1M setting) instead of the project's windows and users",
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(handler=run_stats)
    show = commands.add_parser("show", help="a user's profile and chronological history")
    add_data_options(show)
    show.add_argument("--user", type=int, required=True, help="MovieLens UserID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)


def load(args: argparse.Namespace, config: DataConfig | None = None) -> Dataset:
    """The dataset of --data-dir with the data options (`config`: those options when already read)."""
    return load_dataset(args.data_dir, config or data_config(args), use_cache=not args.no_cache)


def run_stats(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    if args.protocol == POSTER_PROTOCOL:
        from dualrec.data.poster import load_poster

        stats = load_poster(args.data_dir, use_cache=not args.no_cache).stats()
    else:
        stats = load(args).stats()
        stats["seconds"] = round(time.perf_counter() - started, 3)
    if args.json:
        print_json(stats)
        return
    for key, value in stats.items():
        if key == "test_preview":  # the poster protocol's first test sessions
            value = "".join(
                f"\n{'':>20}{row['history']} -> {row['target']}; candidates (seed 0): {row['candidates']}" for row in value
            )
        print(f"{key:>18}: {value}")


def run_show(args: argparse.Namespace) -> None:
    dataset = load(args)
    profile = describe_user(dataset, args.user)
    history = dataset.history(args.user)
    columns = ["date", "movie_id", "title", "year", "genres", "rating", "in_catalogue"]
    if args.json:
        print_json({"profile": profile, "history": history[columns].to_dict(orient="records")})
        return
    print(", ".join(f"{k}: {v}" for k, v in profile.items()))
    print(f"{len(history)} ratings, {int(history['in_catalogue'].sum())} on catalogue movies (* = in the catalogue)")
    for row in history.itertuples():
        mark = "*" if row.in_catalogue else " "
        print(f"{row.date:%Y-%m-%d %H:%M} {mark} {row.rating}  {row.title} ({row.year})  {', '.join(row.genres)}")
