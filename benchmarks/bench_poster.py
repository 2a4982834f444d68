"""The poster protocol on this machine: the time to build it, and one training epoch of each model on each training set.

    python benchmarks/bench_poster.py [--data-dir DIR] [--train-samples 150,50,all] [--models ...] [--batches 50]

Printed, one line each, with the load average when the figure was taken (the machine may be shared):
- the protocol's build from ratings.dat (sessions, split, samples, candidates; no cache), its cached load, and the
  build of its Dataset for each training set (sessions as pseudo-users, every training prefix as a window);
- per training set and model: MostPop's and SKNN's fit, and their scoring of the 1,000 test sessions (one candidate
  draw); each trained model's one epoch. On 150 and 50 sessions the epoch is run whole (the fit with a budget of one
  epoch, its one validation pass included: `epoch_s`). On the whole training split (627,469 sessions on ML-1M, every
  prefix a sample: about 11.8 million) it is estimated, as benchmarks/bench_session_models.py does: `--batches` steps
  timed after a warm-up, times the epoch's steps (`epoch_min_estimated`); the LSTM's from an epoch over `--batches`
  batches of the training windows. RecBole's models are not timed on the whole split by default: RecBole writes and
  reads every prefix as a text file first (name them in --models to time them anyway).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dualrec.config import LSTMConfig
from dualrec.data.poster import load_poster, poster_dataset
from dualrec.ranking.baselines.fitting import TrainingBudget
from dualrec.ranking.registry import new_system

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_session_models import timed_fit  # noqa: E402  (one epoch, estimated from timed steps)

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m-full-order"
UNTRAINED = ("mostpop", "sknn")
RECBOLE = ("slim", "fpmc", "narm", "stamp", "gru4rec", "sasrec")
SESSION_MODELS = ("gcegnn", "hide", "mcprn", "attenmixer")
MODELS = (*UNTRAINED, *RECBOLE, *SESSION_MODELS, "lstm")


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").is_file() else "n/a"


def seconds(started: float) -> float:
    return round(time.perf_counter() - started, 2)


def untrained(name: str, dataset) -> dict:
    """Fit, then score the test sessions (what ranking one candidate draw needs)."""
    system, started = new_system(name), time.perf_counter()
    system.fit(dataset)
    fit = seconds(started)
    started = time.perf_counter()
    system.score(dataset.cases["test"].histories, dataset.cases["test"].users)
    return {"fit_s": fit, "score_1000_s": seconds(started)}


def whole_epoch(name: str, dataset) -> dict:
    """The fit with a budget of one epoch: the epoch run whole, then one validation pass."""
    if name == "lstm":
        from dualrec.ranking.lstm import train_lstm  # TensorFlow loads only when asked for

        started = time.perf_counter()
        model = train_lstm(dataset, LSTMConfig(epochs=1), verbose=0)
        return {"epoch_s": seconds(started), "windows": model.metadata["train_windows"]}
    system = new_system(name)
    system.budget, system.use_cache = TrainingBudget(max_epochs=1, max_minutes=600), False
    started = time.perf_counter()
    system.fit(dataset)
    return {"epoch_s": seconds(started), "samples": system.training["samples"]}


def lstm_estimate(dataset, batches: int) -> dict:
    """One LSTM epoch over the first `batches` batches of the training windows, scaled to all of them."""
    from dualrec.ranking.lstm import train_lstm

    config = LSTMConfig(epochs=1)
    windows = dataset.windows["train"]
    part = windows.take(np.arange(min(len(windows), batches * config.batch_size)))
    started = time.perf_counter()
    train_lstm(dataclasses.replace(dataset, windows=dataset.windows | {"train": part}), config, verbose=0)
    spent = time.perf_counter() - started
    return {"windows": len(windows), "epoch_min_estimated": round(spent * len(windows) / len(part) / 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REAL_DATA), help="MovieLens 1M folder (default %(default)s)")
    parser.add_argument("--train-samples", default="150,50,all", help="comma-separated (default %(default)s)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default %(default)s)")
    parser.add_argument("--batches", type=int, default=50, help="steps timed per model on the whole split (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    explicit = args.models != parser.get_default("models")  # RecBole on the whole split only when named
    print(f"device: {'cuda' if torch.cuda.is_available() else f'cpu, {args.threads} torch thread(s)'}")

    started = time.perf_counter()
    data = load_poster(args.data_dir, use_cache=False)
    print(f"protocol build (no cache): {seconds(started)} s, {len(data.sessions)} sessions; load {load()}", flush=True)
    started = time.perf_counter()
    load_poster(args.data_dir)
    print(f"protocol load (cached): {seconds(started)} s; load {load()}", flush=True)
    for sample in args.train_samples.split(","):
        started = time.perf_counter()
        dataset = poster_dataset(data, sample)
        sessions, windows = len(dataset.split_users["train"]), len(dataset.windows["train"])
        print(f"\n== {sample}: Dataset built in {seconds(started)} s ({sessions} sessions, {windows} prefixes); load {load()}")
        for name in models:
            if name in UNTRAINED:
                figures = untrained(name, dataset)
            elif sample != "all":
                figures = whole_epoch(name, dataset)
            elif name == "lstm":
                figures = lstm_estimate(dataset, args.batches)
            elif name in SESSION_MODELS or explicit:
                figures = timed_fit(name, dataset, args.batches)
            else:
                figures = {"skipped": "RecBole on every prefix of the whole split: name it in --models to time it"}
            print(f"{sample} {name}: {figures}; load {load()}", flush=True)
    print(f"\nepoch_min_estimated: seconds per step (of {args.batches} timed) x the epoch's steps; not a whole epoch run")


if __name__ == "__main__":
    main()
