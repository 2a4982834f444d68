"""An imported history (dualrec.grounding.history_import) as the Recommend page shows it, without Streamlit: the
builder's history it gives, and its matched, ambiguous and missing rows as tables."""

from __future__ import annotations

import pandas as pd

from dualrec.app.tables import MAX_HISTORY, movie_label
from dualrec.data.dataset import Dataset
from dualrec.grounding.history_import import HistoryImport, ImportedRow


def builder_history(dataset: Dataset, imported: HistoryImport) -> tuple[list[int], int]:
    """The history builder's movies from an import: its last MAX_HISTORY catalogue movies (the LSTM reads only
    those), oldest first; and how many matched movies are outside the catalogue."""
    movie_ids = imported.movie_ids
    inside = [movie for movie, item in zip(movie_ids, dataset.item_of(movie_ids)) if item >= 0]
    return inside[-MAX_HISTORY:], len(movie_ids) - len(inside)


def _row(row: ImportedRow) -> dict:
    return {"line": row.line, "written": row.written, "date": row.date, "rating": row.rating}


def matched_table(dataset: Dataset, imported: HistoryImport, history: list[int]) -> pd.DataFrame:
    """The matched rows in date order: as written, the MovieLens movie, and whether it is in the catalogue and the
    builder's history."""
    rows = imported.matched
    movies = [row.movie_id for row in rows]
    catalogue = dataset.item_of(movies) >= 0 if rows else []
    return pd.DataFrame(
        [
            _row(row) | {"movie": movie_label(dataset.movies, movie), "catalogue": bool(inside), "in history": movie in history}
            for row, movie, inside in zip(rows, movies, catalogue)
        ],
        columns=["line", "written", "date", "rating", "movie", "catalogue", "in history"],
    )


def missing_table(imported: HistoryImport) -> pd.DataFrame:
    """The rows that name no MovieLens movie, and why when it is not only that (a series, not a film)."""
    return pd.DataFrame(
        [_row(row) | {"note": row.note or "not in MovieLens"} for row in imported.missing],
        columns=["line", "written", "date", "rating", "note"],
    )
