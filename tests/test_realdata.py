"""Opt-in checks on the real MovieLens 1M folder ($DUALREC_TEST_DATA, else ../shared/data/ml-1m-full-order): --run-realdata."""

import numpy as np
import pytest

from dualrec.data.dataset import load_dataset

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real(real_data_dir):
    return load_dataset(real_data_dir)


def test_counts_match_movielens_1m(real):
    stats = real.stats()
    assert (stats["ratings"], stats["users"], stats["movies"], stats["rated_movies"]) == (1_000_209, 6_040, 3_883, 3_706)
    assert stats["catalogue_size"] == 1000
    assert stats["test_cases"] == stats["split_users"]["test"] == len(real.cases["test"])
    assert sum(stats["split_users"].values()) == stats["eligible_users"]


def test_invariants_hold_on_real_rows(real):
    assert set(real.split_users["train"]).isdisjoint(real.split_users["test"])
    assert real.ratings.groupby("user_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    cases = real.cases["test"]
    negatives = real.negatives(cases, seed=0)
    assert not np.take_along_axis(real.rated_matrix(cases.users), negatives, axis=1).any()
    assert (real.windows["train"].histories >= 0).all()  # full windows only: no padding in training data
