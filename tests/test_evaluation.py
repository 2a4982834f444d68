"""The harness: protocols on hand-made cases, leak checks on the fixture, MostPop, one call for any mix of systems
and protocols, and the results file."""

from __future__ import annotations

import numpy as np
import pytest

from dualrec.config import DataConfig
from dualrec.data.dataset import Windows, load_dataset
from dualrec.errors import DualrecError
from dualrec.evaluation.harness import (
    checked_run,
    evaluate,
    evaluate_system,
    ranks_full,
    ranks_of_lists,
    ranks_sampled,
    top_lists,
    watched_before,
)
from dualrec.evaluation.results import POSTER_RESULTS, markdown_table, read_results, write_results
from dualrec.ranking.base import ListRecommender, RankedLists, Recommender
from dualrec.ranking.registry import load_system, new_system, system_names


class Fixed:
    """A test system whose scores are given by a function of the histories."""

    def __init__(self, name, scores):
        self.name, self.scores = name, scores

    def fit(self, dataset):
        pass

    def score(self, histories, users):
        return self.scores(histories)


class TopTen:
    """A test list system: the ten best unwatched items of a scoring system, as one ranked list per case."""

    name, options = "top ten", {"k": 10}

    def __init__(self, scores):
        self.scores = scores

    def rank_cases(self, dataset, cases, progress):
        lists = top_lists(self.scores(cases.histories), watched_before(dataset, cases)).tolist()
        return RankedLists(cases, lists, figures={"listed": 10}, seconds={"ranking": 0.0})


def random_scores(dataset):
    """Fixed scores without ties, one row per test case."""
    return lambda histories: np.random.default_rng(0).random((len(histories), dataset.catalogue_size))


def test_full_ranks_skip_watched_movies():
    scores = np.array([[0.1, 0.5, 0.3, 0.2, 0.9]])
    watched = np.array([[False, False, False, False, True]])
    assert ranks_full(scores, np.array([2]), watched).tolist() == [2]  # only item 1 beats it once item 4 is excluded
    assert ranks_full(scores, np.array([2]), ~watched & False).tolist() == [3]


def test_ties_count_against_the_target():
    scores = np.zeros((2, 6))
    watched = np.zeros((2, 6), dtype=bool)
    assert ranks_full(scores, np.array([0, 5]), watched).tolist() == [6, 6]


def test_sampled_ranks_only_among_the_candidates():
    scores = np.array([[0.9, 0.8, 0.1, 0.5, 0.0]])
    negatives = np.array([[2, 4]])  # items 0 and 1 score higher but are not candidates
    assert ranks_sampled(scores, np.array([3]), negatives).tolist() == [1]
    assert ranks_sampled(scores, np.array([2]), np.array([[3, 4]])).tolist() == [2]


def test_ranked_lists_give_ranks_or_inf():
    assert ranks_of_lists([[3, 1, 2], [5], []], np.array([1, 4, 0])).tolist() == [2, np.inf, np.inf]


def test_top_lists_are_best_first_and_unwatched():
    scores = np.array([[0.1, 0.5, 0.3, 0.2, 0.9]])
    watched = np.array([[False, False, False, False, True]])
    assert top_lists(scores, watched, k=3).tolist() == [[1, 2, 3]]


def test_watched_is_exactly_what_came_before_the_target(dataset):
    cases = dataset.cases["test"]
    watched = watched_before(dataset, cases)
    rated = dataset.rated_matrix(cases.users)
    assert not watched[np.arange(len(cases)), cases.targets].any()
    expected = rated.copy()
    expected[np.arange(len(cases)), cases.targets] = False  # test targets are each user's last rating
    np.testing.assert_array_equal(watched, expected)
    for row, history in enumerate(cases.histories):
        assert watched[row, history[history >= 0]].all()


def test_watched_stops_at_the_target_inside_a_sequence(dataset):
    user = int(dataset.cases["test"].users[0])
    items = dataset.user_items(user)
    middle = Windows(items[None, :30], items[30:31], np.array([user], dtype=np.int32))
    watched = watched_before(dataset, middle)[0]
    assert set(np.flatnonzero(watched)) == set(items[:30].tolist())


def test_rated_movies_never_reach_the_candidates(dataset):
    """Scoring the movies a user rated before the target highest changes nothing under either protocol."""
    cases = dataset.cases["test"]
    base = np.random.default_rng(0).random((len(cases), dataset.catalogue_size))
    boosted = base + 10.0 * watched_before(dataset, cases)
    plain = evaluate_system(Fixed("plain", lambda h: base), dataset, samples=50)
    cheat = evaluate_system(Fixed("cheat", lambda h: boosted), dataset, samples=50)
    assert [e["metrics"] for e in plain] == [e["metrics"] for e in cheat]
    rated = dataset.rated_matrix(cases.users)
    for seed in dataset.config.negative_seeds:
        assert not np.take_along_axis(rated, dataset.negatives(cases, seed), axis=1).any()


def test_an_oracle_scores_one_and_a_constant_scores_zero(dataset):
    n = dataset.catalogue_size

    def oracle(histories):
        scores = np.zeros((len(histories), n))
        scores[np.arange(len(histories)), dataset.cases["test"].targets] = 1.0
        return scores

    for entry in evaluate_system(Fixed("oracle", oracle), dataset, samples=50):
        assert all(m["value"] == 1.0 for m in entry["metrics"].values())
    for entry in evaluate_system(Fixed("constant", lambda h: np.zeros((len(h), n))), dataset, samples=50):
        assert all(m["value"] == 0.0 for m in entry["metrics"].values())


def test_entries_have_what_the_results_file_promises(dataset):
    full, sampled = evaluate_system(load_system("mostpop", dataset), dataset, samples=50)
    assert (full["protocol"], sampled["protocol"]) == ("full", "sampled-20")
    assert set(full["metrics"]) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 5, 10)}
    assert full["cases"] == len(dataset.cases["test"]) and {"coverage@10", "genre_similarity@10"} == set(full["lists"])
    assert sampled["extra"]["negative_seeds"] == [0, 1, 2, 3, 4] and len(sampled["metrics"]["HR@5"]["per_seed"]) == 5
    assert {"fit", "score", "protocol"} == set(full["seconds"])


def test_mostpop_counts_training_users_only(dataset):
    mostpop = load_system("mostpop", dataset)
    train = dataset.ratings[(dataset.ratings["item"] >= 0) & dataset.ratings["user_id"].isin(dataset.split_users["train"])]
    assert mostpop.counts.sum() == len(train)
    scores = mostpop.score(np.zeros((3, 30), dtype=np.int32), np.array([1, 2, 3]))
    assert scores.shape == (3, dataset.catalogue_size) and (scores == mostpop.counts).all()


def test_evaluation_is_deterministic_and_round_trips(dataset, tmp_path):
    def run():
        return evaluate(["mostpop"], dataset, samples=100)

    first, second = run(), run()
    assert first["results"] == [{**e, "seconds": f["seconds"]} for e, f in zip(second["results"], first["results"])]
    path = write_results(first, tmp_path / "run.json")
    document = read_results(path)
    assert document["data"]["fingerprint"] == dataset.fingerprint and document["results"][0]["system"] == "mostpop"
    table = markdown_table(document["results"]).splitlines()
    assert table[0].startswith("| system | protocol | HR@1 |") and len(table) == 4


def test_unreadable_results_are_a_clear_error(tmp_path):
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DualrecError, match="not a DUALRec results file"):
        read_results(tmp_path / "bad.json")


def test_registry_names_and_unknown_system():
    assert system_names()[:2] == ["lstm", "mostpop"]
    with pytest.raises(DualrecError, match="Unknown system 'nope'"):
        new_system("nope")


def test_poster_table_is_complete():
    assert len(POSTER_RESULTS) == 15 and POSTER_RESULTS[0]["system"] == "MostPop"
    assert all({"HR@1", "HR@5", "NDCG@1", "NDCG@5", "protocol"} <= set(row) for row in POSTER_RESULTS)


def test_one_call_runs_names_and_objects_under_the_protocols_that_apply(dataset):
    """A scoring system and its own top ten as a list system agree on every metric up to 10; what does not apply
    to a system is skipped and said so."""
    scores = random_scores(dataset)
    assert isinstance(Fixed("x", scores), Recommender) and isinstance(TopTen(scores), ListRecommender)
    document = evaluate(["mostpop", Fixed("scores", scores), TopTen(scores)], dataset, ["full", "freeform"], samples=50)
    rows = {(entry["system"], entry["protocol"]): entry for entry in document["results"]}
    assert list(rows) == [("mostpop", "full"), ("scores", "full"), ("top ten", "freeform")]
    assert rows["top ten", "freeform"]["metrics"] == rows["scores", "full"]["metrics"]
    listed = rows["top ten", "freeform"]
    assert listed["extra"] == {"listed": 10, "cases_drawn": len(dataset.cases["test"]), "cases_total": len(dataset.cases["test"])}
    assert listed["options"] == {"k": 10} and listed["lists"] == rows["scores", "full"]["lists"]
    assert document["skipped"] == [
        {"system": "mostpop", "protocol": "freeform"},
        {"system": "scores", "protocol": "freeform"},
        {"system": "top ten", "protocol": "full"},
    ]
    assert document["options"]["systems"] == ["mostpop", "scores", "top ten"]


def test_the_sampled_protocol_is_named_by_its_candidates(ml_dir):
    nine = load_dataset(ml_dir, DataConfig(negatives=9, negative_seeds=(0, 1)))
    full, sampled = evaluate(["mostpop"], nine, samples=20)["results"]
    assert (full["protocol"], sampled["protocol"]) == ("full", "sampled-10")
    assert sampled["extra"]["candidates"] == "target + 9 never-rated" and len(sampled["metrics"]["HR@1"]["per_seed"]) == 2
    with pytest.raises(DualrecError, match="Unknown protocol sampled-20; choose from full, sampled-10, freeform"):
        evaluate(["mostpop"], nine, ["sampled-20"])


@pytest.mark.parametrize(
    ("systems", "protocols", "message"),
    [
        (["mostpop", "nope"], None, "Unknown system nope"),
        ([], None, r"Unknown system \(none given\)"),
        (["mostpop"], [], "none given"),
    ],
)
def test_bad_names_are_refused_before_any_work(dataset, systems, protocols, message):
    with pytest.raises(DualrecError, match=message):
        evaluate(systems, dataset, protocols)


def test_a_run_is_checked_from_the_data_options_alone():
    """What a command checks before the data loads: the protocols of that data's config, the names of the systems."""
    nine = DataConfig(negatives=9)
    assert checked_run(["mostpop"], None, nine) == ["full", "sampled-10", "freeform"]
    assert checked_run(["lstm"], ["sampled-10"], nine) == ["sampled-10"]
    with pytest.raises(DualrecError, match="Unknown protocol sampled-20; choose from full, sampled-10, freeform"):
        checked_run(["mostpop"], ["sampled-20"], nine)
    with pytest.raises(DualrecError, match="Unknown system nope"):
        checked_run(["nope"], ["full"], nine)
