"""The poster's own protocol, `poster`: PO4ISR's ML-1M sessions, samples and 20 candidates (docs/design.md §2).

The poster's baseline table comes from PO4ISR (Sun et al. 2023, "Large Language Models for Intent-Driven Session
Recommendations", github.com/llm4sr/PO4ISR). This module rebuilds what its generator,
`Dataset/DataProcess/ml-1m/generate.py`, makes of a ratings file, in the same order and with the same random draws:

- the movies with at least 5 ratings (3,416 on ML-1M); item i is the i-th smallest MovieID (PO4ISR's id i + 1);
- each user's ratings in time order, same-second ratings in the order the reference's pandas merge left them: grouped
  by movie, movies in the order of their first line in ratings.dat, then in file order (pandas before 2.2 grouped an
  inner merge's rows by key; its published sessions show that order), users in the order they first appear there;
- a session is one user's ratings of one calendar day (UTC) with at least 2 ratings; a longer one than 20 becomes its
  windows of 20 (stride 1), each timed by its last rating; its last movie is the target;
- all sessions (users, days, windows in that order) stably sorted by time and cut 80/10/10 in that order;
- Python's `random` seeded 42: 150 training sessions (each then given candidates, as the reference does for its LLM
  files), 1,000 validation sessions with their 20 candidates, a draw of 100 of them (its valid_100.json), 1,000 test
  sessions; then, re-seeded with each candidate seed (0, 10, 42, 625, 2023), 20 candidates per test session: 19 movies
  drawn from those not in the session and the target inserted at a random place. The 50-session setting is the
  reference's draw with 50 instead of 150 (on ML-1M the first 50 of the 150).

The sessions are cut with numpy in seconds; the draws are made in Python, as the reference makes them. The result is
cached like the other protocols, keyed by the files' md5.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.config import POSTER_CANDIDATE_SEEDS, POSTER_TRAIN_SAMPLES, DataConfig, paths
from dualrec.data.dataset import PAD_ITEM, Dataset, Windows, prefix_windows, write_npz
from dualrec.data.download import resolve_data_dir
from dualrec.data.movielens import fingerprint_files, read_movielens, read_movies, read_users, require_files
from dualrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MIN_MOVIE_RATINGS = 5  # generate.py's filter_num
SESSION_LENGTH = 20  # its window_size: longer days become windows of this length
SPLIT_CUTS = (0.8, 0.9)  # train | valid | test, in time order
SAMPLE_SEED = 42
TRAIN_SAMPLE = 150
EVAL_SAMPLE = 1000
VALID_SUBSAMPLE = 100  # the reference's valid_100.json: drawn only to keep the random stream the reference's
CANDIDATES = 20  # the target and 19 movies not in the session
HISTORY = SESSION_LENGTH - 1  # the longest history: the width of the sessions as Windows
SPLITS = ("train", "valid", "test")  # the reference's names (the project's Dataset calls the second "val")
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Sessions:
    """Sessions of movie ids kept flat: session i is items[offsets[i]:offsets[i + 1]], oldest first, its last movie
    the target; times[i] is the time the reference sorts it by."""

    items: np.ndarray  # int32 movie ids
    offsets: np.ndarray  # (n + 1,) int64
    times: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, index: int) -> list[int]:
        return self.items[self.offsets[index] : self.offsets[index + 1]].tolist()

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, index: np.ndarray | Sequence[int]) -> Sessions:
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.repeat(self.offsets[index], lengths) + np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        return Sessions(self.items[flat], offsets, self.times[index])


@dataclass(frozen=True)
class PosterCase:
    """A sampled session as the protocol ranks it: movie ids of the history (oldest first) and the target, and the 20
    candidates of each candidate seed in the reference's order (the target at a random place)."""

    history: list[int]
    target: int
    candidates: dict[int, list[int]]


@dataclass(frozen=True)
class PosterData:
    """The protocol built from one ratings file: every session, the split, the samples and their candidates."""

    folder: Path  # the MovieLens folder (its movies.dat and users.dat)
    fingerprint: str  # md5 of the data files
    movies: np.ndarray  # (3416,) movie ids, ascending: the protocol's items
    sessions: Sessions  # every session, in the reference's order (by time)
    bounds: dict[str, tuple[int, int]]  # split -> [start, stop) in `sessions`
    samples: dict[str, np.ndarray]  # "train" (150), "train-50", "valid", "test": positions in `sessions`, drawn order
    valid_candidates: np.ndarray  # (1000, 20) movie ids, the reference's order
    test_candidates: dict[int, np.ndarray]  # candidate seed -> (1000, 20) movie ids, the reference's order

    def split(self, name: str) -> Sessions:
        start, stop = self.bounds[name]
        return self.sessions.take(np.arange(start, stop))

    def training(self, train_sample: str) -> Sessions:
        """The training sessions a system learns from: the reference's sample of 150, of 50, or the whole split."""
        check_choice(train_sample, POSTER_TRAIN_SAMPLES, "train sample")
        return self.split("train") if train_sample == "all" else self.sessions.take(self.samples[sample_key(train_sample)])

    def evaluation(self, split: str) -> Sessions:
        """The 1,000 sampled sessions of "valid" or "test", in the reference's drawn order."""
        check_choice(split, SPLITS[1:], "split")
        return self.sessions.take(self.samples[split])

    def candidates(self, split: str, seed: int | None = None) -> np.ndarray:
        """(1000, 20) candidate movie ids of the split's sampled sessions: the validation draw, or a test seed's."""
        if split == "valid":
            return self.valid_candidates
        check_choice(split, SPLITS[2:], "split")
        check_choice(seed, POSTER_CANDIDATE_SEEDS, "candidate seed")
        return self.test_candidates[seed]

    def cases(self, split: str = "test", seeds: Sequence[int] = POSTER_CANDIDATE_SEEDS) -> list[PosterCase]:
        """The split's sampled sessions with their candidates (the validation draw is filed under SAMPLE_SEED)."""
        sessions = self.evaluation(split)
        draws = {SAMPLE_SEED: self.valid_candidates} if split == "valid" else {s: self.candidates(split, s) for s in seeds}
        return [
            PosterCase(sessions[i][:-1], sessions[i][-1], {seed: draw[i].tolist() for seed, draw in draws.items()})
            for i in range(len(sessions))
        ]

    def stats(self) -> dict:
        """The figures of `dualrec data stats --protocol poster`."""
        preview = self.cases("test", POSTER_CANDIDATE_SEEDS[:1])[:3]
        return {
            "items": int(len(self.movies)),
            "sessions": int(len(self.sessions)),
            "splits": {name: stop - start for name, (start, stop) in self.bounds.items()},
            "samples": {name: len(self.samples[name]) for name in SPLITS},
            "test_preview": [
                {"history": case.history, "target": case.target, "candidates": case.candidates[POSTER_CANDIDATE_SEEDS[0]]}
                for case in preview
            ],
        }


def check_choice(value: object, allowed: Sequence, what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"Unknown {what} {value!r} of the poster protocol; choose from {', '.join(map(str, allowed))}.")


def sample_key(train_sample: str) -> str:
    return "train" if train_sample == str(TRAIN_SAMPLE) else f"train-{train_sample}"


# ---- sessions ------------------------------------------------------------------------------------------------------


def reference_row_order(movies: np.ndarray, users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Row positions of ratings.dat in the order the reference reads them: by user (in order of first appearance after
    its merge), then time, same-second ratings as its merge left them (by each movie's first line, then file order)."""
    _, first_line, movie_of_row = np.unique(movies, return_index=True, return_inverse=True)
    merged = np.argsort(first_line[movie_of_row], kind="stable")
    _, first_seen, user_of_row = np.unique(users[merged], return_index=True, return_inverse=True)
    user_rank = np.argsort(np.argsort(first_seen))[user_of_row]
    return merged[np.lexsort((np.arange(len(merged)), times[merged], user_rank))]


def day_sessions(movies: np.ndarray, users: np.ndarray, times: np.ndarray) -> Sessions:
    """The sessions of rows already in the reference's order (reference_row_order): each user's day with 2 or more
    ratings, a day longer than SESSION_LENGTH as its windows; in that order (the reference's session ids)."""
    days = times // SECONDS_PER_DAY  # UTC calendar days (timestamps are not negative)
    new_group = np.r_[True, (users[1:] != users[:-1]) | (days[1:] != days[:-1])]
    starts = np.flatnonzero(new_group)
    lengths = np.diff(np.r_[starts, len(users)])
    starts, lengths = starts[lengths > 1], lengths[lengths > 1]
    windows = np.where(lengths > SESSION_LENGTH, lengths - SESSION_LENGTH + 1, 1)
    step = np.arange(windows.sum()) - np.repeat(np.cumsum(windows) - windows, windows)
    session_starts = np.repeat(starts, windows) + step
    session_lengths = np.repeat(np.minimum(lengths, SESSION_LENGTH), windows)
    offsets = np.concatenate([[0], np.cumsum(session_lengths)])
    flat = np.repeat(session_starts, session_lengths) + np.arange(offsets[-1]) - np.repeat(offsets[:-1], session_lengths)
    return Sessions(movies[flat].astype(np.int32), offsets, times[session_starts + session_lengths - 1])


def reference_sessions(ratings: pd.DataFrame) -> tuple[np.ndarray, Sessions, set[int]]:
    """The protocol's movies (ascending), every session sorted by time (ties in session order) and the reference's set
    of movie ids (built in its row order: what the candidates are drawn from)."""
    movies, users, times = (ratings[column].to_numpy() for column in ("movie_id", "user_id", "timestamp"))
    if (times < 0).any():
        raise DataError("ratings.dat holds negative timestamps; the poster protocol cuts sessions by calendar day from 1970.")
    kept = np.bincount(movies)[movies] >= MIN_MOVIE_RATINGS
    movies, users, times = movies[kept], users[kept], times[kept]
    order = reference_row_order(movies, users, times)
    sessions = day_sessions(movies[order], users[order], times[order])
    _, first_line = np.unique(movies, return_index=True)
    movie_set = set(movies[np.sort(first_line)].tolist())  # inserted in the reference's order: its pools' order
    return np.unique(movies).astype(np.int32), sessions.take(np.argsort(sessions.times, kind="stable")), movie_set


def split_bounds(count: int) -> dict[str, tuple[int, int]]:
    """[start, stop) of train, valid and test: the reference's int(n * 0.8) and int(n * 0.9) cuts."""
    first, second = (int(count * cut) for cut in SPLIT_CUTS)
    return {"train": (0, first), "valid": (first, second), "test": (second, count)}


# ---- the reference's draws -----------------------------------------------------------------------------------------


def draw_candidates(rng: random.Random, session: list[int], movie_set: set[int]) -> list[int]:
    """The reference's get_candiate_set: 19 movies drawn from those not in the session, the target inserted at a
    random place."""
    pool = list(movie_set - set(session))
    if len(pool) < CANDIDATES - 1:
        raise DataError(f"Only {len(pool)} movies lie outside a session; the poster protocol draws {CANDIDATES - 1} of them.")
    chosen = rng.sample(pool, CANDIDATES - 1)
    chosen.insert(rng.randint(0, CANDIDATES - 1), session[-1])
    return chosen


def check_sizes(bounds: dict[str, tuple[int, int]]) -> None:
    """Refuse data too small for the reference's samples, before any draw."""
    needed = {"train": TRAIN_SAMPLE, "valid": EVAL_SAMPLE, "test": EVAL_SAMPLE}
    words = {"train": "training", "valid": "validation", "test": "test"}
    short = [f"{stop - start} {words[name]}" for name, (start, stop) in bounds.items() if stop - start < needed[name]]
    if short:
        total = bounds["test"][1]
        raise DataError(
            f"These ratings give {total} sessions ({', '.join(short)} sessions); the poster protocol samples "
            f"{TRAIN_SAMPLE} training, {EVAL_SAMPLE} validation and {EVAL_SAMPLE} test sessions from an 80/10/10 split."
        )


def reference_draws(sessions: Sessions, bounds: dict[str, tuple[int, int]], movie_set: set[int]) -> dict:
    """The samples and candidates, drawn with Python's random in the reference's call order."""
    check_sizes(bounds)
    size = {name: stop - start for name, (start, stop) in bounds.items()}
    rng = random.Random(SAMPLE_SEED)
    train = rng.sample(range(size["train"]), TRAIN_SAMPLE)
    for index in train:
        draw_candidates(rng, sessions[bounds["train"][0] + index], movie_set)
    valid = [bounds["valid"][0] + index for index in rng.sample(range(size["valid"]), EVAL_SAMPLE)]
    valid_candidates = [draw_candidates(rng, sessions[index], movie_set) for index in valid]
    rng.sample(range(EVAL_SAMPLE), VALID_SUBSAMPLE)
    test = [bounds["test"][0] + index for index in rng.sample(range(size["test"]), EVAL_SAMPLE)]
    test_candidates = {}
    for seed in POSTER_CANDIDATE_SEEDS:
        seeded = random.Random(seed)
        test_candidates[seed] = np.array([draw_candidates(seeded, sessions[index], movie_set) for index in test], np.int32)
    train_50 = random.Random(SAMPLE_SEED).sample(range(size["train"]), 50)
    return {
        "samples": {
            "train": np.array(train, np.int64),
            "train-50": np.array(train_50, np.int64),
            "valid": np.array(valid, np.int64),
            "test": np.array(test, np.int64),
        },
        "valid_candidates": np.array(valid_candidates, np.int32),
        "test_candidates": test_candidates,
    }


def build_poster(folder: Path, ratings: pd.DataFrame, fingerprint: str) -> PosterData:
    movies, sessions, movie_set = reference_sessions(ratings)
    bounds = split_bounds(len(sessions))
    return PosterData(folder, fingerprint, movies, sessions, bounds, **reference_draws(sessions, bounds, movie_set))


# ---- on-disk cache -------------------------------------------------------------------------------------------------


def cache_file(fingerprint: str) -> Path:
    key = json.dumps([CACHE_VERSION, fingerprint, MIN_MOVIE_RATINGS, SESSION_LENGTH, SPLIT_CUTS, SAMPLE_SEED, CANDIDATES])
    return paths().dataset_cache / f"poster-{hashlib.md5(key.encode()).hexdigest()[:16]}.npz"


def save_poster(data: PosterData, target: Path) -> None:
    """Write the protocol's arrays atomically (temporary file, then rename)."""
    arrays = {"movies": data.movies, "items": data.sessions.items, "offsets": data.sessions.offsets, "times": data.sessions.times}
    arrays |= {"bounds": np.array([data.bounds[name] for name in SPLITS]), "valid_candidates": data.valid_candidates}
    arrays |= {f"sample_{name}": index for name, index in data.samples.items()}
    arrays |= {f"test_candidates_{seed}": draw for seed, draw in data.test_candidates.items()}
    write_npz(target, arrays)


def read_poster(source: Path, folder: Path, fingerprint: str) -> PosterData:
    with np.load(source) as a:
        return PosterData(
            folder=folder,
            fingerprint=fingerprint,
            movies=a["movies"],
            sessions=Sessions(a["items"], a["offsets"], a["times"]),
            bounds={name: (int(start), int(stop)) for name, (start, stop) in zip(SPLITS, a["bounds"])},
            samples={name: a[f"sample_{name}"] for name in ("train", "train-50", "valid", "test")},
            valid_candidates=a["valid_candidates"],
            test_candidates={seed: a[f"test_candidates_{seed}"] for seed in POSTER_CANDIDATE_SEEDS},
        )


def load_poster(data_dir: str | Path | None = None, use_cache: bool = True) -> PosterData:
    """The poster protocol of a MovieLens folder (see resolve_data_dir), from the cache when it is there."""
    folder = resolve_data_dir(data_dir)
    require_files(folder)
    fingerprint = fingerprint_files(folder)
    cached = cache_file(fingerprint)
    if use_cache and cached.is_file():
        try:
            return read_poster(cached, folder, fingerprint)
        except (OSError, KeyError, ValueError) as error:
            log.warning("Ignoring unreadable poster-protocol cache %s (%s); rebuilding", cached, error)
    data = build_poster(folder, read_movielens(folder, fingerprint).ratings, fingerprint)
    if use_cache:
        save_poster(data, cached)
    return data


def poster_cases(
    data_dir: str | Path | None = None, split: str = "test", seeds: Sequence[int] = POSTER_CANDIDATE_SEEDS
) -> list[PosterCase]:
    """The sampled sessions of a split with their 20 candidates per seed: what a re-ranker (the hybrid, NIR) ranks."""
    return load_poster(data_dir).cases(split, seeds)


# ---- the protocol as a Dataset, for the project's systems ----------------------------------------------------------


def as_windows(sessions: Sessions, items: np.ndarray, users: np.ndarray) -> Windows:
    """Each session as one case: its history left-padded to HISTORY with PAD_ITEM, its target, its pseudo-user."""
    histories = np.full((len(sessions), HISTORY), PAD_ITEM, dtype=np.int32)
    for row, (start, stop) in enumerate(zip(sessions.offsets[:-1], sessions.offsets[1:])):
        histories[row, HISTORY - (stop - start - 1) :] = items[start : stop - 1]
    return Windows(histories, items[sessions.offsets[1:] - 1].astype(np.int32), users.astype(np.int32))


def poster_dataset(data: PosterData, train_sample: str) -> Dataset:
    """The protocol as the project's Dataset, so that every system trains and scores on it unchanged: the catalogue
    is the protocol's movies (item i = the i-th smallest MovieID), each session a pseudo-user (training sessions
    first, then the validation and test samples), its ratings the session's movies in order. Training sessions give
    every prefix as a training window; the sampled validation and test sessions are the cases. Its fingerprint names
    the data and the training sample, so that a model trained on it is kept apart."""
    parts = {"train": data.training(train_sample), "val": data.evaluation("valid"), "test": data.evaluation("test")}
    lookup = np.full(int(data.movies.max()) + 1, -1, dtype=np.int32)
    lookup[data.movies] = np.arange(len(data.movies), dtype=np.int32)
    first = np.cumsum([0] + [len(part) for part in parts.values()])
    users = {name: np.arange(start, start + len(part)) for (name, part), start in zip(parts.items(), first)}
    ratings = pd.DataFrame(
        {
            "user_id": np.concatenate([np.repeat(users[name], part.lengths) for name, part in parts.items()]).astype(np.int32),
            "movie_id": np.concatenate([part.items for part in parts.values()]),
        }
    )
    ratings["rating"] = np.int8(0)
    ratings["timestamp"] = np.arange(len(ratings), dtype=np.int64)  # the sessions' order
    ratings["item"] = lookup[ratings["movie_id"].to_numpy()]
    config = DataConfig(catalogue_size=len(data.movies), window=HISTORY)
    fingerprint = hashlib.md5(json.dumps(["poster", CACHE_VERSION, data.fingerprint, train_sample]).encode()).hexdigest()
    cases = {name: as_windows(parts[name], lookup[parts[name].items], users[name]) for name in ("val", "test")}
    dataset = Dataset(
        config=config,
        fingerprint=fingerprint,
        movies=read_movies(data.folder / "movies.dat"),
        users=read_users(data.folder / "users.dat"),
        ratings=ratings,
        catalogue=data.movies,
        catalogue_counts=np.bincount(ratings["item"], minlength=len(data.movies)),
        eligible_users=np.arange(first[-1], dtype=np.int32),
        split_users={name: users[name].astype(np.int32) for name in parts},
        windows={},
        cases=cases,
    )
    windows = {"train": prefix_windows(dataset, dataset.split_users["train"]), "val": cases["val"], "test": cases["test"]}
    return dataclasses.replace(dataset, windows=windows)
