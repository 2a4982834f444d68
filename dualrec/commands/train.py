"""`dualrec train lstm`: train the Stage 1 LSTM and save it where the app and the other commands find it."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dualrec.commands.common import add_data_options, data_config, positive_minutes
from dualrec.config import LSTM_MONITORS, LSTM_PROFILES, LSTM_VARIANTS, LSTMConfig
from dualrec.data.dataset import load_dataset


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
        help="quick: 3 epochs for a first run; full: up to 40 epochs, early stopping (default)",
    )
    lstm.add_argument("--epochs", type=int, help="most epochs (overrides the profile)")
    lstm.add_argument("--seed", type=int, help=f"random seed (default {LSTMConfig.seed})")
    lstm.add_argument(
        "--variant",
        choices=LSTM_VARIANTS,
        help="poster (default) or the public code's (genres through Dense 64, extra Dense 256)",
    )
    lstm.add_argument("--monitor", choices=LSTM_MONITORS, help="early-stopping quantity (default val_loss)")
    lstm.add_argument("--max-minutes", type=positive_minutes, help="time budget: no epoch starts that would end past it")
    lstm.set_defaults(handler=run_lstm)


def lstm_config(args: argparse.Namespace) -> LSTMConfig:
    overrides = {
        "epochs": args.epochs,
        "seed": args.seed,
        "variant": args.variant,
        "monitor": args.monitor,
        "max_minutes": args.max_minutes,
    }
    return dataclasses.replace(LSTM_PROFILES[args.profile], **{k: v for k, v in overrides.items() if v is not None})


def run_lstm(args: argparse.Namespace) -> None:
    from dualrec.ranking.lstm import default_model_dir, train_lstm  # TensorFlow loads only when needed

    config = lstm_config(args)
    dataset = load_dataset(args.data_dir, data_config(args), use_cache=not args.no_cache)
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
