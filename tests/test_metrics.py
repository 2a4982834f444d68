"""HR, NDCG, bootstrap intervals and list diversity against values computed by hand."""

import math

import numpy as np
import pytest

from dualrec.evaluation.metrics import hit_rate, interval, list_diversity, ndcg, per_case_metrics, summarise

RANKS = np.array([1, 2, 5, 11, np.inf])  # the last target was never ranked (a generative system that missed it)


def test_hit_rate_by_hand():
    assert hit_rate(RANKS, 1).mean() == pytest.approx(1 / 5)
    assert hit_rate(RANKS, 5).mean() == pytest.approx(3 / 5)
    assert hit_rate(RANKS, 10).mean() == pytest.approx(3 / 5)


def test_ndcg_by_hand():
    assert ndcg(RANKS, 1).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert ndcg(RANKS, 5).mean() == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert ndcg(RANKS, 10).tolist() == ndcg(RANKS, 5).tolist()
    assert ndcg(np.array([11.0]), 20)[0] == pytest.approx(1 / math.log2(12))


def test_hr_at_1_equals_ndcg_at_1():
    ranks = np.random.default_rng(0).integers(1, 30, size=200)
    np.testing.assert_array_equal(hit_rate(ranks, 1), ndcg(ranks, 1))


def test_metric_names_and_order():
    assert list(per_case_metrics(RANKS, (1, 5))) == ["HR@1", "HR@5", "NDCG@1", "NDCG@5"]


def test_interval_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(1).random(300)
    low, high = interval(values, samples=500, seed=3)
    assert low < values.mean() < high
    assert (low, high) == interval(values, samples=500, seed=3)
    assert interval(np.ones(50)) == (1.0, 1.0)


def test_interval_width_matches_the_normal_approximation():
    values = (np.arange(1000) % 5 == 0).astype(float)  # a hit rate of 0.2 over 1,000 cases
    low, high = interval(values, samples=2000, seed=0)
    half_width = 1.96 * math.sqrt(0.2 * 0.8 / 1000)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)


def test_summarise_single_row():
    summary = summarise(RANKS, ks=(1, 5), samples=200)
    assert summary["HR@5"]["value"] == pytest.approx(0.6)
    assert set(summary["HR@5"]) == {"value", "low", "high"}


def test_summarise_repeats_report_the_spread_over_seeds():
    ranks = np.array([[1, 3, 30], [2, 3, 30]])  # two seeds, three cases
    summary = summarise(ranks, ks=(1,), samples=200)["HR@1"]
    assert summary["value"] == pytest.approx(1 / 6)
    assert summary["per_seed"] == pytest.approx([1 / 3, 0.0])
    assert summary["std"] == pytest.approx(np.std([1 / 3, 0.0], ddof=1))


def test_list_diversity_by_hand():
    genres = np.zeros((10, 3), dtype=np.float32)
    genres[0] = [1, 0, 0]
    genres[1] = [1, 0, 0]
    genres[2] = [1, 1, 0]
    lists = np.array([[0, 1], [0, 2]])
    stats = list_diversity(lists, genres)
    assert stats["coverage@2"] == pytest.approx(3 / 10)
    assert stats["genre_similarity@2"] == pytest.approx((1.0 + 1 / math.sqrt(2)) / 2)


def test_list_diversity_ignores_empty_slots():
    genres = np.eye(4, dtype=np.float32)
    stats = list_diversity(np.array([[0, 1, -1], [2, -1, -1]]), genres)
    assert stats["coverage@3"] == pytest.approx(3 / 4)
    assert stats["genre_similarity@3"] == 0.0  # only the first list has a pair, and it shares no genre
