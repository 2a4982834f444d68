"""Seconds per optimizer step of LoRA fine-tuning on this machine, with the quick profile's batch and length.

    python benchmarks/bench_finetune.py --data-dir ../shared/data/ml-1m-full-order [--steps 4] [--threads N]
        [--base smollm2-135m] [--batch-size 4] [--max-length 384] [--lstm-dir DIR]

Runs `train_adapter` for a few steps into a temporary folder (one validation example, so evaluation costs little) and
prints its figures: the quick profile's 120 steps take about 120 x the step time, plus loading and four validations.
On a loaded shared CPU, one torch thread (--threads 1 or OMP_NUM_THREADS=1) avoids threads waiting on each other.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from dualrec.data.dataset import load_dataset
from dualrec.finetune.examples import PROFILES
from dualrec.finetune.training import train_adapter
from dualrec.ranking.lstm import load_lstm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--lstm-dir")
    parser.add_argument("--base", default=PROFILES["quick"].base)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=PROFILES["quick"].batch_size)
    parser.add_argument("--max-length", type=int, default=PROFILES["quick"].max_length)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data_dir)
    options = dataclasses.replace(
        PROFILES["quick"],
        base=args.base,
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        val_examples=1,
        eval_steps=args.steps,
        save_steps=args.steps,
    )
    with tempfile.TemporaryDirectory() as folder:
        metadata = train_adapter(dataset, load_lstm(args.lstm_dir, dataset), options, Path(folder) / "bench")
    print(
        f"{args.base}: {metadata['seconds_per_step']:.2f} s per step (batch {args.batch_size}, up to {args.max_length} tokens, "
        f"{torch.get_num_threads()} torch threads, {metadata['device']}); {args.steps} steps in {metadata['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
