"""The ranking task's examples (issue 13): training users' windows, the LSTM's candidates with the target among them,
shuffled, the hybrid's own prompts, and the loss on exactly what each scorer reads."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.commands import finetune as finetune_command
from dualrec.errors import ConfigError, DualrecError
from dualrec.finetune.examples import IGNORE, RERANK_PROFILES, FinetuneOptions, encode, profile
from dualrec.finetune.rerank import check_label_tokens, recent_windows, task_examples
from dualrec.llm.scoring import LABELS
from dualrec.ranking.hybrid import answer_text, label_prompt, likelihood_prompt, seen_through_history, top_unseen
from tests.finetune_fixtures import byte_tokenizer

LIKELIHOOD = FinetuneOptions(task="rerank", candidates=8, examples_per_user=2)
LABELLED = dataclasses.replace(LIKELIHOOD, scorer="labels")


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def windows(dataset):
    return recent_windows(dataset, "train", dataset.split_users["train"], LIKELIHOOD.examples_per_user)


@pytest.fixture(scope="module")
def likelihood_examples(dataset, lstm):
    return task_examples(dataset, "train", lstm, LIKELIHOOD)


@pytest.fixture(scope="module")
def label_examples(dataset, lstm):
    return task_examples(dataset, "train", lstm, LABELLED)


def test_the_most_recent_windows_of_training_users_only(dataset, windows):
    stored = dataset.windows["train"]
    for user in dataset.split_users["train"][:20]:
        own = stored.targets[stored.users == user]
        assert windows.targets[windows.users == user].tolist() == own[-2:].tolist()
    assert not set(windows.users.tolist()) & set(dataset.split_users["test"].tolist())
    with pytest.raises(DualrecError, match="never come from test users"):
        task_examples(dataset, "test", None, LIKELIHOOD, 3)


def test_candidates_are_the_lstms_top_with_the_target_among_them_in_shuffled_order(dataset, lstm, windows, label_examples):
    top = top_unseen(lstm.probabilities(windows.histories), seen_through_history(dataset, windows.histories, windows.users), 8)
    assert len(label_examples) == len(windows)
    in_lstm_order = 0
    for example, best, target in zip(label_examples, top, windows.targets):
        lstm_movies = dataset.catalogue[best].tolist()
        target_movie = int(dataset.catalogue[target])
        assert len(example.candidates) == 8 and len(set(example.candidates)) == 8 and example.target == (target_movie,)
        kept = lstm_movies if target_movie in lstm_movies else [*lstm_movies[:-1], target_movie]
        assert sorted(example.candidates) == sorted(kept)  # the LSTM's N-th gives way to a missed target
        assert example.lstm_pick == lstm_movies[0]
        in_lstm_order += list(example.candidates) == kept
    assert in_lstm_order < len(label_examples) / 4
    places = [example.candidates.index(example.target[0]) for example in label_examples]
    assert len(set(places)) > 4  # the target's letter varies: nothing to learn from its place


def test_the_prompts_are_the_hybrids_and_the_answers_what_its_scorers_read(dataset, windows, likelihood_examples, label_examples):
    for window, likely, labelled in list(zip(windows.histories, likelihood_examples, label_examples))[:10]:
        assert likely.prompt == likelihood_prompt(dataset, window)
        assert likely.answer == answer_text(dataset, int(dataset.item_of([likely.target[0]])[0]))
        assert labelled.prompt == label_prompt(dataset, window, dataset.item_of(list(labelled.candidates)))
        assert labelled.answer == "(" + LABELS[labelled.candidates.index(labelled.target[0])]
        assert not likely.closed and not labelled.closed


def test_the_loss_covers_the_title_or_the_label_and_nothing_after_it(tokenizer, likelihood_examples, label_examples):
    likely = encode(tokenizer, likelihood_examples[0], 4096)
    learned = [token for token, label in zip(likely["input_ids"], likely["labels"]) if label != IGNORE]
    assert tokenizer.decode(learned) == likelihood_examples[0].answer  # no end of turn: the scorer sums the title's tokens
    assert likely["labels"][-len(learned) :] == learned and all(label == IGNORE for label in likely["labels"][: -len(learned)])
    labelled = encode(tokenizer, label_examples[0], 4096)
    assert tokenizer.decode([t for t, label in zip(labelled["input_ids"], labelled["labels"]) if label != IGNORE]) == (
        label_examples[0].answer
    )


def test_a_tokenizer_that_joins_a_label_with_its_parenthesis_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: index for index, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["(A"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[("(", "A")]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)  # "(A" stays one piece
    joining = PreTrainedTokenizerFast(tokenizer_object=core)
    check_label_tokens(byte_tokenizer(), "tiny", 26)
    with pytest.raises(DualrecError, match="does not write the label 'A' as one token after '\\(', so the labels scorer"):
        check_label_tokens(joining, "tiny", 20)


def test_the_rerank_task_has_its_own_profiles():
    parser = argparse.ArgumentParser()
    finetune_command.register(parser.add_subparsers())
    options = finetune_command.finetune_options(parser.parse_args(["finetune", "--task", "rerank"]))
    assert options == RERANK_PROFILES["quick"] and (options.scorer, options.max_steps) == ("likelihood", 200)
    labels = finetune_command.finetune_options(parser.parse_args(["finetune", "--task", "rerank", "--scorer", "labels"]))
    # the labels scorer's quick run is shorter (its prompts are longer); everything else is the likelihood scorer's
    assert labels == dataclasses.replace(RERANK_PROFILES["quick"], scorer="labels", max_steps=100, eval_steps=50)
    longer = ["finetune", "--task", "rerank", "--scorer", "labels", "--steps", "200", "--eval-steps", "100"]
    assert finetune_command.finetune_options(parser.parse_args(longer)) == dataclasses.replace(options, scorer="labels")
    assert profile("rerank", "full", "labels") == dataclasses.replace(profile("rerank", "full"), scorer="labels")
    assert profile("rerank", "full").task == "rerank" and profile("rerank", "full").four_bit is None
    with pytest.raises(ConfigError, match="--profile cpu is not a profile of --task rerank \\(its profiles: quick, full\\)"):
        finetune_command.finetune_options(parser.parse_args(["finetune", "--task", "rerank", "--profile", "cpu"]))
    with pytest.raises(ConfigError, match="--candidates must be at most 26 with --scorer labels"):
        FinetuneOptions(task="rerank", scorer="labels", candidates=27)
