"""The session models (GCE-GNN, HIDE, MCPRN, Atten-Mixer) and UniSRec on this machine: one training epoch over the
training prefixes, estimated; beside RecBole's GRU4Rec and SASRec (UniSRec, GRU4Rec and SASRec need RecBole).

    python benchmarks/bench_session_models.py [--data-dir DIR] [--models mcprn,...] [--batches 200] [--threads 1]

Each model is fitted as `dualrec evaluate` fits it (the registry's settings: PO4ISR's tuned ML-1M options for the
session models, batch 512 for GRU4Rec, SASRec and UniSRec), except that its first epoch stops after one warm-up step
and `--batches` timed steps (batch building, forward, backward, Adam), and the epoch is extrapolated from them: seconds
per step times the steps of one epoch (ceil(prefixes / batch size)). The figures printed say so. Also timed: the set-up before the
first step (the prefixes; GCE-GNN's global graph, HIDE's padding widths; RecBole's dataset; UniSRec's item-text
features, encoded on the first run and cached) and the rest of the fit (one validation: every validation case scored,
full ranking). Each line ends with the load average when the model's timing ended (the machine may be shared).
"""

from __future__ import annotations

import argparse
import math
import time
from itertools import islice
from pathlib import Path
from unittest import mock

import torch

from dualrec.data.dataset import Dataset, load_dataset, prefix_windows
from dualrec.ranking.baselines import fitting
from dualrec.ranking.baselines.fitting import TrainingBudget, gradient_steps  # bound before fit patches it
from dualrec.ranking.baselines.session_models import ARCHITECTURES, SessionRecommender
from dualrec.ranking.registry import new_system

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m-full-order"
ONE_EPOCH = TrainingBudget(max_epochs=1, max_minutes=600)


def timed_fit(name: str, dataset: Dataset, steps: int) -> dict:
    """Set-up seconds, seconds per step, the epoch's steps and estimated minutes, and the rest of the fit's seconds."""
    system = new_system(name)
    system.budget, system.use_cache = ONE_EPOCH, False
    if isinstance(system, SessionRecommender):
        module, batch_size = fitting, system.model_options.batch_size
    else:
        from dualrec.ranking.baselines import recbole_models as module  # RecBole loads only when asked for

        batch_size = system.params["train_batch_size"]
    marks = {}

    def timed_steps(optimizer, batches, loss_of, deadline: float) -> float:
        marks["first_step"] = time.perf_counter()
        batches = iter(batches)
        gradient_steps(optimizer, islice(batches, 1), loss_of, math.inf)  # warm-up
        started = time.perf_counter()
        loss = gradient_steps(optimizer, islice(batches, steps), loss_of, math.inf)
        marks["per_step"], marks["steps_done"] = (time.perf_counter() - started) / steps, time.perf_counter()
        return loss

    started = time.perf_counter()
    with mock.patch.object(module, "gradient_steps", timed_steps):
        system.fit(dataset)
    epoch_steps = math.ceil(system.training["samples"] / batch_size)
    return {
        "setup_s": round(marks["first_step"] - started, 1),
        "ms_per_step": round(1000 * marks["per_step"], 1),
        "epoch_steps": epoch_steps,
        "epoch_min_estimated": round(marks["per_step"] * epoch_steps / 60, 1),
        "validation_s": round(time.perf_counter() - marks["steps_done"], 1),
        "load_average": Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").is_file() else "n/a",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REAL_DATA), help="MovieLens 1M folder (default %(default)s)")
    models = ",".join([*ARCHITECTURES, "unisrec", "gru4rec", "sasrec"])
    parser.add_argument("--models", default=models, help="comma-separated (default %(default)s)")
    parser.add_argument("--batches", type=int, default=200, help="training steps timed per model (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s, as the reference runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data_dir)
    device = "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} torch thread(s)"
    prefixes = len(prefix_windows(dataset, dataset.split_users["train"]))
    print(f"{prefixes} training prefixes; device: {device}; {args.batches} steps timed per model after one warm-up")
    print("epoch_min_estimated = ms_per_step x epoch_steps (extrapolated from the steps timed, not a whole epoch run)")
    for name in args.models.split(","):
        print(name, timed_fit(name, dataset, args.batches), flush=True)


if __name__ == "__main__":
    main()
