"""Per-movie features for the sequential model: genre multi-hot vectors and title tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dualrec.data.dataset import Dataset
from dualrec.data.titles import encode_title, fit_title_vocabulary


@dataclass(frozen=True)
class CatalogueFeatures:
    """Row i describes catalogue item i."""

    vocabulary: dict[str, int]  # title word -> token id (0 pads, 1 is unknown)
    title_tokens: np.ndarray  # (C, max_tokens) int32, right-padded with 0
    genres: np.ndarray  # (C, 18) float32 multi-hot in config.GENRES order


def genre_matrix(movies: pd.DataFrame) -> np.ndarray:
    """(n, 18) float32 multi-hot genres of the given movies, in config.GENRES order."""
    return np.stack(movies["genre_vector"].to_numpy()).astype(np.float32)


def title_token_matrix(titles: list[str], vocabulary: dict[str, int], max_tokens: int) -> np.ndarray:
    return np.array([encode_title(t, vocabulary, max_tokens) for t in titles], dtype=np.int32).reshape(len(titles), max_tokens)


def catalogue_features(dataset: Dataset, vocabulary: dict[str, int] | None = None) -> CatalogueFeatures:
    """Features of the catalogue; the title vocabulary is fitted on the catalogue's titles unless one is given."""
    movies = dataset.catalogue_movies
    titles = movies["title"].tolist()
    vocabulary = vocabulary if vocabulary is not None else fit_title_vocabulary(titles)
    tokens = title_token_matrix(titles, vocabulary, dataset.config.title_max_tokens)
    return CatalogueFeatures(vocabulary, tokens, genre_matrix(movies))
