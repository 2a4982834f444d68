"""Genre profiles of movie lists and how much two lists overlap in genre (the app's overlap view, the LLM metrics)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from dualrec.config import GENRES


def genre_vectors(movies: pd.DataFrame, movie_ids: list[int]) -> np.ndarray:
    """(n, 18) multi-hot genres of the given movies (ids must be in `movies`), in config.GENRES order."""
    if not movie_ids:
        return np.zeros((0, len(GENRES)), dtype=np.float32)
    return np.stack(movies.loc[list(movie_ids), "genre_vector"].to_numpy()).astype(np.float32)


def genre_profile(vectors: np.ndarray) -> np.ndarray:
    """Share of each genre among a list's genre labels (sums to 1; all zeros for an empty list)."""
    totals = vectors.sum(axis=0)
    return totals / totals.sum() if totals.sum() else totals


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two genre profiles; 0 when either is empty."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm else 0.0


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard overlap of the genre sets behind two profiles; 0 when both are empty."""
    left, right = a > 0, b > 0
    union = int((left | right).sum())
    return int((left & right).sum()) / union if union else 0.0


def intra_list_similarity(vectors: np.ndarray) -> float | None:
    """Mean pairwise cosine similarity of a list's genre vectors (homogeneity); None for fewer than two movies."""
    pairs = [cosine(vectors[i], vectors[j]) for i, j in combinations(range(len(vectors)), 2)]
    return float(np.mean(pairs)) if pairs else None


def overlap_table(movies: pd.DataFrame, history: list[int], lists: dict[str, list[int]]) -> pd.DataFrame:
    """For each named list of movie ids: its genre profile, and its cosine and Jaccard overlap with the history's."""
    reference = genre_profile(genre_vectors(movies, history))
    rows = []
    for name, movie_ids in {"history": history, **lists}.items():
        profile = genre_profile(genre_vectors(movies, movie_ids))
        rows.append(
            {
                "list": name,
                "movies": len(movie_ids),
                "cosine": cosine(reference, profile),
                "jaccard": jaccard(reference, profile),
                **dict(zip(GENRES, profile)),
            }
        )
    return pd.DataFrame(rows)
