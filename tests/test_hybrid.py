"""The hybrid (the LSTM's top N re-ranked by an LLM) on the generated fixture with the session's tiny LSTM and the real
embedded model: w = 0 is the LSTM exactly, re-ranking moves only the top N, w is chosen on validation and recorded,
each row carries the paired comparison with the LSTM, and bad input gets a clear message."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.app.hybrid_view import RUN, hybrid_table, moves_figure, start_hybrid
from dualrec.cli import main
from dualrec.data.dataset import PAD_ITEM
from dualrec.errors import ConfigError, DualrecError
from dualrec.evaluation.freeform import sample_cases
from dualrec.evaluation.harness import evaluate, ranks_full, ranks_sampled, sampled_scores, watched_before
from dualrec.evaluation.results import results_tables
from dualrec.llm import DEFAULT_PRESET, LLMBackend, load_backend
from dualrec.ranking.base import Reranker
from dualrec.ranking.hybrid import (
    AUTO,
    RECOMMEND_WEIGHT,
    SCORERS,
    SELECTION_METRIC,
    HybridOptions,
    HybridRecommender,
    seen_through_history,
    top_unseen,
)
from dualrec.ranking.registry import load_system, system_names
from tests.conftest import app_folders
from tests.test_app_pages import run as page
from tests.test_app_pages import texts

CASES = 6  # validation and test cases drawn for the runs that ask the LLM (each case scores its candidates)


@pytest.fixture(scope="module")
def backend() -> Iterator[LLMBackend]:
    backend = load_backend(DEFAULT_PRESET, engine="llama.cpp")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def few(dataset):
    """The fixture's data with CASES validation and CASES test cases, drawn with seed 0."""
    return dataclasses.replace(dataset, cases={split: sample_cases(cases, CASES, 0) for split, cases in dataset.cases.items()})


def lstm_only(lstm) -> HybridRecommender:
    """A hybrid whose grid is w = 0 alone: the LLM never counts, so it is not loaded."""
    return HybridRecommender(HybridOptions(weights=(0.0,), candidates=5), lstm=lstm)


def test_at_w_0_the_hybrid_ranks_exactly_as_the_lstm(dataset, lstm):
    hybrid = lstm_only(lstm)
    hybrid.fit(dataset)
    assert hybrid.weight == 0.0 and hybrid.backend is None and isinstance(hybrid, Reranker)
    cases = dataset.cases["test"]
    watched = watched_before(dataset, cases)
    np.testing.assert_array_equal(
        ranks_full(hybrid.score(cases.histories, cases.users), cases.targets, watched),
        ranks_full(lstm.score(cases.histories, cases.users), cases.targets, watched),
    )
    negatives = dataset.negatives(cases, seed=0)
    np.testing.assert_array_equal(
        ranks_sampled(sampled_scores(hybrid, None, cases, negatives, watched.shape[1]), cases.targets, negatives),
        ranks_sampled(lstm.score(cases.histories, cases.users), cases.targets, negatives),
    )
    by_protocol = {}
    for entry in evaluate([lstm, hybrid], dataset, samples=50)["results"]:
        by_protocol.setdefault(entry["protocol"], []).append(entry)
    for lstm_row, hybrid_row in by_protocol.values():
        assert lstm_row["metrics"] == hybrid_row["metrics"]
        paired = hybrid_row["extra"]["paired"]
        assert paired["baseline"] == "lstm" and all(paired[name]["difference"] == 0 for name in ("HR@1", "HR@5", "NDCG@10"))
        assert all(test["baseline_only"] == test["system_only"] == 0 and test["p_value"] == 1 for test in paired["mcnemar"])
    ceiling = by_protocol["full"][1]["extra"]["ceiling"]["HR@5"]
    assert ceiling == by_protocol["full"][0]["metrics"]["HR@5"]["value"]  # the LSTM's HR@N: no re-ranking beats it
    sampled_only = CandidatesOnly(HybridOptions(weights=(0.0,), candidates=5), lstm=lstm)
    sampled_only.fit(dataset)
    [row] = evaluate([sampled_only], dataset, ["sampled-20"], samples=50)["results"]
    assert row["metrics"] == by_protocol["sampled-20"][1]["metrics"]


class CandidatesOnly(HybridRecommender):
    """The hybrid, refusing to score the catalogue: under a sampled protocol alone only its candidates are needed."""

    def score(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        raise AssertionError("catalogue scores asked for under a sampled protocol alone")


def test_the_top_n_leave_out_exactly_what_the_full_protocol_leaves_out(dataset, lstm):
    for split in ("val", "test"):
        cases = dataset.cases[split]
        np.testing.assert_array_equal(seen_through_history(dataset, cases.histories, cases.users), watched_before(dataset, cases))
    probabilities = np.array([[0.1, 0.4, 0.2, 0.3]])
    assert top_unseen(probabilities, np.array([[False, True, False, False]]), 2).tolist() == [[3, 2]]


def test_the_registry_names_the_hybrid_on_the_runs_lstm(dataset, tiny_lstm_dir):
    assert "hybrid" in system_names()
    with pytest.raises(DualrecError, match="No trained LSTM in"):
        load_system("hybrid", dataset, tiny_lstm_dir / "missing")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"candidates": 0}, "--candidates must be from 1 to 1000, not 0"),
        ({"candidates": 1001}, "--candidates must be from 1 to 1000, not 1001"),
        ({"scorer": "labels", "candidates": 27}, "--candidates must be at most 26 with --scorer labels"),
        ({"scorer": "auto", "candidates": 30}, "--candidates must be at most 26 with --scorer auto (labels lists (A) to (Z))"),
        ({"weights": (0.5, 1.0)}, "--hybrid-weights must include 0 (the LSTM alone)"),
        ({"weights": (0.0, -1.0)}, "--hybrid-weights must be one or more values, each a finite number at least 0"),
        ({"llm": "deepseek-v3"}, "needs a local model (a GGUF on llama.cpp or a transformers model, such as smollm2-135m) or a"),
        ({"llm": "gpt-17"}, "--llm: unknown model preset 'gpt-17'"),
        ({"llm": "smollm2-135m+/nowhere/adapter"}, "--llm: no LoRA adapter in /nowhere/adapter"),
    ],
)
def test_bad_options_are_one_clear_message_before_anything_loads(given, message):
    with pytest.raises(ConfigError, match=r"^Invalid hybrid options: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        HybridOptions(**given)


def test_a_history_without_a_catalogue_movie_has_no_candidates(dataset, lstm):
    hybrid = lstm_only(lstm)
    hybrid.fit(dataset)
    histories = dataset.cases["test"].histories[:2].copy()
    histories[1] = PAD_ITEM
    with pytest.raises(DualrecError, match="case 1 has no catalogue movie in its history, so the LSTM proposes no candidates"):
        hybrid.score(histories, dataset.cases["test"].users[:2])
    with pytest.raises(DualrecError, match="The history is empty"):
        hybrid.rerank([])


@pytest.mark.llm
def test_re_ranking_moves_only_the_top_n(dataset, lstm, backend):
    hybrid = HybridRecommender(HybridOptions(candidates=5), lstm=lstm, backend=backend)
    hybrid.ready(dataset)
    hybrid.weight = 2.0
    cases = sample_cases(dataset.cases["test"], CASES, 1)
    scores, probabilities = hybrid.score(cases.histories, cases.users), lstm.score(cases.histories, cases.users)
    seen = watched_before(dataset, cases)
    moved = 0
    for row in range(len(cases)):
        unseen = np.flatnonzero(~seen[row])
        by_lstm = unseen[np.argsort(-probabilities[row, unseen], kind="stable")]
        by_hybrid = unseen[np.argsort(-scores[row, unseen], kind="stable")]
        assert set(by_hybrid[:5]) == set(by_lstm[:5])  # the same five, maybe in another order
        np.testing.assert_array_equal(by_hybrid[5:], by_lstm[5:])  # the rest untouched
        moved += not np.array_equal(by_hybrid[:5], by_lstm[:5])
    assert moved  # the LLM changed some order
    history = dataset.user_items(int(cases.users[0]))[:20]
    reranked = hybrid.rerank(history)
    proposed = lstm.top_k(history, 5)
    assert sorted(reranked.items) == sorted(proposed.items) and (np.diff(reranked.scores) <= 0).all()
    np.testing.assert_allclose(reranked.scores, np.log(reranked.lstm_probabilities) + 2.0 * reranked.llm_scores, rtol=1e-6)
    np.testing.assert_array_equal(proposed.items[reranked.lstm_ranks - 1], reranked.items)


@pytest.mark.llm
@pytest.mark.slow
def test_w_is_chosen_on_validation_and_the_row_holds_the_paired_comparison(few, lstm, backend):
    hybrid = HybridRecommender(HybridOptions(candidates=4, weights=(0.0, 1.0, 4.0)), lstm=lstm, backend=backend)
    hybrid.fit(few)
    selection = hybrid.selection
    assert selection["split"] == "val" and selection["cases"] == CASES and selection["grid"] == [0.0, 1.0, 4.0]
    best = max(selection["scores"].values(), key=lambda scores: scores[SELECTION_METRIC])[SELECTION_METRIC]
    assert selection["scores"][str(hybrid.weight)][SELECTION_METRIC] == best >= selection["scores"]["0.0"][SELECTION_METRIC]
    hybrid.weight = 1.0  # a w the LLM counts in, whatever validation chose
    document = evaluate([lstm, hybrid], few, ["full"], samples=50)
    lstm_row, hybrid_row = document["results"]
    assert hybrid_row["options"]["selection"] == selection and hybrid_row["options"]["weight"] == 1.0
    assert hybrid_row["options"]["engine"] == "LlamaCppBackend" and hybrid_row["cases"] == CASES
    paired = hybrid_row["extra"]["paired"]
    for name in ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"):
        assert paired[name]["baseline"] == lstm_row["metrics"][name]["value"]
        assert paired[name]["system"] == hybrid_row["metrics"][name]["value"]
        assert paired[name]["low"] <= paired[name]["difference"] <= paired[name]["high"]
    cases = few.cases["test"]
    lstm_ranks = ranks_full(lstm.score(cases.histories, cases.users), cases.targets, watched_before(few, cases))
    assert len(paired["mcnemar"]) == 1 and hybrid_row["extra"]["ceiling"] == {"HR@4": float((lstm_ranks <= 4).mean())}
    table = results_tables(document["results"])
    assert (
        "Paired with the baseline on the same cases" in table
        and "| hybrid, smollm2-135m, likelihood, top 4 | full | lstm | 1.0 |" in table
    )


@pytest.mark.llm
@pytest.mark.slow
def test_scorer_auto_keeps_the_scorer_that_wins_on_validation_and_records_both(few, lstm, backend):
    hybrid = HybridRecommender(HybridOptions(candidates=4, scorer=AUTO, weights=(0.0, 1.0, 4.0)), lstm=lstm, backend=backend)
    hybrid.fit(few)
    selection, tried = hybrid.selection, hybrid.selection["scorers"]
    assert set(tried) == set(SCORERS) and hybrid.scorer in SCORERS and selection["scorer"] == hybrid.scorer
    best = {name: record["scores"][str(record["weight"])][SELECTION_METRIC] for name, record in tried.items()}
    assert best[hybrid.scorer] == max(best.values()) and hybrid.weight == tried[hybrid.scorer]["weight"]
    assert all(record["scorer"] == name and record["cases"] == CASES for name, record in tried.items())
    assert hybrid.options["scorer"] == AUTO and hybrid.options["scorer_used"] == hybrid.scorer
    assert hybrid.name == f"hybrid, smollm2-135m, {hybrid.scorer} (auto), top 4"


@pytest.mark.llm
@pytest.mark.slow
def test_the_sampled_protocol_scores_its_own_candidates_with_the_llm(few, lstm, backend):
    """Under sampled-20 the LLM scores the protocol's 20 candidates (the target among them), not the LSTM's top N."""
    hybrid = HybridRecommender(HybridOptions(candidates=2, scorer="labels"), lstm=lstm, backend=backend)
    hybrid.ready(few)
    hybrid.weight = 1.0
    cases = few.cases["test"]
    negatives = few.negatives(cases, seed=0)
    candidates = np.sort(np.c_[cases.targets, negatives], axis=1)
    scores = hybrid.score_candidates(cases.histories, cases.users, candidates)
    chosen = np.log(np.take_along_axis(lstm.score(cases.histories, cases.users), candidates, axis=1))
    llm = scores - chosen
    assert scores.shape == (CASES, 20) and (llm < 0).all() and np.isfinite(llm).all()  # each a label's log-probability
    assert len({tuple(np.round(row, 4)) for row in llm}) == CASES  # every case's own listing


@pytest.mark.llm
def test_recommend_prints_both_rankings_with_each_candidates_scores(ml_dir, tiny_lstm_dir, capsys):
    argv = ["recommend", "--user", "1", "--k", "3", "--hybrid", "--candidates", "6", "--model", str(tiny_lstm_dir)]
    assert main([*argv, "--data-dir", str(ml_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("LSTM top 3 after") and out[5].startswith("Hybrid top 3 (smollm2-135m, likelihood scorer)")
    assert "the LSTM's top 6 by log p_LSTM + 1 * s_LLM" in out[5] and out[6].split() == [
        "rank",
        "move",
        "(LSTM",
        "rank)",
        "LSTM",
        "p",
        "LLM",
        "s",
        "score",
        "title",
    ]
    assert len(out) == 10
    assert main([*argv, "--data-dir", str(ml_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["hybrid"]["recommendations"]
    assert [row["rank"] for row in rows] == [1, 2, 3] and all(row["change"] == row["lstm_rank"] - row["rank"] for row in rows)
    assert all(np.isclose(row["score"], np.log(row["probability"]) + row["llm_score"]) for row in rows)


def test_recommend_shows_the_lstms_ranking_when_the_hybrid_cannot_run(ml_dir, tiny_lstm_dir, capsys):
    for extra, message in [
        (["--llm", "deepseek-v3"], "the hybrid reads the log-probabilities of given answers, so it needs a local model"),
        (["--candidates", "1001"], "--candidates must be from 1 to 1000, not 1001"),
        (["--llm", "smollm2-135m+/nowhere/adapter"], "--llm: no LoRA adapter in /nowhere/adapter"),
    ]:
        argv = ["recommend", "--user", "1", "--k", "3", "--hybrid", *extra, "--model", str(tiny_lstm_dir)]
        assert main([*argv, "--data-dir", str(ml_dir)]) == 2
        out, err = capsys.readouterr()
        assert out.startswith("LSTM top 3 after") and len(out.strip().splitlines()) == 4 and "Hybrid" not in out
        first, last = err.strip().splitlines()
        assert message in first and last.endswith(
            "the hybrid was not run (see the first line); the LSTM's ranking is shown alone"
        )


@pytest.mark.llm
def test_evaluate_runs_lstm_and_hybrid_on_the_same_drawn_cases(ml_dir, tiny_lstm_dir, tmp_path, capsys):
    out_file = tmp_path / "hybrid.json"
    argv = ["evaluate", "--systems", "lstm,hybrid", "--lstm-dir", str(tiny_lstm_dir), "--out", str(out_file)]
    argv += [
        "--candidates",
        "3",
        "--hybrid-weights",
        "0,1",
        "--hybrid-limit",
        "4",
        "--hybrid-valid-limit",
        "3",
        "--negative-seeds",
        "2",
        "--hybrid-limit-seed",
        "7",
        "--bootstrap",
        "50",
    ]
    assert main([*argv, "--data-dir", str(ml_dir)]) == 0
    document = json.loads(out_file.read_text())
    assert [(row["system"], row["protocol"]) for row in document["results"]] == [
        ("lstm (4 test cases, seed 7)", "full"),
        ("lstm (4 test cases, seed 7)", "sampled-20"),
        ("hybrid, smollm2-135m, likelihood, top 3 (4 test cases, seed 7)", "full"),
        ("hybrid, smollm2-135m, likelihood, top 3 (4 test cases, seed 7)", "sampled-20"),
    ]
    sample = {"limit": 4, "valid_limit": 3, "seed": 7, "val_cases": 3, "test_cases": 4}
    assert {key: document["options"]["case_sample"][key] for key in sample} == sample
    assert document["results"][1]["extra"]["negative_seeds"] == [2]
    hybrid_full = document["results"][2]
    assert hybrid_full["options"]["selection"]["cases"] == 3 and hybrid_full["options"]["weight"] in (0.0, 1.0)
    assert "paired" in hybrid_full["extra"] and "HR@3" in hybrid_full["extra"]["ceiling"]
    printed = capsys.readouterr().out
    assert "Paired with the baseline on the same cases" in printed
    assert main(["results", str(out_file)]) == 0 and "ΔHR@5" in capsys.readouterr().out


# ---- the app's view (dualrec.app.hybrid_view, on the Recommend page) -------------------------------------------------


@pytest.fixture(scope="module")
def app_home(ml_dir, tiny_lstm_dir, tmp_path_factory):
    """DUALREC_HOME with the tiny trained LSTM, the generated MovieLens folder as the data folder."""
    with pytest.MonkeyPatch.context() as patch:
        yield app_folders(patch, tmp_path_factory.mktemp("hybrid-app-home"), ml_dir, tiny_lstm_dir)


def with_lstm(at: AppTest) -> AppTest:
    """The page rerun until the LSTM's background load has ended and the hybrid's controls show."""
    deadline = time.monotonic() + 120
    while not [button for button in at.button if button.key == "hybrid_go"]:
        assert time.monotonic() < deadline, "the LSTM did not load"
        time.sleep(0.2)
        at = page(at)
    return at


def finished(at: AppTest) -> AppTest:
    run = at.session_state[RUN]
    deadline = time.monotonic() + 300
    while not run.done:
        assert time.monotonic() < deadline, "the hybrid did not finish"
        time.sleep(0.2)
    return page(at)


def watched(dataset, count: int) -> list[int]:
    """The first movies (ids) a test user watched."""
    return [int(m) for m in dataset.catalogue[dataset.user_items(int(dataset.cases["test"].users[0]))[:count]]]


@pytest.mark.llm
def test_the_page_shows_the_hybrids_top_10_beside_the_lstms_with_moves_and_the_real_next_movie(app_home):
    at = with_lstm(page())
    at.toggle(key="reveal").set_value(True)
    at.number_input(key="hybrid_candidates").set_value(12)
    at = page(at)
    at.button(key="hybrid_go").click()
    at = finished(page(at))
    table = next(frame.value for frame in at.dataframe if "LLM score" in frame.value.columns)
    assert list(table["rank"]) == list(range(1, 11)) and set(table["LSTM rank"]) <= set(range(1, 13))
    assert (table["score"].diff().dropna() <= 1e-9).all()  # best first by log p + w * s
    np.testing.assert_allclose(table["score"], np.log(table["LSTM p"]) + RECOMMEND_WEIGHT * table["LLM score"], rtol=1e-5)
    assert "The real next movie" in texts(at.info) and "LSTM rank" in texts(at.info)
    assert {chart.proto.id for chart in at.get("plotly_chart")} and len(at.get("plotly_chart")) >= 2  # top-10 and moves


@pytest.mark.parametrize(
    ("spec", "history", "candidates", "message"),
    [
        ("deepseek-v3", None, 20, "needs a local model (a GGUF on llama.cpp or a transformers model"),
        ("smollm2-135m+/nowhere/adapter", None, 20, "--llm: no LoRA adapter in /nowhere/adapter"),
        (DEFAULT_PRESET, None, 1001, "--candidates must be from 1 to 1000, not 1001"),
        (DEFAULT_PRESET, None, 0, "--candidates must be from 1 to 1000, not 0"),
        (DEFAULT_PRESET, "outside", 20, "None of these movies is among the catalogue movies the LSTM knows"),
    ],
)
def test_bad_hybrid_input_is_the_runs_one_message_and_no_model_loads(dataset, lstm, spec, history, candidates, message):
    movies = watched(dataset, 5) if history is None else [int(m) for m in dataset.movies.index if dataset.item_of([m])[0] < 0][:3]
    loads = []
    run = start_hybrid(dataset, lstm, movies, spec, "likelihood", candidates, 1.0, loads.append)
    deadline = time.monotonic() + 60
    while not run.done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert message in run.error and run.result is None and not loads


@pytest.mark.llm
def test_a_stopped_run_ends_without_a_ranking(dataset, lstm, backend):
    run = start_hybrid(dataset, lstm, watched(dataset, 5), DEFAULT_PRESET, "likelihood", 20, 1.0, lambda spec: backend)
    run.stop()
    deadline = time.monotonic() + 120
    while not run.done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert run.result is None and run.error is None


@pytest.mark.llm
def test_the_app_rerank_equals_the_hybrids_own(dataset, lstm, backend):
    history = watched(dataset, 8)
    run = start_hybrid(dataset, lstm, history, DEFAULT_PRESET, "likelihood", 7, 0.5, lambda spec: backend)
    while not run.done:
        time.sleep(0.05)
    hybrid = HybridRecommender(HybridOptions(candidates=7), lstm=lstm, backend=backend)
    hybrid.ready(dataset)
    hybrid.weight = 0.5
    expected = hybrid.rerank([int(i) for i in dataset.item_of(history) if i >= 0])
    assert run.error is None
    np.testing.assert_array_equal(run.result.items, expected.items)
    np.testing.assert_allclose(run.result.llm_scores, expected.llm_scores, atol=1e-9)
    figure = moves_figure(dataset, run.result)
    assert len(figure.data) == 7 and all(list(trace.x) == ["LSTM", "hybrid"] for trace in figure.data)
    assert len(hybrid_table(dataset, run.result)) == 7
