"""Time of a fine-tuning profile on this machine: setup, seconds per step, total, and its validation loss.

    python benchmarks/bench_finetune.py --data-dir ../shared/data/ml-1m-full-order [--task generate|rerank]
        [--scorer likelihood|labels] [--profile quick] [--steps N] [--threads N] [--lstm-dir DIR]

Runs `train_adapter` with the profile into a temporary folder, as `dualrec finetune` does, and prints: the setup (the
data, the LSTM's picks, the base model, the examples), the seconds per optimizer step and the training (validations
included), the total from the start as a user waits for it (wall clock, and the process's CPU seconds, which a loaded
machine inflates less), the validation loss of the base and of the adapter, and the load average. `--steps N` runs
only the first N steps and adds the profile's projected total. On a shared CPU one torch thread (--threads 1 or
OMP_NUM_THREADS=1) avoids threads waiting on each other.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch

from dualrec.data.dataset import load_dataset
from dualrec.finetune.examples import TASK_PROFILES, profile
from dualrec.finetune.training import train_adapter
from dualrec.ranking.hybrid import SCORERS
from dualrec.ranking.lstm import load_lstm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--lstm-dir")
    parser.add_argument("--task", choices=sorted(TASK_PROFILES), default="generate")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--scorer", choices=SCORERS, default="likelihood", help="--task rerank: the scorer whose task is learnt")
    parser.add_argument("--steps", type=int, help="run only the first N steps (default: the whole profile)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    options = profile(args.task, args.profile, args.scorer)
    steps = args.steps or options.max_steps
    run = dataclasses.replace(options, max_steps=steps, eval_steps=min(options.eval_steps, steps))
    started = time.perf_counter(), time.process_time()
    dataset = load_dataset(args.data_dir)
    with tempfile.TemporaryDirectory() as folder:
        metadata = train_adapter(dataset, load_lstm(args.lstm_dir, dataset), run, Path(folder) / "bench", progress=lambda m: None)
    total, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    setup = total - metadata["seconds"]
    scorer = f" --scorer {args.scorer}" if args.task == "rerank" else ""
    print(
        f"{args.task} {args.profile}{scorer} ({options.base}, batch {options.batch_size} x {options.grad_accum}, "
        f"{'bf16' if metadata['mixed_precision'] else 'fp32'}, LoRA in {options.lora_layers or 'all'} blocks, "
        f"{torch.get_num_threads()} torch threads, {metadata['device']}, load average {os.getloadavg()[0]:.1f}):"
    )
    print(
        f"  {steps} steps: {metadata['seconds_per_step']:.2f} s per step; setup {setup:.0f} s, training "
        f"{metadata['seconds']:.0f} s (validations included), total {total:.0f} s wall ({total / 60:.1f} min), {cpu:.0f} CPU s"
    )
    print(f"  validation loss {metadata['base_val_loss']:.4f} (base) -> {metadata['val_loss']:.4f} after {steps} steps")
    if steps != options.max_steps and options.max_steps:
        projected = setup + metadata["seconds"] / steps * options.max_steps
        print(f"  the profile's {options.max_steps} steps: about {projected:.0f} s ({projected / 60:.1f} min) in all")


if __name__ == "__main__":
    main()
