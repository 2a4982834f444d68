"""The paired comparison of two systems on the same cases, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from dualrec.errors import DualrecError
from dualrec.evaluation.metrics import summarise
from dualrec.evaluation.significance import COMPARED, mcnemar_exact, paired_comparison

BASELINE = np.array([1, 3, 7, 20, np.inf])
SYSTEM = np.array([2, 1, 7, 4, 6])


def hits(pattern: str) -> np.ndarray:
    return np.array([c == "1" for c in pattern])


@pytest.mark.parametrize(
    ("baseline_only", "system_only", "p_value"),
    [
        (1, 9, 22 / 1024),  # 2 * (C(10,0) + C(10,1)) / 2^10
        (2, 8, 112 / 1024),  # 2 * (1 + 10 + 45) / 2^10
        (0, 6, 2 / 64),
        (6, 0, 2 / 64),
        (3, 3, 1.0),  # 2 * P(X <= 3) > 1: capped
        (0, 0, 1.0),  # no discordant pair: no evidence either way
        (0, 1, 1.0),
    ],
)
def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_pairs(baseline_only: int, system_only: int, p_value: float) -> None:
    both, neither = 4, 5  # concordant pairs do not count
    baseline = np.r_[np.ones(both), np.zeros(neither), np.ones(baseline_only), np.zeros(system_only)]
    system = np.r_[np.ones(both), np.zeros(neither), np.zeros(baseline_only), np.ones(system_only)]
    result = mcnemar_exact(baseline, system)
    assert result == {"baseline_only": baseline_only, "system_only": system_only, "p_value": pytest.approx(p_value, abs=1e-12)}


def test_mcnemar_on_many_cases_is_small_for_a_one_sided_pattern() -> None:
    result = mcnemar_exact(hits("0" * 30 + "1" * 5), hits("1" * 30 + "1" * 5))
    assert result["system_only"] == 30 and result["p_value"] == pytest.approx(2 / 2**30)


def test_the_paired_differences_by_hand() -> None:
    comparison = paired_comparison(BASELINE, SYSTEM)
    assert list(comparison) == [*COMPARED, "mcnemar"]
    # HR@1: the baseline hits case 0, the system case 1; HR@5: both hit cases 0 and 1, the system also case 3.
    assert comparison["HR@1"] | {"low": 0, "high": 0} == {"baseline": 0.2, "system": 0.2, "difference": 0.0, "low": 0, "high": 0}
    assert comparison["HR@5"]["baseline"] == pytest.approx(0.4) and comparison["HR@5"]["system"] == pytest.approx(0.6)
    assert comparison["HR@5"]["difference"] == pytest.approx(0.2)
    assert comparison["HR@10"]["difference"] == pytest.approx(0.4)  # cases 3 and 4; case 2 (rank 7) hit by both
    ndcg5 = [1 / np.log2(3) - 1, 1 - 1 / np.log2(4), 0, 1 / np.log2(5), 0]  # rank 6: outside the top 5
    assert comparison["NDCG@5"]["difference"] == pytest.approx(np.mean(ndcg5))
    for name in COMPARED:  # the same metric code as the scoreboard
        assert comparison[name]["system"] == pytest.approx(summarise(SYSTEM)[name]["value"])
        assert comparison[name]["baseline"] == pytest.approx(summarise(BASELINE)[name]["value"])
        assert comparison[name]["low"] <= comparison[name]["difference"] <= comparison[name]["high"]
    assert comparison["mcnemar"] == [{"metric": "HR@5", "baseline_only": 0, "system_only": 1, "p_value": 1.0}]


def test_the_bootstrap_resamples_cases_in_pairs() -> None:
    baseline = np.arange(1, 101, dtype=float)  # the per-case values vary: each system's own mean moves with resampling
    identical = paired_comparison(baseline, baseline.copy())
    assert all(identical[name]["low"] == identical[name]["high"] == 0 for name in COMPARED)  # their difference never does


def test_the_interval_is_seeded_and_narrows_with_more_cases() -> None:
    rng = np.random.default_rng(3)
    baseline, system = rng.integers(1, 30, size=400).astype(float), rng.integers(1, 20, size=400).astype(float)
    first = paired_comparison(baseline, system, seed=1)
    assert paired_comparison(baseline, system, seed=1) == first
    assert paired_comparison(baseline, system, seed=2)["HR@5"] != first["HR@5"]
    fewer = paired_comparison(baseline[:50], system[:50], seed=1)
    assert first["HR@5"]["high"] - first["HR@5"]["low"] < fewer["HR@5"]["high"] - fewer["HR@5"]["low"]
    assert first["HR@5"]["low"] > 0  # the system ranks from a shorter range: clearly better


def test_repeats_average_per_case_and_test_each_repeat() -> None:
    baseline = np.array([[1, 9, 3], [6, 9, 3]], dtype=float)
    system = np.array([[1, 2, 9], [1, 2, 9]], dtype=float)
    comparison = paired_comparison(baseline, system)
    assert comparison["HR@5"]["difference"] == pytest.approx(np.mean([0.5, 1, -1]))
    assert [test["system_only"] for test in comparison["mcnemar"]] == [1, 2]
    assert [test["baseline_only"] for test in comparison["mcnemar"]] == [1, 1]


@pytest.mark.parametrize(
    ("baseline", "system", "message"),
    [
        (np.array([1, 2, 3]), np.array([1, 2]), r"same cases: got shapes \(1, 3\) and \(1, 2\)"),
        (np.ones((2, 3)), np.ones(3), "same cases"),
        (np.array([]), np.array([]), "at least one case"),
        (np.array([0, 2]), np.array([1, 2]), "ranks count from 1"),
        (np.array([1, 2]), np.array([1, np.nan]), "ranks count from 1"),
    ],
)
def test_unpaired_or_impossible_ranks_are_refused(baseline: np.ndarray, system: np.ndarray, message: str) -> None:
    with pytest.raises(DualrecError, match=message):
        paired_comparison(baseline, system)
