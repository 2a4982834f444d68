import dataclasses

import numpy as np
import pandas as pd
import pytest

from dualrec.config import DataConfig
from dualrec.data.dataset import PAD_ITEM, cache_file, choose_catalogue, cut_windows, load_dataset, pad_history, sort_ratings
from dualrec.data.features import catalogue_features
from dualrec.errors import UnknownUserError


def ratings_frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def test_catalogue_ties_go_to_the_smaller_movie_id():
    ratings = ratings_frame([(1, 30, 5, 0), (2, 30, 5, 0), (1, 20, 5, 0), (1, 10, 5, 0), (2, 40, 4, 0)])
    ids, counts = choose_catalogue(ratings, 2)
    assert ids.tolist() == [30, 10] and counts.tolist() == [2, 1]


def test_sort_is_by_time_and_keeps_file_order_within_a_second():
    ratings = ratings_frame([(2, 5, 1, 10), (1, 9, 1, 20), (1, 7, 1, 10), (1, 3, 1, 10), (1, 1, 1, 5)])
    assert sort_ratings(ratings)["movie_id"].tolist() == [1, 7, 3, 9, 5]


def test_windows_are_the_most_recent_slices_with_the_next_item_as_target():
    items = np.arange(100, 140)  # one user, 40 items
    w = cut_windows(items, np.array([7]), np.array([0]), np.array([40]), window=3, per_user=4)
    assert w.targets.tolist() == [136, 137, 138, 139]
    assert w.histories.tolist() == [[133, 134, 135], [134, 135, 136], [135, 136, 137], [136, 137, 138]]
    assert w.users.tolist() == [7] * 4
    short = cut_windows(items[:5], np.array([1]), np.array([0]), np.array([5]), window=3, per_user=30)
    assert short.targets.tolist() == [103, 104]


def test_short_histories_are_left_padded():
    assert pad_history([4, 5], 4).tolist() == [PAD_ITEM, PAD_ITEM, 4, 5]
    assert pad_history(list(range(10)), 3).tolist() == [7, 8, 9]
    assert pad_history([], 2).tolist() == [PAD_ITEM, PAD_ITEM]


def test_catalogue_is_the_most_rated_movies(dataset):
    counts = dataset.ratings["movie_id"].value_counts()
    assert dataset.catalogue_size == 1000
    assert dataset.catalogue_counts.tolist() == counts.loc[dataset.catalogue].tolist()
    assert counts.drop(dataset.catalogue).max() <= dataset.catalogue_counts.min()
    assert np.all(np.diff(dataset.catalogue_counts) <= 0)


def test_eligible_users_have_a_full_window_and_a_target(dataset):
    catalogue_counts = dataset.ratings[dataset.ratings["item"] >= 0].groupby("user_id").size()
    expected = catalogue_counts[catalogue_counts >= 31].index.to_numpy()
    assert dataset.eligible_users.tolist() == sorted(expected.tolist())
    assert 0 < len(expected) < len(dataset.users)  # the fixture has users below the threshold


def test_every_window_is_a_slice_of_the_users_sequence(dataset):
    train = dataset.windows["train"]
    for i in range(0, len(train), 97):
        sequence = dataset.user_items(int(train.users[i])).tolist()
        window = train.histories[i].tolist() + [int(train.targets[i])]
        starts = [s for s in range(len(sequence) - 30) if sequence[s : s + 31] == window]
        assert starts, f"window {i} is not in user {train.users[i]}'s sequence"
    per_user = pd.Series(train.users).value_counts()
    assert per_user.max() <= 30


def test_splits_are_disjoint_and_cover_the_eligible_users(dataset):
    parts = dataset.split_users
    assert sum(len(p) for p in parts.values()) == len(dataset.eligible_users)
    assert not set(parts["train"]) & set(parts["test"]) and not set(parts["val"]) & set(parts["test"])
    assert abs(len(parts["train"]) / len(dataset.eligible_users) - 0.7) < 0.02
    for name in ("train", "val", "test"):
        assert set(dataset.windows[name].users) <= set(parts[name])


def test_test_case_is_each_test_users_last_movie(dataset):
    cases = dataset.cases["test"]
    assert cases.users.tolist() == dataset.split_users["test"].tolist()
    for user, history, target in zip(cases.users[:20], cases.histories, cases.targets):
        sequence = dataset.user_items(int(user))
        assert target == sequence[-1] and history.tolist() == sequence[-31:-1].tolist()


def test_split_is_reproducible_and_follows_the_seed(ml_dir, dataset):
    again = load_dataset(ml_dir, use_cache=False)
    assert all(np.array_equal(again.split_users[k], dataset.split_users[k]) for k in dataset.split_users)
    other = load_dataset(ml_dir, DataConfig(split_seed=1))
    assert not np.array_equal(other.split_users["test"], dataset.split_users["test"])


def test_random_windows_split_shuffles_windows_across_users(ml_dir, dataset):
    poster = load_dataset(ml_dir, DataConfig(split_mode="random-windows"))
    total = sum(len(w) for w in poster.windows.values())
    assert total == sum(len(w) for w in dataset.windows.values())
    assert len(poster.cases["test"]) == len(poster.windows["test"])
    assert set(poster.windows["train"].users) & set(poster.windows["test"].users)


def test_negatives_are_never_rated_distinct_and_seeded(dataset):
    cases = dataset.cases["test"]
    negatives = dataset.negatives(cases, seed=0)
    assert negatives.shape == (len(cases), 19)
    rated = dataset.rated_matrix(cases.users)
    assert not np.take_along_axis(rated, negatives, axis=1).any()
    assert all(len(set(row)) == 19 for row in negatives)
    assert not (negatives == cases.targets[:, None]).any()
    assert np.array_equal(negatives, dataset.negatives(cases, seed=0))
    assert not np.array_equal(negatives, dataset.negatives(cases, seed=1))


def test_unknown_user_is_a_clear_error(dataset):
    with pytest.raises(UnknownUserError, match="User 99999 is not in users.dat"):
        dataset.history(99999)


def test_history_is_chronological_with_titles(dataset):
    history = dataset.history(1)
    assert history["timestamp"].is_monotonic_increasing
    assert {"title", "year", "genres", "rating", "date", "in_catalogue"} <= set(history.columns)


def test_cache_is_reused_and_keyed_by_options(ml_dir, dataset):
    path = cache_file(dataset.fingerprint, dataset.config)
    assert path.is_file()
    assert cache_file(dataset.fingerprint, DataConfig(split_seed=5)) != path
    cached = load_dataset(ml_dir)
    assert np.array_equal(cached.windows["train"].histories, dataset.windows["train"].histories)
    assert cached.ratings.equals(dataset.ratings)


def test_corrupt_cache_is_rebuilt(ml_dir, dataset):
    path = cache_file(dataset.fingerprint, dataset.config)
    path.write_bytes(b"not an npz")
    rebuilt = load_dataset(ml_dir)
    assert np.array_equal(rebuilt.cases["test"].targets, dataset.cases["test"].targets)


def test_catalogue_features_line_up_with_items(dataset):
    features = catalogue_features(dataset)
    assert features.title_tokens.shape == (1000, 10) and features.genres.shape == (1000, 18)
    first = dataset.catalogue_movies.iloc[0]
    assert features.genres[0].tolist() == first["genre_vector"].astype(float).tolist()
    assert (features.title_tokens[:, 0] > 1).all()  # every title has a known first word


def test_a_model_trained_under_other_negative_draws_saw_the_same_windows_and_split():
    saved = DataConfig().as_dict() | {"negative_seeds": [0, 1, 2, 3, 4], "split_fractions": [0.7, 0.15, 0.15]}  # read from JSON
    assert DataConfig(negative_seeds=(2,), negatives=99).trains_like(saved)
    assert not DataConfig(split_seed=1).trains_like(saved)
    assert not DataConfig(max_windows_per_user=5).trains_like(saved)


def test_a_trained_baseline_is_kept_under_its_training_options_only(dataset):
    """Another --negative-seeds scores the same trained baseline; another split is another file."""
    from dualrec.ranking.baselines.fitting import baseline_file  # torch loads only here

    other_draws = dataclasses.replace(dataset, config=DataConfig(negative_seeds=(3,), negatives=49))
    other_split = dataclasses.replace(dataset, config=DataConfig(split_seed=7))
    settings = {"hidden": 64}
    assert baseline_file("narm", other_draws, settings, 1) == baseline_file("narm", dataset, settings, 1)
    assert baseline_file("narm", other_split, settings, 1) != baseline_file("narm", dataset, settings, 1)
    assert baseline_file("narm", dataset, {"hidden": 32}, 1) != baseline_file("narm", dataset, settings, 1)
