"""The ranking task's examples (issue 13): an adapter that scores the hybrid's candidates as the hybrid reads them.

At a training window's end (the window as the LSTM reads it, the next movie its target), the LSTM's top N unseen
movies are the hybrid's candidates (dualrec.ranking.hybrid.top_unseen); when the LSTM missed the target it takes the
N-th candidate's place, and the order is shuffled. The prompt is the hybrid's own, built by its functions:

- `likelihood`: the history and the request (`likelihood_prompt`); the answer is the target as the scorer writes it
  (`answer_text`), and the loss covers exactly those tokens, which the scorer sums;
- `labels`: the history and the candidates listed (A)...(T) (`label_prompt`); the answer is '(' and the target's letter,
  whose log-probability the scorer reads.

Training examples come from training users' most recent windows, validation examples from validation users (their
most recent window, one each); test users never appear. Task dispatch for the trainer and `--dump-examples`:
`task_examples`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from dualrec.data.dataset import PAD_ITEM, Dataset, Windows, sequence_bounds
from dualrec.errors import DualrecError
from dualrec.finetune.examples import (
    SHOWN,
    TARGETS,
    Example,
    FinetuneOptions,
    TopOne,
    build_examples,
    example_users,
    one_per_user,
)
from dualrec.llm.scoring import LABEL_PREFIX, LABELS
from dualrec.ranking.hybrid import PROMPT_HISTORY, answer_text, label_prompt, likelihood_prompt, seen_through_history, top_unseen

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Ranker(TopOne, Protocol):
    """What the ranking examples need of the LSTM: its probabilities of every catalogue movie after each history."""

    def probabilities(self, histories: np.ndarray) -> np.ndarray: ...


def task_examples(
    dataset: Dataset, split: str, lstm: Ranker, options: FinetuneOptions, count: int | None = None
) -> list[Example]:
    """The options' task's examples from a split ("train" or "val"): of every user (`count` None: the training set), or
    one each of `count` users drawn with the options' seed (validation, --dump-examples)."""
    if options.task != "rerank":
        users = example_users(dataset, split)
        return (
            build_examples(dataset, users, lstm, options) if count is None else one_per_user(dataset, split, lstm, options, count)
        )
    if count is None:
        return rerank_examples(
            dataset, recent_windows(dataset, split, example_users(dataset, split), options.examples_per_user), lstm, options
        )
    users = example_users(dataset, split)
    chosen = np.sort(np.random.default_rng(options.seed).choice(users, size=min(count, len(users)), replace=False))
    return rerank_examples(dataset, recent_windows(dataset, split, chosen, 1), lstm, options)


def recent_windows(dataset: Dataset, split: str, users: np.ndarray, per_user: int) -> Windows:
    """The most recent `per_user` windows of each of `users` among the split's windows (stored per user, oldest first)."""
    windows = dataset.windows[split]
    windows = windows.take(np.flatnonzero(np.isin(windows.users, users)))
    _, starts, lengths = sequence_bounds(windows.users)
    from_end = np.repeat(starts + lengths, lengths) - np.arange(len(windows)) - 1
    return windows.take(np.flatnonzero(from_end < per_user))


def rerank_examples(dataset: Dataset, windows: Windows, lstm: Ranker, options: FinetuneOptions) -> list[Example]:
    """One example per window: the LSTM's top `candidates` with the target among them, shuffled with the options' seed."""
    if not len(windows):
        return []
    probabilities = lstm.probabilities(windows.histories)
    top = top_unseen(probabilities, seen_through_history(dataset, windows.histories, windows.users), options.candidates)
    rng = np.random.default_rng(options.seed)
    return [
        rerank_example(dataset, history, int(target), int(user), best, candidate_list(best, int(target), rng), options.scorer)
        for history, target, user, best in zip(windows.histories, windows.targets, windows.users, top)
    ]


def candidate_list(top: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """The LSTM's top items with the target among them (in the last one's place when the LSTM missed it), shuffled."""
    items = top.copy()
    if target not in items:
        items[-1] = target
    return rng.permutation(items)


def rerank_example(
    dataset: Dataset, history: np.ndarray, target: int, user: int, top: np.ndarray, items: np.ndarray, scorer: str
) -> Example:
    """The hybrid's prompt for a window and its candidates `items` (from the LSTM's `top`), and the answer its scorer
    reads for the target (all catalogue items)."""
    if scorer == "labels":
        prompt, answer = label_prompt(dataset, history, items), LABEL_PREFIX + LABELS[int(np.flatnonzero(items == target)[0])]
    else:
        prompt, answer = likelihood_prompt(dataset, history), answer_text(dataset, target)
    shown = dataset.catalogue[history[history != PAD_ITEM]][-PROMPT_HISTORY:]
    return Example(
        user,
        tuple(int(m) for m in shown),
        int(dataset.catalogue[top[0]]),
        (int(dataset.catalogue[target]),),
        prompt,
        answer,
        closed=False,
        candidates=tuple(int(m) for m in dataset.catalogue[items]),
    )


def check_label_tokens(tokenizer: PreTrainedTokenizerBase, base: str, count: int) -> None:
    """DualrecError unless the tokenizer writes each of the first `count` labels as one token after '(', as the labels
    scorer reads them (dualrec.llm.scoring.ScoringEngine.label_token)."""
    prefix = tokenizer(LABEL_PREFIX, add_special_tokens=False)["input_ids"]
    for label in LABELS[:count]:
        joined = tokenizer(LABEL_PREFIX + label, add_special_tokens=False)["input_ids"]
        if joined[: len(prefix)] != prefix or len(joined) != len(prefix) + 1:
            raise DualrecError(
                f"{base}'s tokenizer does not write the label {label!r} as one token after '(', so the labels scorer cannot "
                "read it: train with --scorer likelihood"
            )


def examples_record(options: FinetuneOptions) -> dict:
    """What metadata.json says of the examples' shape: the movies shown, the answer, the template or scorer."""
    if options.task == "rerank":
        return {"history": PROMPT_HISTORY, "targets": 1, "candidates": options.candidates, "scorer": options.scorer}
    return {"history": SHOWN, "targets": TARGETS, "template": options.template}
