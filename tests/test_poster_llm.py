"""The LLM systems under the poster protocol (PO4ISR's own LLM setting: each sampled session's 20 candidates re-ranked):
a seeded subsample of the sessions, the hybrid on the LSTM of the same training sessions with w chosen among the
validation sessions' candidates, and NIR, on the generated fixture with a tiny LSTM and the real embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.cli import main
from dualrec.config import PosterConfig
from dualrec.data.poster import CANDIDATES, EVAL_SAMPLE, load_poster, poster_dataset
from dualrec.evaluation.freeform import sampled_rows
from dualrec.evaluation.poster import evaluate_poster
from dualrec.evaluation.results import poster_comparison, read_results
from dualrec.ranking.hybrid import HybridOptions
from dualrec.ranking.nir import NIROptions
from tests.conftest import TINY_LSTM
from tests.test_poster import ByItemId

SESSIONS = 4  # validation and test sessions drawn for the runs that ask the LLM


@pytest.fixture(scope="module")
def poster(ml_dir):
    return load_poster(ml_dir)


@pytest.fixture(scope="module")
def poster_lstm_dir(poster, tmp_path_factory) -> Path:
    """A tiny LSTM trained on the protocol's 150 training sessions of the fixture."""
    from dualrec.ranking.lstm import train_lstm  # TensorFlow loads only for the tests that ask

    folder = tmp_path_factory.mktemp("poster-lstm") / "lstm"
    train_lstm(poster_dataset(poster, "150"), TINY_LSTM, verbose=0).save(folder)
    return folder


def test_a_session_sample_scores_the_drawn_sessions_with_their_own_candidates(poster):
    document = evaluate_poster(
        [ByItemId()], poster, PosterConfig(candidate_seeds=(10,)), samples=20, limits={"test": 50}, limit_seed=3
    )
    row = document["results"][0]
    rows = sampled_rows(EVAL_SAMPLE, 50, 3)
    view = poster_dataset(poster, "150")
    items = view.item_of(poster.test_candidates[10][rows].ravel()).reshape(-1, CANDIDATES)
    expected = 1 + (items < view.cases["test"].targets[rows][:, None]).sum(axis=1)
    assert row["cases"] == 50 and row["metrics"]["HR@1"]["value"] == pytest.approx(np.mean(expected == 1))
    assert (
        row["system"]
        == "by-item-id (150 training sessions, the poster's setting; 50 of the 1,000 sessions, seed 3; candidate seed 10)"
    )
    assert document["options"]["session_sample"] == {"val_sessions": EVAL_SAMPLE, "test_sessions": 50, "seed": 3}


def test_at_w_0_the_poster_hybrid_is_the_lstm_of_the_same_sessions(poster, poster_lstm_dir):
    """No LLM loads at w = 0; w is chosen among the validation sessions' candidates; the paired comparison is with the
    LSTM of the same training sessions, on the same sessions and draws."""
    only_lstm = {"hybrid": HybridOptions(weights=(0.0,), scorer="labels")}
    config = PosterConfig(candidate_seeds=(0, 10))
    document = evaluate_poster(
        ["lstm", "hybrid"], poster, config, samples=20, lstm_dir=poster_lstm_dir, llm_options=only_lstm, limits={"val": 30}
    )
    lstm, hybrid = document["results"]
    assert hybrid["system"].startswith("hybrid, smollm2-135m, labels, top 20 (150 training sessions")
    assert hybrid["metrics"] == lstm["metrics"]
    selection = hybrid["options"]["selection"]
    assert selection["protocol"] == "among 20 given candidates" and selection["cases"] == 30 and hybrid["options"]["weight"] == 0
    paired = hybrid["extra"]["paired"]
    assert paired["HR@5"]["baseline"] == lstm["metrics"]["HR@5"]["value"] and paired["HR@5"]["difference"] == 0
    assert [test["metric"] for test in paired["mcnemar"]] == ["HR@5", "HR@5"]


@pytest.mark.llm
def test_the_poster_hybrid_rescores_the_candidates_with_the_llm(poster, poster_lstm_dir):
    options = {"hybrid": HybridOptions(weights=(0.0, 1.0), scorer="labels", engine="llama.cpp")}
    limits = {"val": SESSIONS, "test": SESSIONS}
    document = evaluate_poster(
        ["hybrid"],
        poster,
        PosterConfig(candidate_seeds=(0,)),
        samples=20,
        lstm_dir=poster_lstm_dir,
        llm_options=options,
        limits=limits,
    )
    row = document["results"][0]
    selection = row["options"]["selection"]
    assert row["cases"] == SESSIONS and set(selection["scores"]) == {"0.0", "1.0"} and selection["cases"] == SESSIONS
    assert row["options"]["weight"] == max(selection["grid"], key=lambda w: (selection["scores"][str(w)]["NDCG@10"], -w))
    assert row["extra"]["paired"]["baseline"] == "lstm" and row["options"]["engine"] == "LlamaCppBackend"


@pytest.mark.llm
@pytest.mark.slow
def test_nir_ranks_the_poster_candidates_on_the_command_line(ml_dir, poster, tmp_path, capsys):
    out = tmp_path / "poster-nir.json"
    argv = ["evaluate", "--protocol", "poster", "--systems", "nir", "--candidate-seeds", "0", "--hybrid-limit", "2"]
    assert main([*argv, "--data-dir", str(ml_dir), "--bootstrap", "20", "--out", str(out)]) == 0
    row = read_results(out)["results"][0]
    assert (
        row["system"]
        == "NIR (smollm2-135m, not GPT-3) (150 training sessions, the poster's setting; 2 of the 1,000 sessions, seed 0; "
        "candidate seed 0)"
    )
    assert row["cases"] == 2 and row["extra"]["ceiling"] == 1.0  # the target is always among the protocol's candidates
    answers = [json.loads(line) for line in out.with_name("poster-nir-nir-answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all(record["candidates_from"] == "given" for record in answers)
    assert NIROptions().llm in capsys.readouterr().out
    compared = [figure for figure in poster_comparison([row]) if figure["poster system"] == "NIR"]
    assert [figure["ours"] for figure in compared] == [row["system"]] * 4  # beside the poster's NIR row
