"""Reading MovieLens 1M's three `::`-separated files, validating every line as it goes.

A malformed line is an error that names the file and the line; a missing file says what is expected and how to get it.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.config import GENRES, ML1M_FILES, ML1M_URL
from dualrec.data.titles import display_title, split_year
from dualrec.errors import DataError

_GENRE_INDEX = {genre: i for i, genre in enumerate(GENRES)}


@dataclass(frozen=True)
class MovieLens:
    """The three tables of MovieLens 1M, as read from one folder.

    ratings: user_id, movie_id, rating, timestamp, in file order.
    movies: indexed by movie_id; raw_title, title (display form), year, genres (tuple), genre_vector (18 x 0/1).
    users: indexed by user_id; gender, age, occupation, zip.
    """

    folder: Path
    ratings: pd.DataFrame
    movies: pd.DataFrame
    users: pd.DataFrame
    fingerprint: str


def require_files(folder: Path) -> None:
    """Fail with a helpful message unless the folder holds all three MovieLens files."""
    missing = [name for name in ML1M_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{', '.join(missing)} not found in {folder}. Expected the MovieLens 1M files "
            f"{', '.join(ML1M_FILES)} (from {ML1M_URL}, unzipped). Point --data-dir or DUALREC_DATA_DIR at the "
            "folder that holds them, or set neither to download the dataset automatically."
        )


def fingerprint_files(folder: Path) -> str:
    """md5 over the three files' contents: the data identity written into caches and results."""
    digest = hashlib.md5()
    for name in ML1M_FILES:
        digest.update(name.encode())
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _split_lines(path: Path, fields: int) -> list[list[str]]:
    """Each line of a small `::` file as its fields; a line with the wrong count is an error naming it."""
    rows = []
    with open(path, encoding="latin-1") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("::")
            if len(parts) != fields:
                raise DataError(
                    f"{path}, line {number}: expected {fields} fields separated by '::', found {len(parts)}: {line[:80]!r}"
                )
            rows.append([number, *parts])
    return rows


def _as_int(path: Path, number: int, field: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}, line {number}: {field} must be a whole number, found {value!r}") from None


def read_movies(path: Path) -> pd.DataFrame:
    """movies.dat (latin-1): MovieID::Title (Year)::Genre|Genre."""
    records = []
    for number, movie_id, raw_title, genre_text in _split_lines(path, 3):
        genres = tuple(genre_text.split("|")) if genre_text else ()
        unknown = [g for g in genres if g not in _GENRE_INDEX]
        if unknown:
            raise DataError(f"{path}, line {number}: unknown genre {unknown[0]!r}; MovieLens 1M genres are {', '.join(GENRES)}")
        vector = np.zeros(len(GENRES), dtype=np.int8)
        vector[[_GENRE_INDEX[g] for g in genres]] = 1
        _, year = split_year(raw_title)
        records.append((_as_int(path, number, "MovieID", movie_id), raw_title, display_title(raw_title), year, genres, vector))
    movies = pd.DataFrame(records, columns=["movie_id", "raw_title", "title", "year", "genres", "genre_vector"])
    if movies["movie_id"].duplicated().any():
        raise DataError(f"{path}: MovieID {movies['movie_id'][movies['movie_id'].duplicated()].iloc[0]} appears twice")
    movies["year"] = movies["year"].astype("Int64")
    return movies.set_index("movie_id", drop=False).sort_index()


def read_users(path: Path) -> pd.DataFrame:
    """users.dat: UserID::Gender::Age::Occupation::Zip-code."""
    records = []
    for number, user_id, gender, age, occupation, zip_code in _split_lines(path, 5):
        if gender not in ("F", "M"):
            raise DataError(f"{path}, line {number}: gender must be F or M, found {gender!r}")
        records.append(
            (
                _as_int(path, number, "UserID", user_id),
                gender,
                _as_int(path, number, "Age", age),
                _as_int(path, number, "Occupation", occupation),
                zip_code,
            )
        )
    users = pd.DataFrame(records, columns=["user_id", "gender", "age", "occupation", "zip"])
    return users.set_index("user_id", drop=False).sort_index()


RATINGS_FIELDS = "UserID::MovieID::Rating::Timestamp"
RATINGS_LINE = re.compile(r"\d+::\d+::\d+::\d+")


def malformed_ratings(path: Path) -> DataError:
    """The error naming the first line of ratings.dat that is not four whole numbers separated by '::' (slow: a
    line-by-line scan, only once the fast reader has failed)."""
    with open(path, encoding="latin-1") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line and not RATINGS_LINE.fullmatch(line):
                return DataError(f"{path}, line {number}: expected {RATINGS_FIELDS} in whole numbers, found {line[:80]!r}")
    return DataError(f"{path}: unreadable; expected lines of {RATINGS_FIELDS} in whole numbers")


def read_ratings(path: Path) -> pd.DataFrame:
    """ratings.dat: UserID::MovieID::Rating::Timestamp, read with pandas' C parser and then validated."""
    try:
        with warnings.catch_warnings():  # a bad line mixes types in its column; it is reported below, not warned about
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            # Splitting on ':' turns '::' into an empty field between each pair of values: 7 columns, 4 of them data.
            raw = pd.read_csv(path, sep=":", header=None, engine="c", encoding="latin-1")
    except pd.errors.ParserError:
        raise malformed_ratings(path) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected lines of {RATINGS_FIELDS}") from None
    values = raw[[0, 2, 4, 6]] if raw.shape[1] == 7 else None
    if values is None or raw[[1, 3, 5]].notna().any(axis=None) or not all(map(pd.api.types.is_integer_dtype, values.dtypes)):
        raise malformed_ratings(path)
    ratings = pd.DataFrame(
        {
            "user_id": values[0].astype(np.int32),
            "movie_id": values[2].astype(np.int32),
            "rating": values[4].astype(np.int8),
            "timestamp": values[6].astype(np.int64),
        }
    )
    out_of_range = ~ratings["rating"].between(1, 5).to_numpy()
    if out_of_range.any():
        raise DataError(f"{path}, line {int(np.flatnonzero(out_of_range)[0]) + 1}: rating must be 1 to 5")
    return ratings


def check_references(ml: MovieLens) -> None:
    """Every rating must point at a known user and a known movie."""
    for column, table, name in (("movie_id", ml.movies, "movies.dat"), ("user_id", ml.users, "users.dat")):
        unknown = ~ml.ratings[column].isin(table.index).to_numpy()
        if unknown.any():
            line = int(np.flatnonzero(unknown)[0]) + 1
            raise DataError(
                f"{ml.folder / 'ratings.dat'}, line {line}: {column} {ml.ratings[column].iloc[line - 1]} is not in {name}"
            )


def read_movielens(folder: Path, fingerprint: str | None = None) -> MovieLens:
    """Read and validate the three files of one MovieLens 1M folder (fingerprint: its md5, if already known)."""
    folder = Path(folder)
    require_files(folder)
    ml = MovieLens(
        folder=folder,
        ratings=read_ratings(folder / "ratings.dat"),
        movies=read_movies(folder / "movies.dat"),
        users=read_users(folder / "users.dat"),
        fingerprint=fingerprint or fingerprint_files(folder),
    )
    check_references(ml)
    return ml
