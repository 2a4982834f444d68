"""MostPop: every user gets the movies most rated by the training users, the floor every system must clear."""

from __future__ import annotations

import numpy as np

from dualrec.data.dataset import Dataset


class MostPop:
    """Scores each catalogue movie by its number of ratings from training users (the same list for everyone)."""

    options = {"counts": "ratings by training users"}

    def __init__(self, name: str = "mostpop") -> None:
        self.name = name
        self.counts = np.zeros(0, dtype=np.float32)

    def fit(self, dataset: Dataset) -> None:
        ratings = dataset.ratings
        rows = ratings[(ratings["item"] >= 0) & ratings["user_id"].isin(dataset.split_users["train"])]
        self.counts = np.bincount(rows["item"].to_numpy(), minlength=dataset.catalogue_size).astype(np.float32)

    def score(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        return np.tile(self.counts, (len(histories), 1))
