"""The poster protocol (dualrec.data.poster, dualrec.evaluation.poster): PO4ISR's sessions, samples and candidates, the
protocol as a Dataset, its scoreboard, its command lines and its bad input."""

from __future__ import annotations

import datetime
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dualrec.cli import main
from dualrec.config import POSTER_CANDIDATE_SEEDS, PosterConfig
from dualrec.data.dataset import PAD_ITEM
from dualrec.data.poster import (
    CANDIDATES,
    EVAL_SAMPLE,
    TRAIN_SAMPLE,
    load_poster,
    poster_cases,
    poster_dataset,
    reference_sessions,
)
from dualrec.errors import ConfigError, DataError
from dualrec.evaluation.harness import ranks_in_candidates
from dualrec.evaluation.poster import evaluate_poster, po4isr_mostpop
from dualrec.evaluation.results import poster_comparison, read_results
from dualrec.ranking.base import RankedLists
from tests.movielens_fixture import FixtureSpec, write_movielens

DAY = 86_400


def ratings(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """(user, movie, timestamp) rows in file order."""
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "timestamp"])


def five_ratings_each(movies) -> list[tuple[int, int, int]]:
    """Ratings by other users, one each (no session), that give each movie its 5 ratings."""
    return [(1000 + 10 * movie + n, movie, 0) for movie in movies for n in range(5)]


def all_sessions(sessions) -> list[list[int]]:
    return [sessions[i] for i in range(len(sessions))]


# ---- the sessions, by the generator's rules ----------------------------------------------------------------------


def test_sessions_are_days_of_two_or_more_ratings_and_windows_of_twenty():
    day_one = [(1, movie, DAY + 60 * movie) for movie in range(1, 24)]  # 23 ratings on one day: 4 windows
    lonely = [(1, 1, 5 * DAY)]  # a day with one rating: no session
    two = [(2, 3, 2 * DAY + 10), (2, 4, 2 * DAY + 20)]
    movies, sessions, movie_set = reference_sessions(ratings(two + day_one + lonely + five_ratings_each(range(1, 24))))
    assert movies.tolist() == list(range(1, 24)) and movie_set == set(range(1, 24))
    windows = [list(range(start, start + 20)) for start in range(1, 5)]
    assert all_sessions(sessions) == [*windows, [3, 4]]  # sorted by time: a window is timed by its last rating
    assert sessions.times.tolist() == [DAY + 60 * 20, DAY + 60 * 21, DAY + 60 * 22, DAY + 60 * 23, 2 * DAY + 20]


def test_rarely_rated_movies_are_dropped_and_days_are_utc_calendar_days():
    late = datetime.datetime(2000, 12, 31, 23, 59, tzinfo=datetime.timezone.utc).timestamp()
    rows = [(1, 1, int(late)), (1, 2, int(late) + 30), (1, 3, int(late) + 120), (1, 4, int(late) + 180), (1, 99, int(late) + 1)]
    movies, sessions, movie_set = reference_sessions(ratings(rows + five_ratings_each(range(1, 5))))
    assert 99 not in movies and 99 not in movie_set  # rated once: not a protocol movie, not in any session
    assert all_sessions(sessions) == [[1, 2], [3, 4]]  # midnight UTC cuts the evening in two


def test_same_second_ratings_follow_each_movies_first_line_not_the_file_order():
    """PO4ISR's pandas merge grouped the rows by movie (in order of first appearance in the file) before the stable
    sort by time: its published sessions show that order."""
    rows = [(7, 30, DAY), (7, 10, DAY), (7, 20, DAY)]  # one second, file order 30, 10, 20
    first_lines = [(8, 20, 3 * DAY), (8, 10, 3 * DAY + 1), (8, 30, 3 * DAY + 2)]  # ... but 20 is met first in the file
    movies, sessions, _ = reference_sessions(ratings(first_lines + rows + five_ratings_each([10, 20, 30])))
    assert all_sessions(sessions) == [[20, 10, 30], [20, 10, 30]]


def test_sessions_of_the_same_second_keep_the_order_users_first_appear_in():
    rows = [(5, 2, DAY), (5, 1, DAY + 5), (4, 1, DAY), (4, 2, DAY + 5)]  # both end at DAY + 5; user 5 is met first
    _, sessions, _ = reference_sessions(ratings(rows + five_ratings_each([1, 2])))
    assert all_sessions(sessions) == [[2, 1], [1, 2]]


def test_negative_timestamps_are_refused():
    with pytest.raises(DataError, match="negative timestamps"):
        reference_sessions(ratings([(1, 1, -5)] + five_ratings_each([1])))


# ---- the draws, against a plain reading of the generator ---------------------------------------------------------


def plain_protocol(folder: Path) -> dict:
    """generate.py's steps written out with dicts and lists, row by row (slow, obvious), for the fixture."""
    rows = [tuple(map(int, line.split("::"))) for line in (folder / "ratings.dat").read_text().splitlines()]
    counts: dict[int, int] = {}
    for _, movie, _, _ in rows:
        counts[movie] = counts.get(movie, 0) + 1
    first: dict[int, int] = {}
    for line, (_, movie, _, _) in enumerate(rows):
        first.setdefault(movie, line)
    merged = [row for row in sorted(rows, key=lambda row: first[row[1]]) if counts[row[1]] >= 5]
    movie_set = {row[1] for row in merged}
    per_user: dict[int, list[tuple[int, int]]] = {}
    for user, movie, _, time in merged:
        per_user.setdefault(user, []).append((movie, time))
    sessions = []
    for events in per_user.values():
        days: dict[str, list[tuple[int, int]]] = {}
        for movie, time in sorted(events, key=lambda event: event[1]):
            day = datetime.datetime.fromtimestamp(time, datetime.timezone.utc).strftime("%Y-%m-%d")
            days.setdefault(day, []).append((movie, time))
        for day in days.values():
            items = [movie for movie, _ in day]
            if len(items) > 20:
                sessions += [(items[i : i + 20], day[i + 19][1]) for i in range(len(items) - 19)]
            elif len(items) > 1:
                sessions.append((items, day[-1][1]))
    sessions = [items for items, _ in sorted(sessions, key=lambda session: session[1])]
    n = len(sessions)
    train, valid, test = sessions[: int(n * 0.8)], sessions[int(n * 0.8) : int(n * 0.9)], sessions[int(n * 0.9) :]

    def candidates(session: list[int]) -> list[int]:
        chosen = random.sample(list(movie_set - set(session)), 19)
        chosen.insert(random.randint(0, 19), session[-1])
        return chosen

    random.seed(42)
    train_sample = random.sample(train, 150)
    for session in train_sample:
        candidates(session)
    valid_sample = random.sample(valid, 1000)
    valid_candidates = [candidates(session) for session in valid_sample]
    random.sample(valid_candidates, 100)
    test_sample = random.sample(test, 1000)
    test_candidates = {}
    for seed in POSTER_CANDIDATE_SEEDS:
        random.seed(seed)
        test_candidates[seed] = [candidates(session) for session in test_sample]
    random.seed(42)
    train_50 = random.sample(train, 50)
    return {"sessions": sessions, "train": train_sample, "train-50": train_50, "valid": valid_sample, "test": test_sample} | {
        "valid_candidates": valid_candidates,
        "test_candidates": test_candidates,
    }


@pytest.fixture(scope="module")
def poster(ml_dir):
    return load_poster(ml_dir)


def test_the_protocol_is_the_generators_sessions_samples_and_candidates(poster, ml_dir):
    plain = plain_protocol(ml_dir)
    assert all_sessions(poster.sessions) == plain["sessions"]
    assert all_sessions(poster.training("150")) == plain["train"] and all_sessions(poster.training("50")) == plain["train-50"]
    assert all_sessions(poster.evaluation("valid")) == plain["valid"] and all_sessions(poster.evaluation("test")) == plain["test"]
    assert poster.valid_candidates.tolist() == plain["valid_candidates"]
    assert all(poster.test_candidates[seed].tolist() == plain["test_candidates"][seed] for seed in POSTER_CANDIDATE_SEEDS)
    assert len(poster.training("all")) == poster.bounds["train"][1] == int(len(poster.sessions) * 0.8)


def test_candidates_are_the_target_and_nineteen_movies_outside_the_session(poster):
    cases = poster.cases("test")
    assert len(cases) == EVAL_SAMPLE and set(cases[0].candidates) == set(POSTER_CANDIDATE_SEEDS)
    places = []
    for case in cases:
        for draw in case.candidates.values():
            assert len(set(draw)) == CANDIDATES and case.target in draw
            assert not set(draw) & set(case.history) and set(draw) <= set(poster.movies.tolist())
            places.append(draw.index(case.target))
    assert len(set(places)) == CANDIDATES  # the target lands anywhere in the list
    assert poster_cases(Path(poster.folder), "valid")[0].candidates.keys() == {42}


def test_stats_have_the_issues_keys_and_the_cache_is_read_back(poster, ml_dir):
    stats = poster.stats()
    assert list(stats) == ["items", "sessions", "splits", "samples", "test_preview"]
    assert stats["samples"] == {"train": TRAIN_SAMPLE, "valid": EVAL_SAMPLE, "test": EVAL_SAMPLE}
    assert sum(stats["splits"].values()) == stats["sessions"] and stats["items"] == len(poster.movies)
    first = poster.evaluation("test")[0]
    assert stats["test_preview"][0] == {
        "history": first[:-1],
        "target": first[-1],
        "candidates": poster.test_candidates[0][0].tolist(),
    }
    cached = load_poster(ml_dir)  # from the cache file written by the fixture's build
    assert np.array_equal(cached.sessions.items, poster.sessions.items) and cached.samples.keys() == poster.samples.keys()
    assert all(np.array_equal(cached.test_candidates[s], poster.test_candidates[s]) for s in POSTER_CANDIDATE_SEEDS)


def test_too_few_sessions_for_the_samples_is_one_message(tmp_path):
    folder = write_movielens(tmp_path / "small", FixtureSpec(users=40))
    with pytest.raises(
        DataError, match=r"give 180 sessions \(144 training, 18 validation, 18 test sessions\); the poster protocol samples 150"
    ):
        load_poster(folder)


def test_unknown_train_samples_and_candidate_seeds_are_refused(poster):
    with pytest.raises(ConfigError, match="--train-sample must be one of 150, 50, all, not '100'"):
        PosterConfig(train_sample="100")
    with pytest.raises(ConfigError, match=r"--candidate-seeds must be PO4ISR's, one or more of 0, 10, 42, 625, 2023, not \(7,\)"):
        PosterConfig(candidate_seeds=(7,))
    with pytest.raises(ConfigError, match="Unknown candidate seed 7 of the poster protocol; choose from 0, 10, 42, 625, 2023"):
        poster.candidates("test", 7)
    with pytest.raises(ConfigError, match="Unknown train sample '100'"):
        poster.training("100")


# ---- the protocol as a Dataset, and its scoreboard ---------------------------------------------------------------


def test_the_dataset_view_has_the_training_sessions_prefixes_and_the_sampled_cases(poster):
    view = poster_dataset(poster, "50")
    training = poster.training("50")
    assert view.catalogue.tolist() == poster.movies.tolist() and view.catalogue_size == len(poster.movies)
    assert len(view.windows["train"]) == int((training.lengths - 1).sum())  # every prefix of every training session
    test = view.cases["test"]
    session = poster.evaluation("test")[0]
    history = test.histories[0][test.histories[0] != PAD_ITEM]
    assert view.catalogue[history].tolist() == session[:-1] and view.catalogue[test.targets[0]] == session[-1]
    assert len(test) == EVAL_SAMPLE and not set(view.split_users["train"]) & set(test.users)
    assert view.fingerprint != poster_dataset(poster, "150").fingerprint  # models trained on each are kept apart


def test_ties_count_against_the_target():
    candidates = np.array([[5, 6, 7, 8], [5, 6, 7, 8]])
    scores = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 2.0, 0.1, 0.3]])
    assert ranks_in_candidates(scores, candidates, np.array([7, 8])).tolist() == [4, 3]


def test_po4isr_mostpop_ranks_the_whole_catalogue_by_training_counts(poster):
    view = poster_dataset(poster, "150")
    figures = po4isr_mostpop(view, view.cases["test"])
    counts = np.bincount(
        view.ratings[view.ratings["user_id"].isin(view.split_users["train"])]["item"], minlength=view.catalogue_size
    )
    top = counts.argmax()
    assert figures["HR@1"] == pytest.approx(np.mean(view.cases["test"].targets == top))
    assert figures["HR@1"] <= figures["HR@5"] <= figures["HR@10"] <= 0.5


def test_a_poster_run_ranks_every_seed_and_names_its_training_sessions(poster):
    document = evaluate_poster(["sknn", "mostpop"], poster, PosterConfig(candidate_seeds=(0, 2023)))
    sknn, mostpop = document["results"]
    assert sknn["system"] == "sknn (150 training sessions, the poster's setting; candidate seeds 0, 2023)"
    assert sknn["protocol"] == "poster"
    assert sknn["cases"] == EVAL_SAMPLE and len(sknn["metrics"]["HR@5"]["per_seed"]) == 2
    assert 0 < sknn["metrics"]["MRR"]["value"] <= 1 and sknn["extra"]["candidate_seeds"] == [0, 2023]
    assert "po4isr_mostpop" in mostpop["extra"] and document["protocol"]["train_sample"] == "150"
    compared = [row for row in poster_comparison(document["results"]) if row["poster system"] == "SLIM"]
    assert [row["ours"] for row in compared] == [sknn["system"]] * 4 and all(row["outside"] in (True, False) for row in compared)
    valid = evaluate_poster(["mostpop"], poster, PosterConfig(train_sample="50"), split="val")["results"][0]
    assert valid["system"] == "mostpop (50 training sessions)" and valid["extra"]["candidate_seeds"] == ["valid"]


# ---- the command lines -------------------------------------------------------------------------------------------


def test_data_stats_and_evaluate_and_results_on_the_command_line(ml_dir, tmp_path, capsys):
    assert main(["data", "stats", "--protocol", "poster", "--json", "--data-dir", str(ml_dir)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert list(stats) == ["items", "sessions", "splits", "samples", "test_preview"] and len(stats["test_preview"]) == 3
    out = tmp_path / "poster.json"
    argv = ["evaluate", "--protocol", "poster", "--systems", "sknn", "--candidate-seeds", "0,10", "--data-dir", str(ml_dir)]
    assert main([*argv, "--train-sample", "50", "--out", str(out)]) == 0
    row = read_results(out)["results"][0]
    assert row["system"] == "sknn (50 training sessions; candidate seeds 0, 10)" and row["extra"]["candidate_seeds"] == [0, 10]
    assert main(["results", "--protocol", "poster", str(out)]) == 0
    assert "sknn (50 training sessions; candidate seeds 0, 10)" in capsys.readouterr().out


def test_the_poster_protocol_runs_alone(ml_dir, capsys):
    code = main(["evaluate", "--protocol", "poster,full", "--data-dir", str(ml_dir)])
    assert (
        code == 2
        and "--protocol poster is its own data (PO4ISR's sessions), not the cases of the others" in capsys.readouterr().err
    )


# ---- on the real data --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_movielens_gives_the_references_counts(real_data_dir):
    poster = load_poster(real_data_dir)
    stats = poster.stats()
    assert stats["items"] == 3416 and stats["sessions"] == 784_337
    assert stats["splits"] == {"train": 627_469, "valid": 78_434, "test": 78_434}
    # RECONSTRUCTED.md's 1,076 timestamp-0 ratings: 253 sessions on 1970-01-01, all at the start of the training split
    on_day_zero = np.flatnonzero(poster.sessions.times < DAY)
    assert on_day_zero.tolist() == list(range(253))
    assert (poster.sessions.times[poster.samples["test"]] >= poster.sessions.times[poster.bounds["test"][0]]).all()


class ByItemId:
    """A candidate ranker (the interface NIR implements): each case's candidates, smallest catalogue item first."""

    name, options, negative_seeds = "by-item-id", {}, None

    def rank_candidates(self, dataset, cases, candidates=None, progress=None):
        return RankedLists(cases, [sorted(row.tolist()) for row in candidates])


def test_a_candidate_ranker_ranks_the_references_candidates(poster):
    """What a re-ranker gets: the reference's candidates as catalogue items; its lists are turned into ranks."""
    document = evaluate_poster([ByItemId()], poster, PosterConfig(candidate_seeds=(10,)), samples=20)
    view = poster_dataset(poster, "150")
    items = view.item_of(poster.test_candidates[10].ravel()).reshape(-1, CANDIDATES)
    expected = 1 + (items < view.cases["test"].targets[:, None]).sum(axis=1)
    assert document["results"][0]["metrics"]["HR@1"]["value"] == pytest.approx(np.mean(expected == 1))
    assert document["results"][0]["metrics"]["MRR"]["value"] == pytest.approx(np.mean(1 / expected))
