"""`dualrec finetune`: Stage 3, a LoRA adapter of a local LLM trained on what training users watched next."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from dualrec.commands.common import add_data_options
from dualrec.commands.data import load
from dualrec.finetune.examples import PROFILES, FinetuneOptions, dump_examples, one_per_user
from dualrec.grounding.prompts import TEMPLATES
from dualrec.llm import DEFAULT_PRESET, PRESETS

PROFILE_HELP = (
    "quick: 90 steps of batch 4, lr 1e-3, one example per training user, for a CPU (smollm2-135m: 28 min on an "
    "idle 2-core CPU, 18 s per step); full: one epoch over 4 examples per user, batch 4 x 4 accumulated, lr 2e-4, for a GPU "
    "(default %(default)s)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = FinetuneOptions()
    local = ", ".join(name for name, preset in PRESETS.items() if preset.engine != "openai")
    parser = subparsers.add_parser(
        "finetune", help="Stage 3: train a LoRA adapter of a local LLM on the training users' next movies"
    )
    add_data_options(parser)
    parser.add_argument("--base", default=DEFAULT_PRESET, help=f"base model: {local}, or a local folder (default %(default)s)")
    parser.add_argument(
        "--out",
        help="adapter folder; a relative path goes under <DUALREC_HOME>/models, where the app finds it (default "
        "adapters/<base>-lora)",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick", help=PROFILE_HELP)
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out (after Ctrl-C or a crash)"
    )
    parser.add_argument(
        "--dump-examples", type=int, metavar="N", help="print N training examples as the model reads them, then exit"
    )
    parser.add_argument(
        "--lstm-dir", help="trained LSTM whose top-1 goes into every prompt (default: <DUALREC_HOME>/models/lstm)"
    )
    lora = parser.add_argument_group("LoRA (each option overrides the profile)")
    lora.add_argument("--r", type=int, help=f"rank (default {defaults.r})")
    lora.add_argument("--alpha", type=int, help=f"scaling alpha (default {defaults.alpha})")
    lora.add_argument("--dropout", type=float, help=f"dropout (default {defaults.dropout})")
    lora.add_argument("--target-modules", help=f"comma-separated layer names (default {','.join(defaults.target_modules)})")
    lora.add_argument(
        "--4bit",
        dest="four_bit",
        action=argparse.BooleanOptionalAction,
        help="base in 4-bit NF4 (QLoRA); needs CUDA (default: on with CUDA, off on a CPU)",
    )
    train = parser.add_argument_group("training (each option overrides the profile)")
    train.add_argument("--lr", dest="learning_rate", type=float, help="learning rate")
    train.add_argument("--steps", dest="max_steps", type=int, help="optimizer steps (instead of --epochs)")
    train.add_argument("--epochs", type=float, help="passes over the training examples (when no --steps)")
    train.add_argument("--batch-size", type=int, help="examples per forward pass")
    train.add_argument("--grad-accum", type=int, help="forward passes per optimizer step")
    train.add_argument("--max-length", type=int, help=f"tokens per example, prompt included (default {defaults.max_length})")
    train.add_argument(
        "--seed", type=int, help=f"seed of the order, the initialisation and the validation users (default {defaults.seed})"
    )
    train.add_argument("--examples-per-user", type=int, help="examples cut from each training user's sequence, most recent first")
    train.add_argument("--val-examples", type=int, help="validation users (one example each)")
    train.add_argument("--eval-steps", type=int, help="steps between validation losses")
    train.add_argument("--save-steps", type=int, help="steps between checkpoints")
    train.add_argument(
        "--template", choices=TEMPLATES, help=f"prompt template (default {defaults.template}, as in the freeform evaluation)"
    )
    parser.set_defaults(handler=run)


def finetune_options(args: argparse.Namespace) -> FinetuneOptions:
    """The profile's options with every option given on the command line."""
    names = [field.name for field in dataclasses.fields(PROFILES[args.profile])]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if "target_modules" in given:
        given["target_modules"] = tuple(name.strip() for name in given["target_modules"].split(",") if name.strip())
    return dataclasses.replace(PROFILES[args.profile], **given)


def run(args: argparse.Namespace) -> None:
    from dualrec.finetune.training import base_tokenizer, train_adapter  # torch and TensorFlow load
    from dualrec.llm.peft_backend import adapter_dir, base_preset
    from dualrec.ranking.lstm import load_lstm  # only when a command runs

    options = finetune_options(args)
    dataset = load(args)
    lstm = load_lstm(options.lstm_dir, dataset)
    if args.dump_examples:
        examples = one_per_user(dataset, "train", lstm, options, args.dump_examples)
        print(dump_examples(base_tokenizer(base_preset(options.base)), examples, options.max_length))
        return
    name = args.out or f"adapters/{Path(options.base).name}-lora"
    out = adapter_dir(name)
    metadata = train_adapter(dataset, lstm, options, out, args.resume)
    losses = ", ".join(
        f"{what} loss {metadata[key]:.4f}"
        for what, key in (("train", "train_loss"), ("validation", "val_loss"))
        if metadata[key] is not None
    )
    print(
        f"{metadata['status'].capitalize()} after {metadata['steps']} steps in {metadata['seconds'] / 60:.1f} min "
        f"({losses or 'no loss logged yet'}); adapter in {out}"
    )
    if metadata["status"] == "interrupted":
        print("Continue with the same command and --resume.")
    print(f"Use it as --model {options.base}+{name}")
