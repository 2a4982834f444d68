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
from dualrec.finetune.examples import LABELS_PROFILES, TASK_PROFILES, FinetuneOptions, dump_examples, profile
from dualrec.llm import DEFAULT_PRESET, PRESETS

PROFILE_HELP = (
    "generate: quick, 60 steps of batch 4, lr 2e-3, LoRA in the last 10 blocks, bf16 where the CPU has it, for a first "
    "adapter on a CPU (smollm2-135m: minutes on a 2-core CPU); cpu, the earlier 28-minute CPU profile (90 steps, lr 1e-3, "
    "fp32, every block); full, one epoch over 4 examples per user, batch 4 x 4 accumulated, lr 2e-4, for a GPU (QLoRA). "
    "rerank: quick, for a CPU (200 steps; 100 with --scorer labels, whose prompts are 2.4 times longer); full, for a "
    "GPU (default %(default)s)"
)
# Every profile by label, for the options' help ('quick 0.002, cpu 0.001, ...').
PROFILE_LABELS = {
    (name if task == "generate" else f"{task} {name}"): options
    for task, profiles in TASK_PROFILES.items()
    for name, options in profiles.items()
} | {"rerank labels quick": LABELS_PROFILES["quick"]}

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
    "mixed_precision",
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
    parser.add_argument(
        "--profile",
        choices=sorted({name for profiles in TASK_PROFILES.values() for name in profiles}),
        default="quick",
        help=PROFILE_HELP,
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out (after Ctrl-C or a crash)"
    )
    parser.add_argument(
        "--dump-examples", type=int, metavar="N", help="print N training examples as the model reads them, then exit"
    )
    add_field_options(parser, FinetuneOptions, ("lstm_dir", "task", "scorer", "candidates"), PROFILE_LABELS)
    lora = parser.add_argument_group("LoRA (each option overrides the profile)")
    add_field_options(
        lora, FinetuneOptions, ("r", "alpha", "dropout", "target_modules", "lora_layers", "four_bit"), PROFILE_LABELS
    )
    train = parser.add_argument_group("training (each option overrides the profile)")
    add_field_options(train, FinetuneOptions, TRAINING_OPTIONS, PROFILE_LABELS)
    parser.set_defaults(handler=run)


def finetune_options(args: argparse.Namespace) -> FinetuneOptions:
    """The task's profile with every option given on the command line."""
    return options_from_args(profile(args.task or "generate", args.profile, args.scorer), args)


def run(args: argparse.Namespace) -> None:
    options, data = finetune_options(args), data_config(args)  # bad options stop here, before torch and TensorFlow load
    check_option("--dump-examples", args.dump_examples, AT_LEAST_1)
    from dualrec.data.download import resolve_data_dir
    from dualrec.data.movielens import fingerprint_files
    from dualrec.finetune.rerank import task_examples
    from dualrec.finetune.training import base_tokenizer, train_adapter
    from dualrec.llm.peft_backend import adapter_dir, base_preset
    from dualrec.ranking.lstm import load_lstm

    preset = base_preset(options.base)  # an unknown base or an API model stops here, before the data and the models load
    task = "" if options.task == "generate" else f"-{options.task}"
    name = args.out or f"adapters/{Path(options.base).name}{task}-lora"
    out = adapter_dir(name)
    check_folder("--out", out)
    dataset = load(args, data)
    lstm = load_lstm(options.lstm_dir, dataset)
    if args.dump_examples is not None:
        examples = task_examples(dataset, "train", lstm, options, args.dump_examples)
        print(dump_examples(base_tokenizer(preset), examples, options.max_length))
        return
    metadata = train_adapter(dataset, lstm, options, out, args.resume)
    print(summary(metadata, out))
    if fingerprint_files(resolve_data_dir(args.data_dir)) != dataset.fingerprint:
        print(
            f"Note: the data files changed during the training; the adapter learnt from them as they were when it began "
            f"(fingerprint {dataset.fingerprint}, recorded in its metadata)."
        )
    if metadata["status"] == "interrupted":
        print("Continue with the same command and --resume.")
    if options.task == "rerank":
        print(f"Use it as --llm {options.base}+{name} --scorer {options.scorer} in dualrec evaluate --systems lstm,hybrid")
    else:
        print(f"Use it as --model {options.base}+{name}")


def summary(metadata: dict, out: Path) -> str:
    """'Completed after 60 steps in 4.2 min (train loss 1.10, validation loss 1.48 (base) -> 1.12); adapter in DIR'."""
    losses = [f"train loss {metadata['train_loss']:.4f}"] if metadata["train_loss"] is not None else []
    if metadata["val_loss"] is not None:
        base = metadata.get("base_val_loss")
        losses.append(f"validation loss {f'{base:.4f} (base) -> ' if base is not None else ''}{metadata['val_loss']:.4f}")
    return (
        f"{metadata['status'].capitalize()} after {metadata['steps']} steps in {metadata['seconds'] / 60:.1f} min "
        f"({', '.join(losses) or 'no loss logged yet'}); adapter in {out}"
    )
