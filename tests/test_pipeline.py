"""Stage 2 end to end: histories without held-out targets, the LSTM's pick, the prompt, a streamed answer, matches."""

import threading
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.data.dataset import PAD_ITEM
from dualrec.errors import UnknownUserError
from dualrec.grounding.pipeline import interpret, load_trained_lstm, lstm_top1, prepare_prompt, run_stage2, user_history
from dualrec.llm import DEFAULT_PRESET, GenerationSettings, LLMBackend, Message, load_backend


class ScriptedBackend(LLMBackend):
    """A backend that streams a fixed answer in the given chunks."""

    def __init__(self, chunks: list[str]):
        super().__init__("scripted")
        self.chunks = chunks
        self.prompts: list[list[Message]] = []

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        self.prompts.append(messages)
        yield from self.chunks


class FixedLSTM:
    """Stands in for a trained LSTM: always ranks the given catalogue item first."""

    def __init__(self, item: int):
        self.item = item
        self.histories: list[np.ndarray] = []

    def top_k(self, history_items, k=10, exclude_watched=True) -> SimpleNamespace:
        self.histories.append(np.asarray(history_items))
        return SimpleNamespace(items=np.array([self.item]), probabilities=np.array([0.5]))


def test_held_out_users_never_see_their_target(dataset):
    for split in ("test", "val"):
        cases = dataset.cases[split]
        for user, target, window in zip(cases.users, cases.targets, cases.histories):
            history = user_history(dataset, int(user))
            assert dataset.catalogue[target] not in history
            assert history == dataset.catalogue[window[window != PAD_ITEM]].tolist()


def test_other_users_get_their_whole_catalogue_history(dataset):
    user = int(dataset.split_users["train"][0])
    assert user_history(dataset, user) == dataset.catalogue[dataset.user_items(user)].tolist()
    with pytest.raises(UnknownUserError):
        user_history(dataset, 99_999)


def test_without_a_trained_lstm_the_note_says_how_to_train(dataset, tmp_path):
    lstm, note = load_trained_lstm(dataset, tmp_path)
    assert lstm is None and "No trained LSTM" in note and "dualrec train lstm" in note


def test_lstm_top1_reads_catalogue_movies_and_returns_a_movie_id(dataset):
    history = [int(dataset.catalogue[3]), int(dataset.catalogue[5])]
    non_catalogue = sorted(set(dataset.movies.index) - set(dataset.catalogue.tolist()))[:1]
    lstm = FixedLSTM(item=7)
    assert lstm_top1(dataset, lstm, non_catalogue + history) == int(dataset.catalogue[7])
    assert lstm.histories[0].tolist() == [3, 5]
    assert lstm_top1(dataset, lstm, non_catalogue) is None
    assert lstm_top1(dataset, None, history) is None


def test_the_prompt_carries_the_pick_or_the_note(dataset):
    history = user_history(dataset, int(dataset.split_users["test"][0]))
    pick = int(dataset.catalogue[0])
    prompt = prepare_prompt(dataset, history, pick)
    assert f"recommends: {dataset.movies.loc[pick, 'raw_title']}." in prompt.text
    assert prompt.history == tuple(history) and prompt.lstm_pick == pick and prompt.template == "poster"
    without = prepare_prompt(dataset, history, None, note="no model")
    assert "has no recommendation" in without.text and without.note == "no model"


def test_interpret_matches_titles_and_keeps_only_new_movies(dataset):
    prompt = prepare_prompt(dataset, [8], None)  # Toy Story watched
    answer = "<think>Maybe Alien³?</think>\n1. Toy Story (1995)\n2. The Matrix (1999)\n3. Shrek (2001)\n4. Matrix, The (1999)"
    result = interpret(dataset, prompt, answer)
    assert result.reasoning == "Maybe Alien³?"
    assert [m.movie_id for m in result.titles] == [8, 7, None, 7]
    assert result.recommended == [7] and result.hallucinations == 1
    assert result.as_dict()["titles"][2] == {
        "text": "Shrek (2001)",
        "title": "Shrek",
        "year": 2001,
        "movie_id": None,
        "score": None,
        "movie": None,
    }


def test_run_stage2_streams_chunks_and_times_the_answer(dataset):
    backend = ScriptedBackend(["1. The Mat", "rix (1999)\n", "2. Toy Story 2 (1999)"])
    prompt = prepare_prompt(dataset, [8], None)
    seen: list[str] = []
    result = run_stage2(dataset, backend, prompt, on_chunk=seen.append)
    assert seen == backend.chunks and result.answer == "".join(seen)
    assert backend.prompts[0][-1]["content"] == prompt.text
    assert result.recommended == [7, 9] and result.seconds > 0


@pytest.mark.llm
def test_the_embedded_model_answers_end_to_end(dataset):
    backend = load_backend(DEFAULT_PRESET)
    try:
        prompt = prepare_prompt(dataset, user_history(dataset, int(dataset.split_users["test"][0])), None, template="list-k")
        chunks: list[str] = []
        result = run_stage2(dataset, backend, prompt, GenerationSettings(max_new_tokens=24, greedy=True), on_chunk=chunks.append)
    finally:
        backend.close()
    assert len(chunks) > 1 and result.answer.strip()
    assert all(m.movie_id is None or m.movie_id in dataset.movies.index for m in result.titles)


@pytest.mark.slow
def test_a_trained_lstm_gives_the_pick(dataset, tmp_path):
    from dualrec.config import LSTMConfig
    from dualrec.ranking.lstm import train_lstm

    train_lstm(dataset, LSTMConfig(epochs=1), verbose=0).save(tmp_path / "lstm")
    lstm, note = load_trained_lstm(dataset, tmp_path / "lstm")
    history = user_history(dataset, int(dataset.split_users["test"][0]))
    pick = lstm_top1(dataset, lstm, history)
    assert note is None and pick in dataset.catalogue and pick not in history
