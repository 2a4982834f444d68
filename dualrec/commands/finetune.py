"""`dualrec finetune`: Stage 3, a LoRA adapter of a local LLM trained on what training users watched next."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualrec.commands.common import (
    add_data_options,
    add_field_options,
    check_folder,
    check_option,
    data_config,
    options_from_args,
)
from dualrec.commands.data import load
from dualrec.config import AT_LEAST_1
from dualrec.finetune.examples import PROFILES, FinetuneOptions, dump_examples, one_per_user
from dualrec.llm import DEFAULT_PRESET, PRESETS

PROFILE_HELP = (
    "quick: 90 steps of batch 4, lr 1e-3, one example per training user, for a CPU (smollm2-135m: 28 min on an "
    "idle 2-core CPU, 18 s per step); full: one epoch over 4 examples per user, batch 4 x 4 accumulated, lr 2e-4, for a GPU "
    "(default %(default)s)"
)

TRAINING_OPTIONS = (
    "learning_rate",
    "max_steps",
    "epochs",
    "batch_size",
    "grad_accum",
    "max_length",
    "seed",
    "examples_per_user",
    "val_examples",
    "eval_steps",
    "save_steps",
    "template",
)


def register(subparsers: argparse._SubParsersAction) -> None:
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
    add_field_options(parser, FinetuneOptions, ("lstm_dir",), PROFILES)
    lora = parser.add_argument_group("LoRA (each option overrides the profile)")
    add_field_options(lora, FinetuneOptions, ("r", "alpha", "dropout", "target_modules", "four_bit"), PROFILES)
    train = parser.add_argument_group("training (each option overrides the profile)")
    add_field_options(train, FinetuneOptions, TRAINING_OPTIONS, PROFILES)
    parser.set_defaults(handler=run)


def finetune_options(args: argparse.Namespace) -> FinetuneOptions:
    """The profile's options with every option given on the command line."""
    return options_from_args(PROFILES[args.profile], args)


def run(args: argparse.Namespace) -> None:
    options, data = finetune_options(args), data_config(args)  # bad options stop here, before torch and TensorFlow load
    check_option("--dump-examples", args.dump_examples, AT_LEAST_1)
    from dualrec.finetune.training import base_tokenizer, train_adapter
    from dualrec.llm.peft_backend import adapter_dir, base_preset
    from dualrec.ranking.lstm import load_lstm

    preset = base_preset(options.base)  # an unknown base or an API model stops here, before the data and the models load
    name = args.out or f"adapters/{Path(options.base).name}-lora"
    out = adapter_dir(name)
    check_folder("--out", out)
    dataset = load(args, data)
    lstm = load_lstm(options.lstm_dir, dataset)
    if args.dump_examples is not None:
        examples = one_per_user(dataset, "train", lstm, options, args.dump_examples)
        print(dump_examples(base_tokenizer(preset), examples, options.max_length))
        return
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
