"""SKNN, PO4ISR's session-based k-nearest neighbours: the source of the poster's "SLIM" row.

Session-kNN (Jannach and Ludewig, "When Recurrent Neural Networks meet the Neighborhood for Session-Based
Recommendation", RecSys 2017) as PO4ISR (Sun et al. 2023) runs it: github.com/llm4sr/PO4ISR,
`Non-LLM-Baselines/sess/model/sknn.py` with its test script `Non-LLM-Baselines/test.py` (RecBole has no SKNN). A
session's neighbours are training sessions sharing a movie with it; each movie of the `neighbours` most similar ones
scores the sum of their similarities.

What the reference does, each behind an option whose default reproduces it (docs/design.md §2, the poster protocol):
- `similarity="reference"`: `li / sqrt(la) * sqrt(lb)`, i.e. |A ∩ B| * sqrt(|B|) / sqrt(|A|) for a neighbour A and
  the session B (an operator-precedence slip for the cosine, `"cosine"`);
- `pool="reference"`: the pool of possible neighbours is never cleared: its test script scores the test sessions three
  times (for k = 1, 5 and 10) on one model, so from the second pass on (HR@5, HR@10) the pool holds every training
  session with the last movie of any test session. This system scores as that second pass does: one pass fills the
  pool, the next scores. `"session"`: the sessions holding a movie of the session's own history (session-rec's SKNN);
- `order="candidates"`: the ranking is the candidates that have a score, in the order the candidate list gives them
  (the reference's list is filtered, never sorted by score); `"score"` ranks them by score. Only `score_candidates`
  sees a candidate order; `score` (the project's full and sampled protocols) always ranks by score.
A pool larger than `sample_size` is sampled at random (the reference's unseeded `random.sample`; here seeded).
On PO4ISR's published ML-1M files (150 training sessions, candidate seed 2023) this gives exactly the poster's row.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dualrec.config import AT_LEAST_1, SEED, check_options, option
from dualrec.data.dataset import PAD_ITEM, Dataset, sequence_bounds

SIMILARITIES = ("reference", "cosine")
POOLS = ("reference", "session")
ORDERS = ("candidates", "score")


@dataclass(frozen=True)
class SKNNOptions:
    """PO4ISR's SKNN settings for ML-1M (its config.py: 50 neighbours; sknn.py: samples of 1,000, random)."""

    neighbours: int = option(50, bounds=AT_LEAST_1)
    sample_size: int = option(1000, bounds=AT_LEAST_1)
    similarity: str = option("reference", choices=SIMILARITIES)
    pool: str = option("reference", choices=POOLS)
    order: str = option("candidates", choices=ORDERS)
    seed: int = option(0, bounds=SEED)

    def __post_init__(self) -> None:
        check_options(self, "SKNN")


def training_sessions(dataset: Dataset) -> list[list[int]]:
    """Each training user's catalogue sequence (a session of the poster protocol), oldest first."""
    ratings = dataset.ratings
    rows = ratings[(ratings["item"] >= 0) & ratings["user_id"].isin(dataset.split_users["train"])]
    _, starts, _ = sequence_bounds(rows["user_id"].to_numpy())
    return [part.tolist() for part in np.split(rows["item"].to_numpy(), starts[1:])]


def similarity(neighbour: set[int], session: set[int], kind: str) -> float:
    common = len(neighbour & session)
    if kind == "reference":
        return common / math.sqrt(len(neighbour)) * math.sqrt(len(session))
    return common / math.sqrt(len(neighbour) * len(session))


class SKNN:
    """Session-kNN over the training sessions; scores every catalogue item (0 where no neighbour holds it)."""

    def __init__(self, name: str = "sknn", options: SKNNOptions | None = None) -> None:
        self.name = name
        self.settings = options or SKNNOptions()
        self.sessions: list[set[int]] = []
        self.by_item: dict[int, set[int]] = {}
        self.catalogue_size = 0

    @property
    def options(self) -> dict:
        return {"model": "SKNN (PO4ISR)", **self.settings.__dict__}

    def fit(self, dataset: Dataset) -> None:
        self.catalogue_size = dataset.catalogue_size
        self.sessions = [set(items) for items in training_sessions(dataset)]
        self.by_item = {}
        for index, items in enumerate(self.sessions):
            for item in items:
                self.by_item.setdefault(item, set()).add(index)

    def neighbours(self, pool: set[int], session: set[int], rng: random.Random) -> list[tuple[int, float]]:
        """The most similar sessions of the pool (sampled down to sample_size), ties in the pool's order."""
        if len(pool) > self.settings.sample_size:
            pool = rng.sample(tuple(pool), self.settings.sample_size)
        scored = [(index, similarity(self.sessions[index], session, self.settings.similarity)) for index in pool]
        scored = sorted((pair for pair in scored if pair[1] > 0), key=lambda pair: pair[1], reverse=True)
        return scored[: self.settings.neighbours]

    def session_pool(self, history: Sequence[int]) -> set[int]:
        return set().union(*(self.by_item.get(item, set()) for item in history))

    def score(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        histories = [[int(item) for item in row if item != PAD_ITEM] for row in np.asarray(histories)]
        scores = np.zeros((len(histories), self.catalogue_size), dtype=np.float64)
        rng = random.Random(self.settings.seed)
        known = [row for row, history in enumerate(histories) if history and history[-1] in self.by_item]
        pool: set[int] = set()
        if self.settings.pool == "reference":  # the reference's first pass, which leaves the pool full
            for row in known:
                pool = self.grown(pool, histories[row][-1])
        for row in known:
            history = histories[row]
            if self.settings.pool == "reference":
                pool = self.grown(pool, history[-1])
            current = pool if self.settings.pool == "reference" else self.session_pool(history)
            for index, weight in self.neighbours(current, set(history), rng):
                for item in self.sessions[index]:
                    scores[row, item] += weight
        return scores

    def grown(self, pool: set[int], item: int) -> set[int]:
        """The reference's pool after a session ending in `item`: united with that movie's sessions twice, as its
        possible_neighbor_sessions does (each union a new set, whose order decides ties among neighbours)."""
        pool = pool | self.by_item[item]
        return pool | self.by_item[item]

    def score_candidates(self, histories: np.ndarray, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n, m) scores of each case's candidates; with order="candidates", the reference's ranking: the candidates
        that have a score, first in the given order highest, then the others (0, tied)."""
        scores = np.take_along_axis(self.score(histories, users), np.asarray(candidates), axis=1)
        if self.settings.order == "score":
            return scores
        return np.where(scores > 0, scores.shape[1] - np.arange(scores.shape[1]), 0).astype(np.float64)
