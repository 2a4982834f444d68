"""The poster protocol's code on PO4ISR's own published ML-1M files: its candidates redrawn, and SKNN and MostPop
scored, so that the poster's SLIM and MostPop rows can be checked against the files they came from.

    python benchmarks/check_po4isr.py --po4isr PO4ISR_CHECKOUT [--data-dir DIR]

PO4ISR_CHECKOUT is a clone of github.com/llm4sr/PO4ISR (its Dataset/ml-1m/ID/*.npy are read; they hold MovieLens rows,
so they are never copied into this project). Printed:
- for each candidate seed, how many of its 1,000 published candidate lists `dualrec.data.poster.draw_candidates`
  gives again from its published test sessions (re-seeded as its generator does);
- SKNN and MostPop (and PO4ISR's MostPop, the whole catalogue) trained on its published 150 and 50 training sessions
  and scored by `dualrec.evaluation.poster.evaluate_poster` on its published test sessions and candidates, per seed.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from dualrec.config import POSTER_CANDIDATE_SEEDS, PosterConfig
from dualrec.data.poster import PosterData, Sessions, draw_candidates, load_poster
from dualrec.evaluation.poster import evaluate_poster
from dualrec.evaluation.results import markdown_table

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m-full-order"


def read(folder: Path, name: str) -> list[list[int]]:
    return [list(map(int, row)) for row in np.load(folder / f"{name}.npy", allow_pickle=True).tolist()]


def flat(sessions: list[list[int]]) -> Sessions:
    lengths = [len(session) for session in sessions]
    items = np.array([movie for session in sessions for movie in session], dtype=np.int32)
    return Sessions(items, np.concatenate([[0], np.cumsum(lengths)]), np.arange(len(sessions), dtype=np.int64))


def published(ours: PosterData, folder: Path) -> PosterData:
    """PO4ISR's published sessions and candidates as the protocol's data (its ids i + 1 -> our movies[i])."""
    movie = ours.movies
    as_movies = {
        name: [[int(movie[i - 1]) for i in row] for row in read(folder, name)]
        for name in ("train_sample_150", "train_sample_50", "valid", "test")
    }
    parts = [as_movies[name] for name in ("train_sample_150", "train_sample_50", "valid", "test")]
    starts = np.cumsum([0] + [len(part) for part in parts])
    samples = {
        name: np.arange(start, start + len(part))
        for name, start, part in zip(("train", "train-50", "valid", "test"), starts, parts)
    }
    return PosterData(
        folder=ours.folder,
        fingerprint="po4isr-published",
        movies=movie,
        sessions=flat([session for part in parts for session in part]),
        bounds={
            "train": (0, int(starts[2])),
            "valid": (int(starts[2]), int(starts[3])),
            "test": (int(starts[3]), int(starts[4])),
        },
        samples=samples,
        valid_candidates=movie[np.array(read(folder, "valid_candidate")) - 1],
        test_candidates={seed: movie[np.array(read(folder, f"test_candidate_{seed}")) - 1] for seed in POSTER_CANDIDATE_SEEDS},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--po4isr", required=True, help="a clone of github.com/llm4sr/PO4ISR")
    parser.add_argument("--data-dir", default=str(REAL_DATA), help="MovieLens 1M folder (default %(default)s)")
    args = parser.parse_args()
    ours = load_poster(args.data_dir)
    data = published(ours, Path(args.po4isr) / "Dataset" / "ml-1m" / "ID")
    movie_set = set(ours.movies.tolist())
    tests = data.evaluation("test")
    for seed in POSTER_CANDIDATE_SEEDS:
        rng = random.Random(seed)
        drawn = [draw_candidates(rng, tests[i], movie_set) for i in range(len(tests))]
        same = sum(row == published_row for row, published_row in zip(drawn, data.test_candidates[seed].tolist()))
        print(f"candidate seed {seed}: {same} of {len(tests)} published candidate lists drawn again")
    for sample in ("150", "50"):
        document = evaluate_poster(["sknn", "mostpop"], data, PosterConfig(train_sample=sample))
        print(f"\nPO4ISR's published {sample} training sessions, test sessions and candidates:")
        print(markdown_table(document["results"]))
        for entry in document["results"]:
            per_seed = {
                name: [round(v, 4) for v in m["per_seed"]]
                for name, m in entry["metrics"].items()
                if name in ("HR@1", "HR@5", "NDCG@5")
            }
            print(f"{entry['system']}, per seed {list(POSTER_CANDIDATE_SEEDS)}: {per_seed}")
            if "po4isr_mostpop" in entry["extra"]:
                figures = {name: round(value, 4) for name, value in entry["extra"]["po4isr_mostpop"].items()}
                print(f"  PO4ISR's MostPop (the whole catalogue, candidates ignored): {figures}")


if __name__ == "__main__":
    main()
