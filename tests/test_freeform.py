"""The `freeform` protocol: LLMAnswers, a list system: seeded subsamples, rankings from matched answers, the figures
and the saved answers; the notebook call of dualrec.evaluation's docstring."""

import dataclasses
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.config import FREEFORM, paths
from dualrec.data.dataset import PAD_ITEM
from dualrec.errors import ConfigError
from dualrec.evaluation import LLMAnswers, evaluate, markdown_table
from dualrec.evaluation.freeform import sample_cases
from dualrec.evaluation.harness import watched_before
from dualrec.grounding.pipeline import prepare_prompt
from dualrec.grounding.prompts import format_answer
from dualrec.llm import GenerationSettings, LLMBackend, Message


class OracleBackend(LLMBackend):
    """Answers each prompt from a table: prompt text -> answer (what a perfect or a broken model would write)."""

    def __init__(self, answers: dict[str, str]):
        super().__init__("oracle")
        self.answers = answers

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        yield self.answers.get(messages[-1]["content"], "")


def test_subsamples_are_seeded_sorted_and_bounded(dataset):
    cases = dataset.cases["test"]
    first, again = sample_cases(cases, 10, 0), sample_cases(cases, 10, 0)
    assert np.array_equal(first.users, again.users) and len(first) == 10
    assert not np.array_equal(first.users, sample_cases(cases, 10, 1).users)
    assert np.all(np.diff(first.users) > 0)
    assert sample_cases(cases, len(cases) + 5, 0) is cases and sample_cases(cases, None, 0) is cases


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "--limit must be at least 1, not 0"),
        ({"limit_seed": -1}, "--limit-seed must be from 0 to 4294967295, not -1"),
        ({"k": 0}, "--k must be at least 1, not 0"),
        ({"max_new_tokens": 0}, "--max-new-tokens must be at least 1, not 0"),
        ({"sample_seed": 2**32}, "--sample-seed must be from 0 to 4294967295, not 4294967296"),
        ({"concurrency": 0}, "--concurrency must be at least 1, not 0"),
        ({"template": "haiku"}, "--template must be one of poster, list-k, full-history, not 'haiku'"),
        ({"model": "no-such-model"}, "unknown model preset 'no-such-model'"),
        ({"model": "./no-such-model.gguf"}, "no model at ./no-such-model.gguf"),
        ({"model": "gpt-17+adapters/mine"}, "unknown model preset 'gpt-17'"),
        ({"model": "smollm2-135m+adapters/none"}, "no LoRA adapter in"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_bad_options_are_refused_when_the_system_is_made(options, message):
    """Before any data, model or case is touched: the library refuses what the command line refuses."""
    with pytest.raises(ConfigError, match=re.escape(f"Invalid freeform options: {message}")):
        LLMAnswers(**options)


def freeform_entry(dataset, system: LLMAnswers) -> dict:
    """The results row of one list system under `freeform`."""
    return evaluate([system], dataset, [FREEFORM], samples=50)["results"][0]


def oracle_answers(dataset, cases, system: LLMAnswers) -> dict[str, str]:
    """For every case: a hallucination, a movie watched before the target, then the target."""
    watched = watched_before(dataset, cases)
    answers = {}
    for row, (window, target) in enumerate(zip(cases.histories, cases.targets)):
        history = dataset.catalogue[window[window != PAD_ITEM]].tolist()
        prompt = prepare_prompt(dataset, history, None, system.template, system.k).text
        seen = int(dataset.catalogue[np.flatnonzero(watched[row])[0]])
        answers[prompt] = "1. The Night Circus (2017)\n" + format_answer(dataset.movies, [seen, int(dataset.catalogue[target])])
    return answers


def test_the_target_named_after_a_hallucination_and_a_watched_movie_ranks_first(dataset, tmp_path):
    system = LLMAnswers(limit=12, lstm_dir=str(tmp_path / "no-lstm"), answers=tmp_path / "answers.jsonl")
    cases = sample_cases(dataset.cases["test"], system.limit, system.limit_seed)
    backend = OracleBackend(oracle_answers(dataset, cases, system))
    entry = freeform_entry(dataset, dataclasses.replace(system, model="oracle", backend=backend))
    assert entry["protocol"] == FREEFORM and entry["system"] == "DUALRec, oracle" and entry["cases"] == 12
    assert entry["metrics"]["HR@1"]["value"] == 1.0 and entry["metrics"]["NDCG@10"]["value"] == 1.0
    extra = entry["extra"]
    assert extra["hallucination_rate"] == pytest.approx(1 / 3) and extra["answers_with_a_valid_title"] == 1.0
    assert extra["ranked_per_answer"] == 1.0 and extra["cases_total"] == len(dataset.cases["test"])
    assert dataclasses.replace(system, backend=backend, grounded=True).name == "DUALRec, smollm2-135m, grounded"
    assert entry["options"]["lstm_pick"] is False and "genre_similarity@10" in entry["lists"]
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(r["target_rank"] == 1 for r in records)
    assert records[0]["titles"][0]["movie_id"] is None and records[0]["prompt"] in backend.answers


def test_a_model_that_says_nothing_ranks_nothing(dataset, tmp_path):
    entry = freeform_entry(dataset, LLMAnswers("mute", limit=5, lstm_dir=str(tmp_path), backend=OracleBackend({})))
    assert entry["metrics"]["HR@10"]["value"] == 0.0
    assert entry["extra"]["empty_answers"] == 5 and entry["extra"]["answers_with_a_valid_title"] == 0.0


@pytest.mark.llm
def test_the_embedded_model_runs_the_protocol(dataset, tmp_path):
    entry = freeform_entry(dataset, LLMAnswers("smollm2-135m", limit=2, k=3, max_new_tokens=24, lstm_dir=str(tmp_path)))
    assert entry["cases"] == 2 and entry["options"]["settings"]["max_new_tokens"] == 24
    assert set(entry["metrics"]) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 5, 10)}
    assert entry["seconds"]["per_answer"] > 0


class OneAtATime(OracleBackend):
    """An oracle that counts the answers it writes at the same time, as a local engine would meet them."""

    def __init__(self, answers: dict[str, str]):
        super().__init__(answers)
        self.writing = self.most_writing = 0

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        self.writing += 1
        self.most_writing = max(self.most_writing, self.writing)
        time.sleep(0.01)
        yield from super()._stream(messages, settings, stop)
        self.writing -= 1


def test_a_local_engine_answers_one_at_a_time_and_the_results_say_the_concurrency_was_ignored(dataset, tmp_path):
    system = LLMAnswers(limit=8, lstm_dir=str(tmp_path), concurrency=4)
    backend = OneAtATime(oracle_answers(dataset, sample_cases(dataset.cases["test"], 8, 0), system))
    entry = freeform_entry(dataset, dataclasses.replace(system, model="oracle", backend=backend))
    assert backend.most_writing == 1 and entry["metrics"]["HR@1"]["value"] == 1.0
    assert entry["options"]["concurrency"] == 1
    assert entry["options"]["concurrency_note"] == "concurrency 4 ignored: oracle runs locally (OneAtATime), one answer at a time"


@pytest.mark.llm
@pytest.mark.slow
def test_the_notebook_call_of_the_docstring(dataset, tiny_lstm_dir, tmp_path, monkeypatch):
    """LSTM + MostPop + the embedded LLM in one call, as dualrec.evaluation's docstring shows it (the LSTM where
    `dualrec train lstm` saves it)."""
    monkeypatch.setenv("DUALREC_HOME", str(tmp_path))
    shutil.copytree(tiny_lstm_dir, paths().lstm)
    document = evaluate(["lstm", "mostpop", LLMAnswers("smollm2-135m", limit=20)], dataset, ["full", "sampled-20", "freeform"])
    rows = [(entry["system"], entry["protocol"]) for entry in document["results"]]
    assert rows == [
        ("lstm", "full"),
        ("lstm", "sampled-20"),
        ("mostpop", "full"),
        ("mostpop", "sampled-20"),
        ("DUALRec, smollm2-135m", "freeform"),
    ]
    answered = document["results"][-1]
    assert answered["cases"] == 20 and answered["options"]["lstm_pick"] and answered["extra"]["answers"] == 20
    assert len(document["skipped"]) == 4 and markdown_table(document["results"]).count("\n") == 6
