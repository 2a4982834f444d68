"""SKNN (dualrec.ranking.baselines.sknn): PO4ISR's session-kNN, its three reference behaviours and their alternatives,
worked out by hand on four training sessions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dualrec.data.dataset import PAD_ITEM
from dualrec.errors import ConfigError
from dualrec.evaluation.harness import evaluate
from dualrec.ranking.baselines.sknn import SKNN, SKNNOptions
from dualrec.ranking.registry import new_system

TRAINING = [[0, 1, 2], [1, 3], [4, 5], [2, 6, 7, 8]]  # sessions S0..S3 of catalogue items 0..9


def fitted(**options) -> SKNN:
    rows = [(user, item) for user, items in enumerate(TRAINING) for item in items]
    data = SimpleNamespace(
        catalogue_size=10,
        ratings=pd.DataFrame(rows, columns=["user_id", "item"]),
        split_users={"train": np.arange(len(TRAINING))},
    )
    model = SKNN(options=SKNNOptions(**options))
    model.fit(data)
    return model


def histories(*rows: list[int], width: int = 4) -> np.ndarray:
    return np.array([[PAD_ITEM] * (width - len(row)) + row for row in rows])


def test_the_reference_similarity_and_its_cosine():
    """History {0, 1} against S0 = {0, 1, 2} (2 shared) and S1 = {1, 3} (1 shared)."""
    reference = fitted().score(histories([0, 1]), None)[0]
    s0, s1 = 2 / math.sqrt(3) * math.sqrt(2), 1 / math.sqrt(2) * math.sqrt(2)  # |A ∩ B| * sqrt(|B|) / sqrt(|A|)
    assert reference[[0, 1, 2, 3]] == pytest.approx([s0, s0 + s1, s0, s1]) and not reference[4:].any()
    cosine = fitted(similarity="cosine").score(histories([0, 1]), None)[0]
    assert cosine[[0, 1, 3]] == pytest.approx([2 / math.sqrt(6), 2 / math.sqrt(6) + 0.5, 0.5])


def test_only_the_most_similar_neighbours_score():
    scores = fitted(neighbours=1).score(histories([0, 1]), None)[0]
    assert np.flatnonzero(scores).tolist() == [0, 1, 2]  # S0 alone: S1's movie 3 scores nothing


def test_the_reference_pool_holds_the_sessions_of_every_cases_last_movie():
    """History (6, 4) ends in 4, held only by S2; S3 shares its 6. The reference's pool, filled by a first pass over
    all the cases, holds S3 when another case ends in a movie of S3 (2), later cases too; session-rec's pool always."""
    alone, with_later = histories([6, 4]), histories([6, 4], [7, 2])
    assert np.flatnonzero(fitted().score(alone, None)[0]).tolist() == [4, 5]
    assert np.flatnonzero(fitted().score(with_later, None)[0]).tolist() == [2, 4, 5, 6, 7, 8]
    assert np.flatnonzero(fitted(pool="session").score(alone, None)[0]).tolist() == [2, 4, 5, 6, 7, 8]


def test_a_last_movie_no_training_session_holds_scores_nothing():
    assert not fitted().score(histories([0, 9]), None).any()


def test_the_reference_orders_the_scored_candidates_as_the_list_gives_them():
    candidates = np.array([[3, 2, 9, 1]])  # by score 1 is first (S0 + S1), then 2, then 3; 9 has no score
    by_list = fitted().score_candidates(histories([0, 1]), None, candidates)[0]
    assert by_list.tolist() == [4.0, 3.0, 0.0, 1.0]  # 3, 2, 1 in the list's order, 9 last
    by_score = fitted(order="score").score_candidates(histories([0, 1]), None, candidates)[0]
    assert np.argsort(-by_score).tolist() == [3, 1, 0, 2]


def test_a_pool_larger_than_the_sample_is_sampled_with_the_seed():
    first = fitted(sample_size=1, pool="session").score(histories([0, 1], [1, 2]), None)
    again = fitted(sample_size=1, pool="session").score(histories([0, 1], [1, 2]), None)
    assert np.array_equal(first, again) and (first > 0).sum(axis=1).max() <= 4  # one neighbour's movies per case


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="Invalid SKNN options: neighbours must be at least 1, not 0; order must be one of"):
        SKNNOptions(neighbours=0, order="random")


def test_sknn_is_a_registered_system_under_the_projects_protocols(dataset):
    assert isinstance(new_system("sknn"), SKNN)
    row = evaluate(["sknn"], dataset, ["full"], samples=50)["results"][0]
    assert row["system"] == "sknn" and 0 < row["metrics"]["HR@10"]["value"] <= 1
