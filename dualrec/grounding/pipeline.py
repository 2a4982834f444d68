"""DUALRec stage 2 end to end: history -> LSTM top-1 -> prompt -> LLM answer (streamed) -> titles -> MovieLens movies.

Used by `dualrec generate`, the free-form evaluation and the app:

    lstm, note = load_trained_lstm(dataset)                        # (None, why) when no LSTM is trained
    prompt = prepare_prompt(dataset, history, lstm_top1(dataset, lstm, history), note=note)
    result = run_stage2(dataset, backend, prompt, on_chunk=show)   # streams, then parses and matches
    # grounded=True: only real, unwatched catalogue movies can be written (dualrec.grounding.grounded)
    # or stream backend.stream(prompt.text) yourself and then: result = interpret(dataset, prompt, answer)
    result.titles       # every recommended title in order, matched (movie_id, score) or not (a hallucination)
    result.recommended  # the matched movie ids, without duplicates and watched movies

A MovieLens user's history never contains their held-out target: validation and test users get the history of their
evaluation case (the LSTM's window), every other user their whole catalogue sequence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from dualrec.config import LSTM_MODEL_FILE, LSTM_TRAIN_COMMAND, PROMPT_K, PROMPT_TEMPLATE, paths
from dualrec.data.dataset import PAD_ITEM, Dataset
from dualrec.errors import DualrecError
from dualrec.grounding.grounded import Grounding, answer_constraint, grounded_answer
from dualrec.grounding.matching import Match, match_all
from dualrec.grounding.parsing import parse_answer
from dualrec.grounding.prompts import build_prompt
from dualrec.llm.base import GenerationSettings, LLMBackend
from dualrec.llm.reasoning import split_reasoning

if TYPE_CHECKING:
    from dualrec.ranking.lstm import LSTMRecommender


@dataclass(frozen=True)
class Stage2Prompt:
    """A filled prompt and what it was made from."""

    history: tuple[int, ...]  # movie ids, oldest first
    lstm_pick: int | None  # the LSTM's top-1 movie id; None: no trained LSTM (see note)
    template: str
    text: str
    note: str | None = None  # why there is no LSTM pick, and how to get one
    k: int = PROMPT_K  # how many movies the prompt asks for


@dataclass(frozen=True)
class Stage2Result:
    """A model's answer to a Stage2Prompt, read and matched to MovieLens."""

    prompt: Stage2Prompt
    answer: str  # everything the model wrote, reasoning included
    reasoning: str  # the <think> part, never parsed
    titles: list[Match] = field(default_factory=list)  # every recommended title in order, matched or not
    seconds: float = 0.0
    grounding: Grounding | None = None  # None: a free answer, grounding not asked for

    @property
    def recommended(self) -> list[int]:
        """Matched movie ids in the answer's order, without duplicates and without movies of the history."""
        seen = set(self.prompt.history)
        ids = []
        for match in self.titles:
            if match.movie_id is not None and match.movie_id not in seen:
                seen.add(match.movie_id)
                ids.append(match.movie_id)
        return ids

    @property
    def hallucinations(self) -> int:
        """How many recommended titles name no MovieLens movie."""
        return sum(1 for match in self.titles if match.movie_id is None)

    def as_dict(self) -> dict:
        return {
            "history": list(self.prompt.history),
            "lstm_pick": self.prompt.lstm_pick,
            "template": self.prompt.template,
            "prompt": self.prompt.text,
            "note": self.prompt.note,
            "answer": self.answer,
            "reasoning": self.reasoning,
            "titles": [match.as_dict() for match in self.titles],
            "recommended": self.recommended,
            "seconds": round(self.seconds, 3),
        } | (self.grounding or Grounding(False, "not asked")).as_dict()


def user_history(dataset: Dataset, user_id: int) -> list[int]:
    """A MovieLens user's catalogue movies, oldest first, with held-out targets cut off (see the module docstring)."""
    dataset.check_user(user_id)
    for split in ("test", "val"):
        cases = dataset.cases[split]
        rows = (cases.users == user_id).nonzero()[0]
        if len(rows):
            items = cases.histories[rows[-1]]
            return dataset.catalogue[items[items != PAD_ITEM]].tolist()
    history = dataset.catalogue[dataset.user_items(user_id)].tolist()
    if not history:
        raise DualrecError(f"User {user_id} rated no catalogue movie, so there is no history to prompt with.")
    return history


def load_trained_lstm(dataset: Dataset, folder: str | Path | None = None) -> tuple[LSTMRecommender | None, str | None]:
    """(the saved LSTM, None), or (None, a note saying there is none and how to train it).

    TensorFlow is imported only when a model file is there.
    """
    where = Path(folder) if folder else paths().lstm
    if not (where / LSTM_MODEL_FILE).is_file():
        out = f" --out {where}" if folder else ""
        return None, f"No trained LSTM in {where}, so the prompt has no LSTM pick. Train one with: {LSTM_TRAIN_COMMAND}{out}"
    from dualrec.ranking.lstm import load_lstm

    return load_lstm(where, dataset), None


def lstm_top1(dataset: Dataset, lstm: LSTMRecommender | None, history: Sequence[int]) -> int | None:
    """The LSTM's most probable next movie (movie id) after a history of movie ids, watched movies excluded.

    None when there is no LSTM or no catalogue movie in the history (the LSTM reads catalogue movies only).
    """
    items = dataset.item_of(list(history))
    items = items[items >= 0]
    if lstm is None or not len(items):
        return None
    return int(dataset.catalogue[lstm.top_k(items, k=1).items[0]])


def prepare_prompt(
    dataset: Dataset,
    history: Sequence[int],
    lstm_pick: int | None,
    template: str = PROMPT_TEMPLATE,
    k: int = PROMPT_K,
    note: str | None = None,
) -> Stage2Prompt:
    """The Stage2Prompt for a history of movie ids and the LSTM's pick (None, with a `note` saying why)."""
    text = build_prompt(dataset.movies, history, lstm_pick, template, k)
    return Stage2Prompt(tuple(int(m) for m in history), lstm_pick, template, text, note, k)


def interpret(
    dataset: Dataset, prompt: Stage2Prompt, answer: str, seconds: float = 0.0, grounding: Grounding | None = None
) -> Stage2Result:
    """Read an answer: reasoning apart, recommended titles parsed (prompt echoes ignored) and matched."""
    parsed = parse_answer(answer, prompt.text)
    titles = match_all(dataset, [(p.text, p.title, p.year) for p in parsed])
    return Stage2Result(prompt, answer, split_reasoning(answer)[0], titles, seconds, grounding)


def run_stage2(
    dataset: Dataset,
    backend: LLMBackend,
    prompt: Stage2Prompt,
    settings: GenerationSettings | None = None,
    on_chunk: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    grounded: bool = False,
    allowed: Collection[int] | None = None,
) -> Stage2Result:
    """Stream the model's answer to a prompt (each chunk to `on_chunk`), then read and match it.

    `grounded`: the answer can only name catalogue movies outside the prompt's history, `prompt.k` of them, in the
    answer format, and only movies of `allowed` (movie ids) when given; where the engine cannot ground it, a free
    answer whose result says so (`result.grounding`).
    """
    started = time.perf_counter()
    chunks, grounding = [], []
    stream = partial(backend.stream, prompt.text, settings, stop=stop)
    if grounded:
        constraint = answer_constraint(dataset, prompt.history, prompt.k, allowed)
        answer = grounded_answer(stream, constraint, backend.grounding, grounding.append)
    else:
        answer = stream()
    for chunk in answer:
        chunks.append(chunk)
        if on_chunk:
            on_chunk(chunk)
    return interpret(dataset, prompt, "".join(chunks), time.perf_counter() - started, grounding[-1] if grounding else None)
