"""The one interface every scoring system implements, so the harness can rank them all on the same cases."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from dualrec.data.dataset import Dataset


@runtime_checkable
class Recommender(Protocol):
    """A system that scores every catalogue item for a batch of histories.

    histories: (n, window) int32 catalogue items, oldest first, left-padded with dataset.PAD_ITEM.
    users: (n,) MovieLens user ids (systems that ignore users may ignore them).
    Returns (n, catalogue_size) float scores; higher is better. The harness, not the system, excludes watched
    movies and applies the protocol (full ranking or sampled candidates).
    """

    name: str

    def fit(self, dataset: Dataset) -> None:
        """Learn from the training split only (dataset.windows['train']; validation for early stopping)."""

    def score(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        """Scores over the catalogue for each history."""
