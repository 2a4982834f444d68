"""The interfaces of the systems the harness ranks on the same cases: one scores every catalogue item
(`Recommender`), one answers each case with a ranked list (`ListRecommender`), and one ranks a candidate set per case,
its own or a sampled protocol's (`CandidateRanker`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from dualrec.data.dataset import Dataset, Windows

Progress = Callable[[str], None]  # what a long run says while it runs (a line at a time)


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


@runtime_checkable
class Reranker(Recommender, Protocol):
    """A scoring system that re-orders the top `depth` items of another system, its `baseline` (the hybrid: the
    LSTM's top N re-ranked by an LLM). Its `score` ranks under `full`; under a sampled protocol the harness asks it to
    score the protocol's own candidates instead, and each of its rows carries the paired comparison with its baseline
    on the same cases."""

    baseline: Recommender
    depth: int

    def score_candidates(self, histories: np.ndarray, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n, m) scores of each case's m candidate items (given in no meaningful order); higher is better."""


@dataclass(frozen=True)
class RankedLists:
    """A list system's answer to a split's cases."""

    cases: Windows  # the cases answered: those given, or a subsample the system drew from them
    lists: list[list[int]]  # per case, catalogue items best first, none the user watched before the target
    figures: dict = field(default_factory=dict)  # what the ranks do not show (e.g. a hallucination rate)
    options: dict = field(default_factory=dict)  # how this run was made, beside the system's options (e.g. its engine)
    seconds: dict = field(default_factory=dict)  # where the time went


@runtime_checkable
class ListRecommender(Protocol):
    """A system that answers each case with one ranked list of catalogue items (an LLM's matched answer), which the
    harness ranks under the `freeform` protocol."""

    name: str
    options: dict  # how it is set up

    def rank_cases(self, dataset: Dataset, cases: Windows, progress: Progress) -> RankedLists:
        """One ranked list per case of `cases` (or of a subsample of them), and the system's own figures."""


@runtime_checkable
class CandidateRanker(Protocol):
    """A list system that ranks a set of candidates per case (NIR): under `full` it finds its own candidates, under a
    sampled protocol it is given the protocol's (the target and its negatives, in item order, so that their order says
    nothing). The harness ranks its lists under both scored protocols, a sampled one on the first `negative_seeds` of
    the data's negative draws (None: all of them; each draw is a whole run of the system)."""

    name: str
    options: dict
    negative_seeds: int | None

    def rank_candidates(
        self, dataset: Dataset, cases: Windows, candidates: np.ndarray | None = None, progress: Progress | None = None
    ) -> RankedLists:
        """One ranked list per case of `cases` (all of them): of its own candidates (None) or of the given (n, m) items."""
