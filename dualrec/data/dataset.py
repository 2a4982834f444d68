"""From MovieLens ratings to the catalogue, chronological sequences, training windows, the split and test cases.

Everything is built with numpy over whole arrays (the full ML-1M build takes seconds) and cached on disk, keyed by the
data files' md5 and the options. Items are catalogue positions 0..C-1 (0 = most rated); PAD_ITEM pads histories.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.config import AGE_GROUPS, GENDERS, OCCUPATIONS, SPLITS, DataConfig, paths
from dualrec.data.download import resolve_data_dir
from dualrec.data.movielens import MovieLens, fingerprint_files, read_movielens, read_movies, read_users, require_files
from dualrec.errors import DataError, UnknownUserError

log = logging.getLogger(__name__)

PAD_ITEM = -1
CACHE_VERSION = 1


@dataclass(frozen=True)
class Windows:
    """Fixed-length histories (left-padded with PAD_ITEM), the item that followed each, and whose they are."""

    histories: np.ndarray  # (n, window) int32
    targets: np.ndarray  # (n,) int32
    users: np.ndarray  # (n,) int32

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, index: np.ndarray) -> Windows:
        return Windows(self.histories[index], self.targets[index], self.users[index])


@dataclass(frozen=True)
class Dataset:
    """The built MovieLens data: one object that every stage reads."""

    config: DataConfig
    fingerprint: str  # md5 of the data files; identifies the data in caches and results
    movies: pd.DataFrame  # all movies of movies.dat, indexed by movie_id
    users: pd.DataFrame  # users.dat, indexed by user_id
    ratings: pd.DataFrame  # every rating, sorted by user then time (ties in file order); item = catalogue position or -1
    catalogue: np.ndarray  # (C,) movie ids, most rated first, ties by smaller id
    catalogue_counts: np.ndarray  # (C,) number of ratings of each catalogue movie
    eligible_users: np.ndarray  # sorted ids of users with at least window + 1 catalogue ratings
    split_users: dict[str, np.ndarray]  # "train"/"val"/"test" -> sorted user ids (whose windows are in that split)
    windows: dict[str, Windows]  # training windows of each split
    cases: dict[str, Windows]  # evaluation cases of "val" and "test"

    @property
    def catalogue_size(self) -> int:
        return len(self.catalogue)

    @property
    def catalogue_movies(self) -> pd.DataFrame:
        """The catalogue's movies in item order (row i is item i)."""
        return self.movies.loc[self.catalogue]

    def item_of(self, movie_ids: np.ndarray | list[int]) -> np.ndarray:
        """Catalogue positions of movie ids; -1 for movies outside the catalogue."""
        lookup = pd.Series(np.arange(self.catalogue_size), index=self.catalogue)
        return lookup.reindex(np.asarray(movie_ids)).fillna(-1).to_numpy(dtype=np.int32)

    def check_user(self, user_id: int) -> None:
        if user_id not in self.users.index:
            raise UnknownUserError(
                f"User {user_id} is not in users.dat (valid ids run from {self.users.index.min()} to {self.users.index.max()})."
            )

    def history(self, user_id: int) -> pd.DataFrame:
        """A user's ratings in time order, with title, year, genres and whether the movie is in the catalogue."""
        self.check_user(user_id)
        rows = self.ratings[self.ratings["user_id"] == user_id]
        movies = self.movies.loc[rows["movie_id"], ["title", "year", "genres"]].reset_index(drop=True)
        table = pd.concat([rows.reset_index(drop=True), movies], axis=1)
        table["date"] = pd.to_datetime(table["timestamp"], unit="s")
        table["in_catalogue"] = table["item"] >= 0
        return table

    def user_items(self, user_id: int) -> np.ndarray:
        """A user's catalogue items in time order: the sequence the LSTM reads."""
        self.check_user(user_id)
        rows = self.ratings[(self.ratings["user_id"] == user_id) & (self.ratings["item"] >= 0)]
        return rows["item"].to_numpy(dtype=np.int32)

    def split_of(self, user_id: int) -> str | None:
        """Which split a user belongs to under the user split, or None if the user is not eligible."""
        for name, users in self.split_users.items():
            if np.isin(user_id, users):
                return name
        return None

    def rated_matrix(self, users: np.ndarray) -> np.ndarray:
        """(len(users), C) booleans: True where the user ever rated that catalogue movie."""
        unique, row_of = np.unique(users, return_inverse=True)
        rated = self.ratings[(self.ratings["item"] >= 0) & self.ratings["user_id"].isin(unique)]
        matrix = np.zeros((len(unique), self.catalogue_size), dtype=bool)
        matrix[np.searchsorted(unique, rated["user_id"].to_numpy()), rated["item"].to_numpy()] = True
        return matrix[row_of]

    def negatives(self, cases: Windows, seed: int) -> np.ndarray:
        """(n, negatives) catalogue items per case, drawn uniformly without replacement from movies the user never rated."""
        count = self.config.negatives
        rated = self.rated_matrix(cases.users)
        short = np.flatnonzero((~rated).sum(axis=1) < count)
        if len(short):
            raise DataError(f"User {cases.users[short[0]]} has fewer than {count} unrated catalogue movies to sample from.")
        keys = np.random.default_rng(seed).random(rated.shape)
        keys[rated] = np.inf
        chosen = np.argpartition(keys, count - 1, axis=1)[:, :count]
        order = np.argsort(np.take_along_axis(keys, chosen, axis=1), axis=1)
        return np.take_along_axis(chosen, order, axis=1).astype(np.int32)

    def stats(self) -> dict:
        """The figures of `dualrec data stats`."""
        catalogue_ratings = self.ratings["item"] >= 0
        return {
            "ratings": int(len(self.ratings)),
            "users": int(len(self.users)),
            "movies": int(len(self.movies)),
            "rated_movies": int(self.ratings["movie_id"].nunique()),
            "catalogue_size": int(self.catalogue_size),
            "catalogue_ratings": int(catalogue_ratings.sum()),
            "eligible_users": int(len(self.eligible_users)),
            "split_users": {name: int(len(users)) for name, users in self.split_users.items()},
            "windows": {name: int(len(w)) for name, w in self.windows.items()},
            "test_cases": int(len(self.cases["test"])),
            "val_cases": int(len(self.cases["val"])),
            "split_mode": self.config.split_mode,
            "split_seed": self.config.split_seed,
            "fingerprint": self.fingerprint,
        }


def pad_history(items: np.ndarray | list[int], window: int) -> np.ndarray:
    """The last `window` items, left-padded with PAD_ITEM: histories of any length from 0 up."""
    items = np.asarray(items, dtype=np.int32)[-window:] if window else np.zeros(0, dtype=np.int32)
    return np.concatenate([np.full(window - len(items), PAD_ITEM, dtype=np.int32), items])


def sort_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Ratings by user, then timestamp; ratings in the same second keep the file's order (a stable sort)."""
    order = np.lexsort((ratings["timestamp"].to_numpy(), ratings["user_id"].to_numpy()))
    return ratings.iloc[order].reset_index(drop=True)


def choose_catalogue(ratings: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The `size` most-rated movie ids (ties broken by the smaller id) and their rating counts."""
    movie_ids, counts = np.unique(ratings["movie_id"].to_numpy(), return_counts=True)
    order = np.lexsort((movie_ids, -counts))[:size]
    return movie_ids[order].astype(np.int32), counts[order].astype(np.int64)


def sequence_bounds(users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an array sorted by user: each user id, where its run starts, and how long it is."""
    user_ids, starts, lengths = np.unique(users, return_index=True, return_counts=True)
    return user_ids, starts, lengths


def cut_windows(
    items: np.ndarray, users: np.ndarray, starts: np.ndarray, lengths: np.ndarray, window: int, per_user: int
) -> Windows:
    """The most recent `per_user` windows of each sequence: `window` items, then the next one as the target."""
    counts = np.minimum(lengths - window, per_user).clip(min=0)
    first_target = starts + lengths - counts
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    targets = np.repeat(first_target, counts) + offsets
    histories = items[targets[:, None] - window + np.arange(window)]
    return Windows(histories.astype(np.int32), items[targets].astype(np.int32), np.repeat(users, counts).astype(np.int32))


def prefix_windows(dataset: Dataset, users: np.ndarray) -> Windows:
    """Every item after the first of each user's catalogue sequence, with the (up to `window`) items before it."""
    ratings = dataset.ratings
    rows = ratings[(ratings["item"] >= 0) & ratings["user_id"].isin(users)]
    items = rows["item"].to_numpy(dtype=np.int32)
    owners = rows["user_id"].to_numpy(dtype=np.int32)
    _, starts, lengths = sequence_bounds(owners)
    first = np.repeat(starts, lengths)
    targets = np.flatnonzero(np.arange(len(items)) > first)
    window = dataset.config.window
    positions = targets[:, None] - window + np.arange(window)
    histories = np.where(positions >= first[targets, None], items[positions.clip(min=0)], PAD_ITEM)
    return Windows(histories.astype(np.int32), items[targets], owners[targets])


def split_by_user(user_ids: np.ndarray, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Users shuffled with the seed and cut 70/15/15 (by default): no user is in two splits."""
    shuffled = np.random.default_rng(seed).permutation(user_ids)
    n_train = int(round(fractions[0] * len(shuffled)))
    n_val = int(round(fractions[1] * len(shuffled)))
    parts = np.split(shuffled, [n_train, n_train + n_val])
    return {name: np.sort(part) for name, part in zip(SPLITS, parts)}


def last_window_per_user(windows: Windows) -> Windows:
    """The most recent window of each user (windows are stored per user, oldest first)."""
    is_last = np.append(windows.users[1:] != windows.users[:-1], True) if len(windows) else np.zeros(0, bool)
    return windows.take(np.flatnonzero(is_last))


def build_dataset(ml: MovieLens, config: DataConfig) -> Dataset:
    """Turn the three tables into the catalogue, windows, split and cases described in docs/design.md §2."""
    ratings = sort_ratings(ml.ratings)
    catalogue, counts = choose_catalogue(ratings, config.catalogue_size)
    lookup = np.full(int(ml.movies.index.max()) + 1, -1, dtype=np.int32)
    lookup[catalogue] = np.arange(len(catalogue), dtype=np.int32)
    ratings["item"] = lookup[ratings["movie_id"].to_numpy()]

    kept = ratings[ratings["item"] >= 0]
    items, users = kept["item"].to_numpy(), kept["user_id"].to_numpy()
    user_ids, starts, lengths = sequence_bounds(users)
    eligible = lengths >= config.min_user_ratings
    all_windows = cut_windows(
        items, user_ids[eligible], starts[eligible], lengths[eligible], config.window, config.max_windows_per_user
    )

    split_users = split_by_user(user_ids[eligible], config.split_fractions, config.split_seed)
    if config.split_mode == "user":
        windows = {name: all_windows.take(np.flatnonzero(np.isin(all_windows.users, u))) for name, u in split_users.items()}
        cases = {name: last_window_per_user(windows[name]) for name in ("val", "test")}
    else:  # random-windows: the poster-like protocol, windows shuffled across users
        shuffled = np.random.default_rng(config.split_seed).permutation(len(all_windows))
        n_train = int(round(config.split_fractions[0] * len(shuffled)))
        n_val = int(round(config.split_fractions[1] * len(shuffled)))
        parts = np.split(shuffled, [n_train, n_train + n_val])
        windows = {name: all_windows.take(np.sort(part)) for name, part in zip(SPLITS, parts)}
        cases = {name: windows[name] for name in ("val", "test")}
        split_users = {name: np.unique(w.users) for name, w in windows.items()}
    return Dataset(
        config, ml.fingerprint, ml.movies, ml.users, ratings, catalogue, counts, user_ids[eligible], split_users, windows, cases
    )


# ---- on-disk cache -------------------------------------------------------------------------------------------------

_RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp", "item")


def cache_file(fingerprint: str, config: DataConfig) -> Path:
    key = hashlib.md5(json.dumps([CACHE_VERSION, fingerprint, config.as_dict()], sort_keys=True).encode()).hexdigest()
    return paths().dataset_cache / f"ml1m-{key[:16]}.npz"


def save_arrays(dataset: Dataset, target: Path) -> None:
    """Write the derived arrays atomically (temporary file, then rename)."""
    arrays = {f"ratings_{c}": dataset.ratings[c].to_numpy() for c in _RATING_COLUMNS}
    arrays |= {
        "catalogue": dataset.catalogue,
        "catalogue_counts": dataset.catalogue_counts,
        "eligible_users": dataset.eligible_users,
    }
    arrays |= {f"users_{name}": users for name, users in dataset.split_users.items()}
    for group, table in (("windows", dataset.windows), ("cases", dataset.cases)):
        for name, w in table.items():
            arrays |= {
                f"{group}_{name}_histories": w.histories,
                f"{group}_{name}_targets": w.targets,
                f"{group}_{name}_users": w.users,
            }
    write_npz(target, arrays)


def write_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays to an .npz file atomically (temporary file, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".npz.part")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def load_arrays(source: Path, folder: Path, fingerprint: str, config: DataConfig) -> Dataset:
    """Rebuild a Dataset from the cache file plus the small movies and users tables."""
    with np.load(source) as a:

        def windows(group: str, name: str) -> Windows:
            return Windows(a[f"{group}_{name}_histories"], a[f"{group}_{name}_targets"], a[f"{group}_{name}_users"])

        ratings = pd.DataFrame({c: a[f"ratings_{c}"] for c in _RATING_COLUMNS})
        return Dataset(
            config=config,
            fingerprint=fingerprint,
            movies=read_movies(folder / "movies.dat"),
            users=read_users(folder / "users.dat"),
            ratings=ratings,
            catalogue=a["catalogue"],
            catalogue_counts=a["catalogue_counts"],
            eligible_users=a["eligible_users"],
            split_users={name: a[f"users_{name}"] for name in SPLITS},
            windows={name: windows("windows", name) for name in SPLITS},
            cases={name: windows("cases", name) for name in ("val", "test")},
        )


def load_dataset(data_dir: str | Path | None = None, config: DataConfig | None = None, use_cache: bool = True) -> Dataset:
    """The built dataset for a MovieLens folder (see resolve_data_dir), from the cache when it is there."""
    config = config or DataConfig()
    folder = resolve_data_dir(data_dir)
    require_files(folder)
    fingerprint = fingerprint_files(folder)
    cached = cache_file(fingerprint, config)
    if use_cache and cached.is_file():
        try:
            return load_arrays(cached, folder, fingerprint, config)
        except (OSError, KeyError, ValueError) as error:
            log.warning("Ignoring unreadable dataset cache %s (%s); rebuilding", cached, error)
    dataset = build_dataset(read_movielens(folder, fingerprint), config)
    if use_cache:
        save_arrays(dataset, cached)
    return dataset


def describe_user(dataset: Dataset, user_id: int) -> dict:
    """Profile of a user with users.dat's codes decoded."""
    dataset.check_user(user_id)
    row = dataset.users.loc[user_id]
    return {
        "user_id": user_id,
        "gender": GENDERS[row["gender"]],
        "age": AGE_GROUPS.get(int(row["age"]), str(row["age"])),
        "occupation": OCCUPATIONS.get(int(row["occupation"]), str(row["occupation"])),
        "zip": row["zip"],
        "split": dataset.split_of(user_id),
    }
