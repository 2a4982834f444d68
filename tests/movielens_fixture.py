"""A deterministic generator of small MovieLens-1M-format folders for tests (no real MovieLens rows).

The folders have what the real data has that matters to the pipeline: latin-1 titles, articles moved to the end,
alternate titles in parentheses, all 18 genres, several ratings in the same second, users below the eligibility
threshold, and a popularity long tail. Sequences drift through neighbouring movie ids so a sequential model can learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualrec.config import GENRES

WORDS = [
    "Night",
    "River",
    "Star",
    "Dream",
    "City",
    "Ghost",
    "Summer",
    "Love",
    "War",
    "Island",
    "King",
    "Secret",
    "Blue",
    "Heart",
    "Storm",
]
SPECIAL_TITLES = [
    ("Bug's Life, A", 1998, "Animation|Children's|Comedy"),
    ("Emperor and the Assassin, The (Jing ke ci qin wang)", 1999, "Drama"),
    ("Misérables, Les", 1995, "Drama|Musical"),
    ("Enfer, L'", 1994, "Drama"),
    ("Postino, Il (The Postman)", 1994, "Comedy|Drama|Romance"),
    ("Alien³", 1992, "Action|Horror|Sci-Fi|Thriller"),
    ("Matrix, The", 1999, "Action|Sci-Fi|Thriller"),
    ("Toy Story", 1995, "Animation|Children's|Comedy"),
    ("Toy Story 2", 1999, "Animation|Children's|Comedy"),
    ("Star Wars: Episode V - The Empire Strikes Back", 1980, "Action|Adventure|Drama|Sci-Fi|War"),
]


@dataclass(frozen=True)
class FixtureSpec:
    users: int = 300
    movies: int = 1100
    min_ratings: int = 8
    max_ratings: int = 120
    seed: int = 7


def movie_lines(spec: FixtureSpec, rng: np.random.Generator) -> list[str]:
    lines = [f"{i}::{title} ({year})::{genres}" for i, (title, year, genres) in enumerate(SPECIAL_TITLES, start=1)]
    for movie_id in range(len(SPECIAL_TITLES) + 1, spec.movies + 1):
        words = " ".join(rng.choice(WORDS, size=rng.integers(1, 4)))
        genres = "|".join(sorted(rng.choice(GENRES, size=rng.integers(1, 4), replace=False), key=GENRES.index))
        lines.append(f"{movie_id}::{words} {movie_id} ({1930 + movie_id % 70})::{genres}")
    return lines


def user_lines(spec: FixtureSpec, rng: np.random.Generator) -> list[str]:
    ages = [1, 18, 25, 35, 45, 50, 56]
    return [
        f"{u}::{rng.choice(['F', 'M'])}::{rng.choice(ages)}::{rng.integers(0, 21)}::{rng.integers(10000, 99999)}"
        for u in range(1, spec.users + 1)
    ]


def user_ratings(user_id: int, spec: FixtureSpec, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """One user's (user, movie, rating, timestamp) rows: a walk over movie ids, with same-second ties, shuffled."""
    count = int(rng.integers(spec.min_ratings, spec.max_ratings))
    position = int(rng.integers(0, spec.movies))
    seen: list[int] = []
    while len(seen) < count:
        position = (position + int(rng.integers(-3, 12))) % spec.movies
        movie = 1 + (position if rng.random() < 0.8 else int(rng.zipf(1.3)) % spec.movies)
        if movie not in seen:
            seen.append(movie)
    clock = 956_703_932 + user_id * 50_000
    steps = rng.choice([0, 0, 1, 30, 600], size=count)  # zeros make ratings in the same second
    times = clock + np.cumsum(steps)
    rows = [(user_id, m, int(rng.integers(1, 6)), int(t)) for m, t in zip(seen, times)]
    return [rows[i] for i in rng.permutation(count)]  # like ML-1M, a user's lines are not in time order


def write_movielens(folder: Path, spec: FixtureSpec = FixtureSpec()) -> Path:
    """Write ratings.dat, movies.dat (latin-1) and users.dat into folder; the same spec always gives the same bytes."""
    rng = np.random.default_rng(spec.seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.dat").write_bytes(("\n".join(movie_lines(spec, rng)) + "\n").encode("latin-1"))
    (folder / "users.dat").write_text("\n".join(user_lines(spec, rng)) + "\n")
    rows = [row for u in range(1, spec.users + 1) for row in user_ratings(u, spec, rng)]
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in rows))
    return folder
