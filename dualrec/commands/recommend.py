"""`dualrec recommend`: the LSTM's top-k next movies for a MovieLens user or a typed history."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from dualrec.commands.common import add_data_options, check_option, data_config, print_json
from dualrec.commands.data import load
from dualrec.config import AT_LEAST_1
from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError
from dualrec.grounding.matching import resolve_titles
from dualrec.grounding.pipeline import user_history


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "recommend", help="the LSTM's top-k next movies for a user or a history (watched movies excluded)"
    )
    add_data_options(parser)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--user",
        type=int,
        help="MovieLens UserID: their catalogue history, oldest first (a test or validation user's held-out movie is left out)",
    )
    who.add_argument("--history", help='movies watched, oldest first: "Toy Story; The Matrix (1999); ..."')
    parser.add_argument("--k", type=int, default=10, help="how many movies (default %(default)s)")
    parser.add_argument("--model", help="trained LSTM folder (default: <DUALREC_HOME>/models/lstm)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def history_items(dataset: Dataset, args: argparse.Namespace) -> list[int]:
    """The catalogue items of the user's history or of the typed titles (movies outside the catalogue are skipped)."""
    movie_ids = user_history(dataset, args.user) if args.user is not None else resolve_titles(dataset, args.history)
    items = dataset.item_of(movie_ids)
    outside = [dataset.movies.loc[m, "title"] for m, item in zip(movie_ids, items) if item < 0]
    if outside:
        print(
            f"Skipped (not among the {dataset.catalogue_size} catalogue movies the LSTM knows): {'; '.join(outside)}",
            file=sys.stderr,
        )
    if (items < 0).all():
        raise DualrecError(
            f"None of the given movies is among the {dataset.catalogue_size} catalogue movies; add better-known ones."
        )
    return [int(item) for item in items if item >= 0]


def run(args: argparse.Namespace) -> None:
    check_option("--k", args.k, AT_LEAST_1)
    data = data_config(args)  # bad options stop here, before TensorFlow loads
    from dualrec.ranking.lstm import load_lstm

    dataset = load(args, data)
    items = history_items(dataset, args)
    ranking = load_lstm(args.model, dataset).top_k(items, args.k)
    movies = dataset.catalogue_movies.iloc[ranking.items]
    rows = [
        {
            "rank": rank,
            "item": int(item),
            "movie_id": int(movie_id),
            "title": movie.title,
            "year": int(movie.year) if pd.notna(movie.year) else None,
            "genres": list(movie.genres),
            "probability": float(p),
        }
        for rank, (item, movie_id, movie, p) in enumerate(
            zip(ranking.items, movies.index, movies.itertuples(), ranking.probabilities), start=1
        )
    ]
    if args.json:
        print_json({"history": [int(dataset.catalogue[i]) for i in items], "recommendations": rows})
        return
    print(f"LSTM top {args.k} after {len(items)} movies (last: {dataset.catalogue_movies.iloc[items[-1]]['title']}):")
    for row in rows:
        print(f"{row['rank']:>3}. {row['probability']:.4f}  {row['title']} ({row['year']})  {', '.join(row['genres'])}")
