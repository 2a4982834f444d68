"""Stage 3's examples: training users only, sliding over the sequence, answer-only loss, the parser's format."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.commands import finetune as finetune_command
from dualrec.errors import ConfigError, DualrecError
from dualrec.finetune.examples import (
    IGNORE,
    PROFILES,
    SHOWN,
    TARGETS,
    FinetuneOptions,
    build_examples,
    chat_texts,
    cut_points,
    dump_examples,
    encode,
    encode_all,
    example_users,
    one_per_user,
)
from dualrec.grounding.parsing import parse_answer
from dualrec.grounding.pipeline import interpret, prepare_prompt
from tests.finetune_fixtures import END_OF_TURN, byte_tokenizer

OPTIONS = FinetuneOptions(examples_per_user=3)


@pytest.fixture(scope="module")
def train_examples(dataset, lstm):
    return build_examples(dataset, example_users(dataset, "train"), lstm, OPTIONS)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def test_examples_come_from_training_users_and_never_from_test_users(dataset, lstm, train_examples):
    users = {example.user for example in train_examples}
    assert users == set(dataset.split_users["train"].tolist())
    assert not users & set(dataset.split_users["test"].tolist())
    val_users = {example.user for example in one_per_user(dataset, "val", lstm, OPTIONS, 1000)}
    assert val_users == set(dataset.split_users["val"].tolist())
    with pytest.raises(DualrecError, match="never come from test users"):
        example_users(dataset, "test")


def test_cut_points_slide_back_from_the_end_without_overlapping_targets():
    assert cut_points(23, 3) == [18, 13, 8]
    assert cut_points(12, 9) == [7]  # the cut leaves SHOWN movies before and TARGETS after it
    assert cut_points(SHOWN + TARGETS - 1, 3) == []


def test_an_example_shows_5_movies_and_the_lstm_pick_and_answers_the_next_5(dataset, lstm, train_examples):
    user = int(dataset.split_users["train"][0])
    sequence = dataset.catalogue[dataset.user_items(user)].tolist()
    mine = [example for example in train_examples if example.user == user]
    assert len(mine) == 3
    for example, cut in zip(mine, cut_points(len(sequence), 3)):
        assert list(example.history) == sequence[cut - SHOWN : cut]
        assert list(example.target) == sequence[cut : cut + TARGETS]
        window = dataset.item_of(sequence[max(0, cut - lstm.window) : cut])  # everything before the cut, up to 30
        assert example.lstm_pick == dataset.catalogue[lstm.top_k(window, k=1).items[0]]  # the same pick, asked alone
        assert example.prompt == prepare_prompt(dataset, example.history, example.lstm_pick, OPTIONS.template, TARGETS).text


def test_the_lstm_is_asked_once_for_all_examples(dataset, lstm, monkeypatch):
    calls = []
    monkeypatch.setattr(lstm, "top1", lambda histories, top1=lstm.top1: calls.append(histories) or top1(histories))
    examples = build_examples(dataset, example_users(dataset, "train"), lstm, OPTIONS)
    assert len(calls) == 1 and calls[0].shape == (len(examples), lstm.window)


def test_the_answer_round_trips_through_the_parser_to_the_same_movies(dataset, train_examples):
    for example in train_examples[:150]:
        prompt = prepare_prompt(dataset, example.history, example.lstm_pick, OPTIONS.template, TARGETS)
        result = interpret(dataset, prompt, example.answer)
        assert [match.movie_id for match in result.titles] == list(example.target), example.answer
        assert len(parse_answer(example.answer)) == TARGETS


def test_the_loss_covers_the_answer_tokens_only(tokenizer, train_examples):
    example = train_examples[0]
    item = encode(tokenizer, example, max_length=4096)
    prompt, answer = chat_texts(tokenizer, example)
    assert prompt.endswith("<|im_start|>assistant\n") and answer == example.answer + END_OF_TURN
    labelled = [token for token, label in zip(item["input_ids"], item["labels"]) if label != IGNORE]
    assert tokenizer.decode(labelled) == answer
    assert item["labels"][: -len(labelled)] == [IGNORE] * (len(item["labels"]) - len(labelled))
    assert tokenizer.decode(item["input_ids"]) == prompt + answer


def test_padding_is_outside_the_loss(tokenizer, train_examples):
    from transformers import DataCollatorForSeq2Seq

    items = [encode(tokenizer, example, 4096) for example in train_examples[:3]]
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE)(items)
    for row, item in enumerate(items):
        padding = batch["attention_mask"][row] == 0
        assert int((~padding).sum()) == len(item["input_ids"])
        assert (batch["labels"][row][padding] == IGNORE).all()
        assert batch["labels"][row][: len(item["labels"])].tolist() == item["labels"]


def test_long_examples_are_cut_and_those_without_answer_tokens_dropped(tokenizer, train_examples):
    prompt_length = len(tokenizer(chat_texts(tokenizer, train_examples[0])[0], add_special_tokens=False)["input_ids"])
    cut = encode(tokenizer, train_examples[0], prompt_length + 3)
    assert len(cut["input_ids"]) == prompt_length + 3 and sum(label != IGNORE for label in cut["labels"]) == 3
    assert encode_all(tokenizer, train_examples[:1], prompt_length) == []


def test_a_template_that_opens_the_thinking_block_gets_it_closed_before_the_answer(train_examples):
    thinking = byte_tokenizer(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    prompt, answer = chat_texts(thinking, train_examples[0])
    assert prompt.endswith("<think>\n") and answer == f"</think>\n\n{train_examples[0].answer}<|im_end|>"


def test_dump_shows_what_the_model_reads_and_what_it_learns(tokenizer, train_examples):
    text = dump_examples(tokenizer, train_examples[:2], 4096)
    assert text.count("=== example") == 2 and text.count("--- loss on the tokens below ---") == 2
    read, learned = text.split("=== example 2")[0].split("--- loss on the tokens below ---\n")
    assert train_examples[0].prompt in read and learned.strip() == (train_examples[0].answer + END_OF_TURN).strip()


def test_command_line_options_override_the_profile():
    parser = argparse.ArgumentParser()
    finetune_command.register(parser.add_subparsers())
    args = parser.parse_args(
        ["finetune", "--profile", "quick", "--r", "16", "--target-modules", "q_proj, k_proj,v_proj", "--no-4bit", "--steps", "7"]
    )
    options = finetune_command.finetune_options(args)
    assert options.r == 16 and options.target_modules == ("q_proj", "k_proj", "v_proj") and options.four_bit is False
    assert options.max_steps == 7 and options.learning_rate == PROFILES["quick"].learning_rate and options.alpha == 16
    defaults = finetune_command.finetune_options(parser.parse_args(["finetune"]))
    assert defaults == PROFILES["quick"] and (defaults.r, defaults.alpha, defaults.dropout) == (8, 16, 0.05)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be at least 1, not 0."),
        (["--lr", "-1", "--batch-size", "0"], "--lr must be above 0, not -1.0; --batch-size must be at least 1, not 0."),
        (["--dropout", "1"], "--dropout must be from 0 to below 1, not 1.0."),
        (["--target-modules", " , "], "--target-modules must be one or more values, each a name, not ()."),
        (["--seed", "-1"], "--seed must be from 0 to 4294967295, not -1."),
    ],
)
def test_impossible_options_are_refused_before_any_work(argv, message):
    parser = argparse.ArgumentParser()
    finetune_command.register(parser.add_subparsers())
    with pytest.raises(ConfigError, match=re.escape("Invalid fine-tuning options: " + message) + "$"):
        finetune_command.finetune_options(parser.parse_args(["finetune", *argv]))


def test_the_quick_profile_uses_the_poster_lora_and_fits_the_examples():
    quick = PROFILES["quick"]
    assert quick.target_modules == ("q_proj", "v_proj") and quick.batch_size == 4 and quick.max_steps <= 150
    assert np.isclose(quick.dropout, 0.05) and quick.max_length >= 384
