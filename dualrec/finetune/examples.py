"""Stage 3 (docs/design.md §5): the options of LoRA fine-tuning and the examples it learns from.

An example is a point in a user's catalogue sequence: the prompt (dualrec.grounding.prompts, in the base model's chat template)
shows the 5 movies before it and the LSTM's top-1 there; the answer is the next 5 movies the user watched, written
with `format_answer`, the format the parser reads best. Training examples come from training users, validation
examples from validation users; test users never appear. The loss covers the answer tokens only (`encode`).

Training with peft lives in dualrec.finetune.training, serving adapters in dualrec.llm.peft_backend; this module
imports neither torch nor transformers.

    examples = build_examples(dataset, example_users(dataset, "train"), lstm, options)
    print(dump_examples(tokenizer, examples[:3], options.max_length))
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from dualrec.config import ABOVE_0, AT_LEAST_1, DEFAULT_PRESET, DROPOUT, FREEFORM_TEMPLATE, SEED, check_options, option
from dualrec.data.dataset import Dataset, pad_history, sequence_bounds
from dualrec.errors import ConfigError, DualrecError
from dualrec.grounding.prompts import POSTER_HISTORY, TEMPLATES, build_prompt, format_answer
from dualrec.llm.reasoning import CLOSE, OPEN
from dualrec.llm.scoring import LABELS
from dualrec.ranking.hybrid import CANDIDATES, SCORERS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TASKS = ("generate", "rerank")
SHOWN = POSTER_HISTORY  # movies in the prompt
TARGETS = 5  # movies in the answer: what the user watched next
IGNORE = -100  # the label of tokens outside the loss (prompt and padding)


class TopOne(Protocol):
    """What the examples need of the LSTM (dualrec.ranking.lstm.LSTMRecommender): its window and a batched top-1."""

    window: int

    def top1(self, histories: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class FinetuneOptions:
    """LoRA (the poster's defaults), the training loop and the examples; `four_bit` None: on CUDA yes, on a CPU no."""

    base: str = DEFAULT_PRESET  # `dualrec finetune --base` lists the local presets
    task: str = option(
        "generate",
        "what the adapter learns: generate (the next 5 movies as the freeform answer) or rerank (the hybrid's score of "
        "the target among the LSTM's candidates, dualrec.finetune.rerank)",
        choices=TASKS,
    )
    scorer: str = option("likelihood", "--task rerank: the hybrid's scorer whose prompt and answer are learnt", choices=SCORERS)
    candidates: int = option(20, "--task rerank: the LSTM's top movies per example, as the hybrid re-ranks", CANDIDATES)
    r: int = option(8, "rank", AT_LEAST_1)
    alpha: int = option(16, "scaling alpha", AT_LEAST_1)
    dropout: float = option(0.05, "dropout", DROPOUT)
    target_modules: tuple[str, ...] = option(("q_proj", "v_proj"), "comma-separated layer names")
    lora_layers: int | None = option(
        None,
        "LoRA in the last N transformer blocks only (all if fewer): the backward pass stops there (default: every block)",
        AT_LEAST_1,
    )
    learning_rate: float = option(2e-4, "learning rate", ABOVE_0, flag="--lr")
    max_steps: int | None = option(None, "optimizer steps (instead of --epochs)", AT_LEAST_1, flag="--steps")
    epochs: float = option(1.0, "passes over the training examples (when no --steps)", ABOVE_0)
    batch_size: int = option(4, "examples per forward pass", AT_LEAST_1)
    grad_accum: int = option(4, "forward passes per optimizer step", AT_LEAST_1)
    max_length: int = option(384, "tokens per example, prompt included", AT_LEAST_1)  # 99% fit whole in SmolLM2's template
    seed: int = option(42, "seed of the order, the initialisation and the validation users", SEED)
    examples_per_user: int = option(4, "examples cut from each training user's sequence, most recent first", AT_LEAST_1)
    val_examples: int = option(200, "validation users (one example each)", AT_LEAST_1)
    eval_steps: int = option(100, "steps between validation losses", AT_LEAST_1)
    save_steps: int = option(100, "steps between checkpoints", AT_LEAST_1)
    template: str = option(FREEFORM_TEMPLATE, "prompt template, as in the freeform evaluation", choices=TEMPLATES)
    mixed_precision: bool | None = option(
        None, "mixed precision: bf16 (fp16 on GPUs without bf16); default on with CUDA and on a CPU with native bf16"
    )
    four_bit: bool | None = option(
        None, "base in 4-bit NF4 (QLoRA); needs CUDA (default: on with CUDA, off on a CPU)", flag="--4bit"
    )
    lstm_dir: str | None = option(None, "trained LSTM whose top-1 goes into every prompt (default: <DUALREC_HOME>/models/lstm)")

    def __post_init__(self) -> None:
        names = self.target_modules if isinstance(self.target_modules, tuple) else ()  # not a tuple: check_options says so
        odd = [name for name in names if not re.fullmatch(r"[\w.]+", str(name))]
        layers = f"--target-modules must be layer names (letters, digits, '_', '.'), not {', '.join(odd)}" if odd else None
        too_many = self.task == "rerank" and self.scorer == "labels" and isinstance(self.candidates, int)
        labels = (
            f"--candidates must be at most {len(LABELS)} with --scorer labels ((A) to (Z)), not {self.candidates}"
            if too_many and self.candidates > len(LABELS)
            else None
        )
        check_options(self, "fine-tuning", layers, labels)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def short_run(steps: int, **changes) -> FinetuneOptions:
    """The options of a run of `steps` optimizer steps on one example per user, one forward pass a step (the CPU
    profiles, the tests); `changes` set the rest."""
    return FinetuneOptions(**({"max_steps": steps, "grad_accum": 1, "examples_per_user": 1} | changes))


# Each task's profiles (PROFILES: generate's). generate: quick, the app's first adapter (smollm2-135m on a 2-core
# CPU in minutes: bf16 on a CPU with native bf16, LoRA in the last 10 blocks only); cpu, the earlier quick profile
# (28 minutes on an idle 2-core machine, fp32, every block); full, one epoch for a GPU. rerank
# (dualrec.finetune.rerank): quick for a CPU, full for a GPU. docs/results.md: each one's time and validation loss.
PROFILES = {
    "quick": short_run(60, learning_rate=2e-3, lora_layers=10, val_examples=32, eval_steps=60, save_steps=10),
    "cpu": short_run(90, learning_rate=1e-3, val_examples=32, eval_steps=30, save_steps=20, mixed_precision=False),
    "full": FinetuneOptions(),
}
RERANK_PROFILES = {
    "quick": short_run(  # the labels prompt lists 20 candidates: ~650 tokens
        200, task="rerank", max_length=1024, learning_rate=2e-3, lora_layers=10, val_examples=64, eval_steps=100, save_steps=25
    ),
    "full": FinetuneOptions(task="rerank", examples_per_user=4, max_length=1024),
}
# The labels scorer's prompt lists the 20 candidates, 2.4 times the likelihood scorer's tokens: its quick run stops at
# 100 steps, where its validation loss has flattened (docs/results.md), to finish in under 30 minutes on one core.
LABELS_CHANGES = {"quick": {"max_steps": 100, "eval_steps": 50}}
LABELS_PROFILES = {
    name: dataclasses.replace(options, scorer="labels", **LABELS_CHANGES.get(name, {}))
    for name, options in RERANK_PROFILES.items()
}
TASK_PROFILES = {"generate": PROFILES, "rerank": RERANK_PROFILES}


def profile(task: str, name: str, scorer: str | None = None) -> FinetuneOptions:
    """A task's profile (with --task rerank, the scorer's); ConfigError for a name the task does not have."""
    profiles = LABELS_PROFILES if (task, scorer) == ("rerank", "labels") else TASK_PROFILES.get(task, {})
    if name not in profiles:
        raise ConfigError(
            f"Invalid option: --profile {name} is not a profile of --task {task} (its profiles: {', '.join(profiles) or 'none'})."
        )
    return profiles[name]


@dataclass(frozen=True)
class Example:
    """One point of a user's sequence: what the prompt shows and what the user watched next (movie ids, oldest first)."""

    user: int
    history: tuple[int, ...]
    lstm_pick: int
    target: tuple[int, ...]
    prompt: str  # the user message
    answer: str  # the target in the answer format
    closed: bool = True  # the answer ends the assistant's turn (generation); False: it is what a scorer reads, no more
    candidates: tuple[int, ...] = ()  # the ranking task's candidates, in the prompt's order


def example_users(dataset: Dataset, split: str) -> np.ndarray:
    """The users of a split ("train" or "val") that examples may come from: never a test user."""
    if split == "test":
        raise DualrecError("Fine-tuning examples never come from test users.")
    return np.setdiff1d(dataset.split_users[split], dataset.split_users["test"])


def cut_points(length: int, per_user: int) -> list[int]:
    """Where a sequence of `length` items is cut (SHOWN items before, TARGETS from there): the most recent first,
    targets not overlapping, at most `per_user`."""
    return list(range(length - TARGETS, SHOWN - 1, -TARGETS))[:per_user]


def build_examples(
    dataset: Dataset, users: Sequence[int], lstm: TopOne, options: FinetuneOptions, per_user: int | None = None
) -> list[Example]:
    """Examples sliding back from the end of each user's catalogue sequence, the LSTM's top-1 of all in one batch."""
    kept = dataset.ratings[dataset.ratings["item"] >= 0]
    items = kept["item"].to_numpy()
    user_ids, starts, lengths = sequence_bounds(kept["user_id"].to_numpy())
    points = [
        (int(user_ids[row]), items[starts[row] : starts[row] + lengths[row]], cut)
        for row in np.searchsorted(user_ids, users)
        for cut in cut_points(lengths[row], per_user or options.examples_per_user)
    ]
    if not points:
        return []
    picks = dataset.catalogue[lstm.top1(np.stack([pad_history(sequence[:cut], lstm.window) for _, sequence, cut in points]))]
    examples = []
    for (user, sequence, cut), pick in zip(points, picks):
        history = dataset.catalogue[sequence[cut - SHOWN : cut]].tolist()
        target = dataset.catalogue[sequence[cut : cut + TARGETS]].tolist()
        prompt = build_prompt(dataset.movies, history, int(pick), options.template, TARGETS)
        examples.append(Example(user, tuple(history), int(pick), tuple(target), prompt, format_answer(dataset.movies, target)))
    return examples


def one_per_user(dataset: Dataset, split: str, lstm: TopOne, options: FinetuneOptions, count: int) -> list[Example]:
    """The most recent example of `count` users of the split drawn with the options' seed (validation, --dump-examples)."""
    users = example_users(dataset, split)
    chosen = np.random.default_rng(options.seed).choice(users, size=min(count, len(users)), replace=False)
    return build_examples(dataset, np.sort(chosen), lstm, options, per_user=1)


def chat_texts(tokenizer: PreTrainedTokenizerBase, example: Example) -> tuple[str, str]:
    """(prompt, answer) as the model reads them: the chat template's prompt, as the backends send it, then the answer
    with the template's end of turn. A template that opens <think> in the prompt gets it closed before the answer.
    An answer that is not `closed` follows the prompt as it is, as dualrec.llm.scoring reads a candidate."""
    messages = [{"role": "user", "content": example.prompt}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if not example.closed:
        return prompt, example.answer
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": example.answer}], tokenize=False)
    answer = full[len(prompt) :] if full.startswith(prompt) else example.answer + tokenizer.eos_token
    return prompt, (f"{CLOSE}\n\n{answer}" if prompt.rstrip().endswith(OPEN) else answer)


def encode(tokenizer: PreTrainedTokenizerBase, example: Example, max_length: int) -> dict[str, list[int]]:
    """Token ids cut at `max_length`, with labels IGNORE on the prompt: the loss covers the answer only."""
    prompt, answer = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in chat_texts(tokenizer, example))
    ids = (prompt + answer)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ([IGNORE] * len(prompt) + answer)[:max_length]}


def encode_all(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_length: int) -> list[dict[str, list[int]]]:
    """The encoded examples that keep at least one answer token within `max_length`."""
    encoded = (encode(tokenizer, example, max_length) for example in examples)
    return [item for item in encoded if any(label != IGNORE for label in item["labels"])]


def dump_examples(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_length: int) -> str:
    """Examples decoded from their token ids: what the model reads and, after the marker, what it learns to write."""
    blocks = []
    for number, example in enumerate(examples, start=1):
        item = encode(tokenizer, example, max_length)
        start = next((i for i, label in enumerate(item["labels"]) if label != IGNORE), len(item["labels"]))
        read, learned = tokenizer.decode(item["input_ids"][:start]), tokenizer.decode(item["input_ids"][start:])
        length = len(item["input_ids"])
        header = f"=== example {number}: user {example.user}, {length} tokens, {length - start} in the loss ==="
        blocks.append(f"{header}\n{read}\n--- loss on the tokens below ---\n{learned}")
    return "\n\n".join(blocks)
