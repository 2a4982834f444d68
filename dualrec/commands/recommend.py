"""`dualrec recommend`: the LSTM's top-k next movies for a MovieLens user or a typed history, and with --hybrid the
hybrid's (the LSTM's top N re-ranked by an LLM, dualrec.ranking.hybrid) beside them."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from dualrec.commands.common import (
    add_data_options,
    add_field_options,
    add_history_options,
    check_option,
    data_config,
    options_from_args,
    print_json,
    typed_history,
)
from dualrec.commands.data import load
from dualrec.config import AT_LEAST_0, AT_LEAST_1, Kind, option_problem
from dualrec.data.dataset import Dataset
from dualrec.errors import ConfigError, DualrecError
from dualrec.grounding.pipeline import user_history
from dualrec.ranking.hybrid import AUTO, RECOMMEND_WEIGHT, SCORERS, HybridOptions, HybridRecommender, Reranked


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
    add_history_options(who)
    parser.add_argument("--k", type=int, default=10, help="how many movies (default %(default)s)")
    parser.add_argument("--model", help="trained LSTM folder (default: <DUALREC_HOME>/models/lstm)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    hybrid = parser.add_argument_group("hybrid (--hybrid: the LSTM's top N re-ranked by an LLM, shown beside the LSTM's)")
    hybrid.add_argument("--hybrid", action="store_true", help="also rank with the hybrid")
    add_field_options(hybrid, HybridOptions, ("llm", "candidates", "scorer", "engine"))
    hybrid.add_argument(
        "--weight",
        type=float,
        default=RECOMMEND_WEIGHT,
        help="w in log p_LSTM + w * s_LLM (default %(default)s; `dualrec evaluate` chooses it on the validation cases)",
    )
    parser.set_defaults(handler=run)


def history_items(dataset: Dataset, args: argparse.Namespace) -> list[int]:
    """The catalogue items of the user's history, the typed titles or the history file (movies outside the catalogue
    are skipped)."""
    movie_ids = user_history(dataset, args.user) if args.user is not None else typed_history(dataset, args)
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


def movie_rows(dataset: Dataset, items: np.ndarray, probabilities: np.ndarray) -> list[dict]:
    """Ranked catalogue items as printable rows: rank, ids, title, year, genres and the LSTM's probability."""
    movies = dataset.catalogue_movies.iloc[items]
    return [
        {
            "rank": rank,
            "item": int(item),
            "movie_id": int(movie_id),
            "title": movie.title,
            "year": int(movie.year) if pd.notna(movie.year) else None,
            "genres": list(movie.genres),
            "probability": float(p),
        }
        for rank, (item, movie_id, movie, p) in enumerate(zip(items, movies.index, movies.itertuples(), probabilities), start=1)
    ]


def hybrid_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the hybrid's options (its model checked without loading it); None when nothing is."""
    try:
        options_from_args(HybridOptions(), args)
    except ConfigError as error:
        return str(error)
    if problem := option_problem("--weight", args.weight, Kind(float), AT_LEAST_0):
        return f"Invalid hybrid options: {problem}."
    if args.scorer == AUTO:
        return (
            f"Invalid hybrid options: --scorer {AUTO} chooses the scorer on the validation cases, which `dualrec evaluate` "
            f"does; here choose one of {', '.join(SCORERS)}."
        )
    return None


def hybrid_rows(dataset: Dataset, lstm, items: list[int], args: argparse.Namespace) -> tuple[Reranked, list[dict]]:
    """The hybrid's ranking of the LSTM's top N after `items` (the LLM loaded for it and closed), as rows with each
    candidate's LSTM probability and rank, LLM score and fused score."""
    hybrid = HybridRecommender(options_from_args(HybridOptions(), args), lstm=lstm)
    hybrid.ready(dataset)
    hybrid.weight = args.weight
    try:
        reranked = hybrid.rerank(items)
    finally:
        hybrid.close()
    rows = movie_rows(dataset, reranked.items[: args.k], reranked.lstm_probabilities[: args.k])
    for row, lstm_rank, llm, score in zip(rows, reranked.lstm_ranks, reranked.llm_scores, reranked.scores):
        row |= {
            "lstm_rank": int(lstm_rank),
            "change": int(lstm_rank) - row["rank"],
            "llm_score": float(llm),
            "score": float(score),
        }
    return reranked, rows


def run(args: argparse.Namespace) -> None:
    check_option("--k", args.k, AT_LEAST_1)
    data = data_config(args)  # bad options stop here, before TensorFlow loads
    problem = hybrid_problem(args)  # said at once; the LSTM's ranking is still shown
    if problem:
        print(f"dualrec: error: {problem}", file=sys.stderr)
    from dualrec.ranking.lstm import load_lstm

    dataset = load(args, data)
    items = history_items(dataset, args)
    lstm = load_lstm(args.model, dataset)
    ranking = lstm.top_k(items, args.k)
    rows = movie_rows(dataset, ranking.items, ranking.probabilities)
    reranked, hybrid, failure = None, [], None
    if args.hybrid and not problem:
        try:
            reranked, hybrid = hybrid_rows(dataset, lstm, items, args)
        except DualrecError as error:
            failure = str(error)
    if args.json:
        print_json({"history": [int(dataset.catalogue[i]) for i in items], "recommendations": rows} | hybrid_json(args, hybrid))
    else:
        print(f"LSTM top {args.k} after {len(items)} movies (last: {dataset.catalogue_movies.iloc[items[-1]]['title']}):")
        for row in rows:
            print(f"{row['rank']:>3}. {row['probability']:.4f}  {row['title']} ({row['year']})  {', '.join(row['genres'])}")
        if reranked is not None:
            print_hybrid(args, reranked, hybrid)
    if problem:
        raise DualrecError("the hybrid was not run (see the first line); the LSTM's ranking is shown alone")
    if failure:
        raise DualrecError(f"the hybrid was not run: {failure}; the LSTM's ranking is shown alone")


def hybrid_json(args: argparse.Namespace, rows: list[dict]) -> dict:
    if not rows:
        return {}
    options = {"llm": args.llm, "scorer": args.scorer, "candidates": args.candidates, "weight": args.weight}
    return {"hybrid": options | {"recommendations": rows}}


def print_hybrid(args: argparse.Namespace, reranked: Reranked, rows: list[dict]) -> None:
    """The hybrid's top k: rank, its move from the LSTM's rank, the LSTM probability, the LLM score and the fused score."""
    print(
        f"\nHybrid top {len(rows)} ({args.llm}, {args.scorer} scorer): the LSTM's top {len(reranked.items)} by "
        f"log p_LSTM + {reranked.weight:g} * s_LLM"
    )
    print("rank  move (LSTM rank)  LSTM p   LLM s     score  title")
    for row in rows:
        move = f"{row['change']:+d}" if row["change"] else "="
        print(
            f"{row['rank']:>3}.  {move:>4} ({row['lstm_rank']:>3})      {row['probability']:.4f}  {row['llm_score']:7.2f}  "
            f"{row['score']:8.2f}  {row['title']} ({row['year']})  {', '.join(row['genres'])}"
        )
