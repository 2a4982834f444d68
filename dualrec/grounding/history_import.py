"""A history from a file a person already has: a Letterboxd export (ratings.csv, diary.csv, watched.csv), an IMDb
ratings export (ratings.csv) or a plain list of titles (one a line, an optional year), detected from its header.

Each row is matched to MovieLens with the project's matcher (dualrec.grounding.matching, precision first) and the rows
are put in the file's date order (Letterboxd's Watched Date, else its Date; IMDb's Date Rated; a list keeps its line
order). The result says which rows matched, which are ambiguous (a title without a year that names several movies:
the choices, to pick from) and which are not in MovieLens (listed, never guessed).

    imported = read_history_file("diary.csv", dataset)
    imported.matched, imported.ambiguous, imported.missing
    imported.choose(line, movie_id).movie_ids   # the history: matched movies, oldest first, each movie once
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path

from dualrec.data.dataset import Dataset
from dualrec.data.titles import split_year
from dualrec.errors import DualrecError
from dualrec.grounding.matching import TitleIndex, title_index

MAX_BYTES = 5_000_000  # a 10,000-film IMDb export is about 2 MB
MAX_ROWS = 10_000  # about 15 s to look up when none of them is in MovieLens
LETTERBOXD = ("Name", "Year", "Letterboxd URI")
IMDB = ("Const", "Title")
EXPECTED = (
    "a Letterboxd export (Date, Name, Year, Letterboxd URI, Rating), an IMDb ratings export (Const, Your Rating, "
    "Date Rated, Title, ..., Year) or a plain list of titles, one a line (a .txt file)"
)
# IMDb title types that are films (older exports write "movie", newer ones "Movie"); the rest are never in MovieLens.
IMDB_FILMS = {"movie", "tvmovie", "tv movie", "video", ""}
_MARKER = re.compile(r"^(?:[-*•]|\d{1,4}[.)])\s+")  # "1. Heat", "- Heat"
_TRAILING_YEAR = re.compile(r"^(?P<title>.+?)\s*[,;\t|]\s*(?P<year>\d{4})$")  # "Heat, 1995", "Heat\t1995"
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")


@dataclass(frozen=True)
class ImportedRow:
    """One row of the file, and the MovieLens movie it names (movie_id None: ambiguous, or not in MovieLens)."""

    line: int  # the row's line in the file (1 is the first line)
    title: str
    year: int | None
    date: dt.date | None = None
    rating: float | None = None  # as the file gives it (Letterboxd 0.5-5, IMDb 1-10)
    movie_id: int | None = None
    choices: tuple[int, ...] = ()  # an ambiguous title's movies, the most rated first
    note: str | None = None  # why a row was not looked up ("an IMDb tvSeries")

    @property
    def written(self) -> str:
        """The title as the file writes it, with its year."""
        return f"{self.title} ({self.year})" if self.year else self.title

    @property
    def ambiguous(self) -> bool:
        return self.movie_id is None and len(self.choices) > 1


@dataclass(frozen=True)
class HistoryImport:
    """The rows of one file in date order, matched to MovieLens."""

    name: str  # the file's name
    source: str  # "Letterboxd diary", "IMDb ratings", "list of titles"
    rows: tuple[ImportedRow, ...]

    @property
    def matched(self) -> list[ImportedRow]:
        return [row for row in self.rows if row.movie_id is not None]

    @property
    def ambiguous(self) -> list[ImportedRow]:
        return [row for row in self.rows if row.ambiguous]

    @property
    def missing(self) -> list[ImportedRow]:
        """Rows that name no MovieLens movie (or are not films)."""
        return [row for row in self.rows if row.movie_id is None and not row.ambiguous]

    @property
    def movie_ids(self) -> list[int]:
        """The matched movies, oldest first; a movie seen again keeps its first place."""
        return list(dict.fromkeys(row.movie_id for row in self.matched))

    def choose(self, line: int, movie_id: int) -> HistoryImport:
        """The import with an ambiguous row resolved to one of its choices."""
        rows = list(self.rows)
        for position, row in enumerate(rows):
            if row.line == line:
                if movie_id not in row.choices:
                    raise DualrecError(f"Movie {movie_id} is not one of the choices for {row.written!r} (line {line}).")
                rows[position] = dataclasses.replace(row, movie_id=movie_id)
                return dataclasses.replace(self, rows=tuple(rows))
        raise DualrecError(f"{self.name} has no row at line {line}.")

    def summary(self) -> str:
        """One line: the format, how many rows matched, were ambiguous or are not in MovieLens."""
        matched, movies = len(self.matched), len(self.movie_ids)
        again = f" ({movies} movies: {matched - movies} seen again)" if movies < matched else ""
        return (
            f"{self.name} ({self.source}): {len(self.rows)} rows, {matched} matched{again}, {len(self.ambiguous)} "
            f"ambiguous, {len(self.missing)} not in MovieLens."
        )

    def report(self, source: Dataset | TitleIndex) -> list[str]:
        """The summary, then the ambiguous rows with their choices and the rows not in MovieLens, when there are any."""
        titles = title_index(source).raw_titles
        lines = [self.summary()]
        if self.ambiguous:
            choices = (f"{row.written} (line {row.line}): {', '.join(titles[m] for m in row.choices)}" for row in self.ambiguous)
            lines.append(f"Ambiguous, left out (add the year to choose): {'; '.join(choices)}")
        if self.missing:
            missing = (f"{row.written} (line {row.line}{', ' + row.note if row.note else ''})" for row in self.missing)
            lines.append(f"Not in MovieLens: {'; '.join(missing)}")
        return lines

    def history(self) -> list[int]:
        """`movie_ids`, or a DualrecError when no row names a MovieLens movie."""
        if not self.movie_ids:
            raise DualrecError(f"No row of {self.name} names a MovieLens movie: {self.summary()}")
        return self.movie_ids


def read_history_file(path: str | Path, source: Dataset | TitleIndex) -> HistoryImport:
    """Import a history file from disk (see the module docstring); a bad file is one DualrecError naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise DualrecError(too_big(path.name, size))
        data = path.read_bytes()
    except OSError as error:
        raise DualrecError(f"Cannot read the history file {path}: {error.strerror or error}.") from None
    return import_history(path.name, data, source)


def import_history(name: str, data: bytes, source: Dataset | TitleIndex) -> HistoryImport:
    """Import a history file's bytes: detect the format, read the rows, match them, put them in date order."""
    kind, rows = parse_history(name, data)
    index = title_index(source)
    return HistoryImport(name, kind, tuple(match_row(index, row) for row in date_order(rows)))


def too_big(name: str, size: int) -> str:
    return f"Cannot import {name}: {size / 1e6:.1f} MB is more than a history file holds (at most {MAX_BYTES / 1e6:g} MB)."


def parse_history(name: str, data: bytes) -> tuple[str, list[ImportedRow]]:
    """The format of a history file and its rows in file order (not matched); DualrecError when it is none of them."""
    if len(data) > MAX_BYTES:
        raise DualrecError(too_big(name, len(data)))
    text = decode(name, data)
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DualrecError(f"Cannot import {name}: the file is empty. Expected {EXPECTED}.")
    header = next(csv.reader([lines[0]]))
    columns = {column.strip() for column in header}
    if set(LETTERBOXD) <= columns:
        kind, rows = letterboxd_rows(text)
    elif set(IMDB) <= columns:
        kind, rows = "IMDb ratings", imdb_rows(text)
    elif name.lower().endswith((".csv", ".tsv")):
        raise DualrecError(f"Cannot import {name}: its columns ({', '.join(header)[:200]}) are not those of {EXPECTED}.")
    else:
        kind, rows = "list of titles", list_rows(lines)
    if not rows:
        raise DualrecError(f"Cannot import {name}: it has a header but no rows.")
    if len(rows) > MAX_ROWS:
        raise DualrecError(f"Cannot import {name}: {len(rows):,} rows are more than a history holds (at most {MAX_ROWS:,}).")
    return kind, rows


def decode(name: str, data: bytes) -> str:
    """UTF-8 text (a byte-order mark dropped), else Latin-1; DualrecError for a binary file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if _CONTROL.search(text[:10_000]):
        raise DualrecError(f"Cannot import {name}: it is not a text file. Expected {EXPECTED}.")
    return text


def csv_records(text: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a CSV text, the header's names stripped."""
    reader = csv.DictReader(io.StringIO(text))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    records = []
    for row in reader:
        line = reader.line_num
        records.append((line, {key: (value or "").strip() for key, value in row.items() if isinstance(value, str)}))
    return records


def letterboxd_rows(text: str) -> tuple[str, list[ImportedRow]]:
    """A Letterboxd export's rows: a diary (Watched Date) or ratings / watched / reviews (Date)."""
    records = csv_records(text)
    diary = any("Watched Date" in row for _, row in records)
    rows = [
        ImportedRow(
            line,
            row["Name"],
            year_of(row.get("Year")),
            date_of(row.get("Watched Date")) or date_of(row.get("Date")),
            number_of(row.get("Rating")),
        )
        for line, row in records
        if row.get("Name")
    ]
    return ("Letterboxd diary" if diary else "Letterboxd ratings"), rows


def imdb_rows(text: str) -> list[ImportedRow]:
    """An IMDb ratings export's rows; titles that are not films (series, episodes, games) are noted, not looked up."""
    rows = []
    for line, row in csv_records(text):
        if not row.get("Title"):
            continue
        kind = row.get("Title Type", "")
        note = None if kind.lower() in IMDB_FILMS else f"an IMDb {kind}, not a film"
        date = date_of(row.get("Date Rated")) or date_of(row.get("Created"))
        rows.append(ImportedRow(line, row["Title"], year_of(row.get("Year")), date, number_of(row.get("Your Rating")), note=note))
    return rows


def list_rows(lines: list[str]) -> list[ImportedRow]:
    """A plain list's rows: one title a line, an optional list marker, an optional year ("Heat (1995)", "Heat, 1995")."""
    rows = []
    for number, line in enumerate(lines, start=1):
        text = _MARKER.sub("", line.strip()).strip()
        if not text or text.startswith("#"):
            continue
        title, year = split_year(text)
        if year is None and (trailing := _TRAILING_YEAR.match(text)):
            title, year = trailing["title"], int(trailing["year"])
        rows.append(ImportedRow(number, title, year))
    return rows


def year_of(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) == 4 else None


def number_of(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def date_of(text: str | None) -> dt.date | None:
    """An ISO date ("2023-04-01", as both exports write it), else None."""
    try:
        return dt.date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def date_order(rows: list[ImportedRow]) -> list[ImportedRow]:
    """Rows oldest first: a newest-first file (IMDb's) is read backwards, then the rows are sorted stably by date; an
    undated row stays behind the dated row before it."""
    dates = [row.date for row in rows if row.date]
    later = sum(b > a for a, b in zip(dates, dates[1:]))
    earlier = sum(b < a for a, b in zip(dates, dates[1:]))
    ordered = rows[::-1] if earlier > later else rows
    keys, last = [], dt.date.min
    for row in ordered:
        last = row.date or last
        keys.append(last)
    return [row for _, row in sorted(zip(keys, ordered), key=lambda pair: pair[0])]


def match_row(index: TitleIndex, row: ImportedRow) -> ImportedRow:
    """The row with its MovieLens movie, or its choices when the title names several movies equally well."""
    if row.note:
        return row
    found = index.namesakes(row.title, row.year)
    if len(found) == 1:
        return dataclasses.replace(row, movie_id=found[0])
    return dataclasses.replace(row, choices=tuple(found))
