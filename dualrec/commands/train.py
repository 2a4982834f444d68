"""`dualrec train lstm`: train the Stage 1 LSTM and save it where the app and the other commands find it."""

from __future__ import annotations

import argparse
import sys

from dualrec.commands.common import (
    add_data_options,
    add_field_options,
    check_folder,
    data_config,
    options_from_args,
    positive_minutes,
)
from dualrec.commands.data import load
from dualrec.config import LSTM_PROFILES, LSTMConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a model")
    models = train.add_subparsers(dest="train_command", required=True, metavar="{lstm}")
    lstm = models.add_parser("lstm", help="the multi-modal LSTM of Stage 1 (training users only; early stopping on validation)")
    add_data_options(lstm)
    lstm.add_argument("--out", help="model folder (default: <DUALREC_HOME>/models/lstm)")
    lstm.add_argument(
        "--profile",
        choices=sorted(LSTM_PROFILES),
        default="full",
        help="quick: 2 epochs for a first run; full: up to 40 epochs, early stopping (default)",
    )
    options = ("epochs", "seed", "variant", "monitor", "max_minutes", "engine")
    add_field_options(lstm, LSTMConfig, options, LSTM_PROFILES, types={"max_minutes": positive_minutes})
    lstm.set_defaults(handler=run_lstm)


def lstm_config(args: argparse.Namespace) -> LSTMConfig:
    """The profile's configuration with the options given on the command line."""
    return options_from_args(LSTM_PROFILES[args.profile], args)


def run_lstm(args: argparse.Namespace) -> None:
    config, data = lstm_config(args), data_config(args)  # bad options stop here, before TensorFlow loads
    check_folder("--out", args.out)
    from dualrec.ranking.lstm import default_model_dir, train_lstm

    dataset = load(args, data)
    print(
        f"Training the {config.variant} LSTM on {len(dataset.windows['train']):,} windows (validation "
        f"{len(dataset.windows['val']):,}), seed {config.seed}"
    )
    recommender = train_lstm(dataset, config, verbose=1 if sys.stdout.isatty() else 2)
    folder = recommender.save(args.out or default_model_dir())
    meta = recommender.metadata
    val = ", ".join(f"{k} {v:.4f}" for k, v in meta["val"].items() if k.startswith("val_"))
    print(
        f"Saved to {folder}: {meta['epochs_run']} epochs ({meta['stopped_by']}), best epoch {meta['best_epoch']} ({val}), "
        f"{meta['training_seconds'] / 60:.1f} min"
    )
