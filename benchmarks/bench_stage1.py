"""Stage 1 on this machine: LSTM training samples/s beside its limit, single-history top-1 latency, evaluation wall time.

    python benchmarks/bench_stage1.py [--data-dir DIR] [--model DIR] [--engines torch,keras] [--threads N]
                                      [--batch-size B] [--train-windows 4096] [--runs 200] [--skip-eval]

Training speed is the poster-size model's: one pass over `--train-windows` training windows after a warm-up pass, per
engine (`LSTMConfig.engine`), as wall-clock samples/s and as samples per CPU-second of this process (the figure that
a machine shared with other jobs distorts least). The limit is what the machine sustains in a plain float32 matrix
multiply (torch, `--threads` threads) divided by the model's multiply-add FLOPs per training window (forward, and
twice that backward); the torch engine does fewer, as its first LSTM's input product is per movie, not per step.
Latency is `LSTMRecommender.top_k(history, 1)`: the trained model in `--model`, else an untrained one of the same
shape (speed does not depend on the weights). Evaluation is the harness on every test case, both protocols, for the
LSTM and MostPop. Every line says the load average, since these figures mean little on a loaded machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time
from pathlib import Path

import keras
import numpy as np

from dualrec.config import LSTM_ENGINES, LSTMConfig
from dualrec.data.dataset import Dataset, load_dataset
from dualrec.data.features import catalogue_features
from dualrec.evaluation.harness import evaluate_system
from dualrec.ranking.lstm import LSTMRecommender, WindowBatches, build_model, compile_model, load_lstm
from dualrec.ranking.registry import load_system

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m-full-order"
MATMUL_SIZE = 2048


def load() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else ""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def forward_multiply_adds(config: LSTMConfig, dataset: Dataset, per_movie_input: bool = False) -> float:
    """Multiply-adds of one window's forward pass (the products; element-wise work is left out). With
    `per_movie_input`, the first LSTM's input product is counted once per movie and batch, as the torch engine does it."""
    genres = 64 if config.variant == "public" else len(catalogue_features(dataset).genres[0])
    steps, catalogue, (first, second) = dataset.config.window, dataset.catalogue_size, config.lstm_units
    step_input = config.item_dim + config.title_dim + genres
    input_product = catalogue * step_input * 4 * first / config.batch_size if per_movie_input else steps * step_input * 4 * first
    hidden = second * 256 + 256 * catalogue if config.variant == "public" else second * catalogue
    return input_product + steps * (first * 4 * first + (first + second) * 4 * second) + hidden


def training_flops(config: LSTMConfig, dataset: Dataset, per_movie_input: bool = False) -> float:
    """FLOPs of one training window: 2 per multiply-add, forward and backward (twice the forward)."""
    return 2 * 3 * forward_multiply_adds(config, dataset, per_movie_input)


def matmul_gflops(seconds: float = 2.0) -> tuple[float, float]:
    """GFLOP per wall second and per CPU-second of repeated float32 (2048, 2048) @ (2048, 2048) products in torch."""
    import torch

    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b
    count, started, cpu = 0, time.perf_counter(), cpu_seconds()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    flops = 2 * MATMUL_SIZE**3 * count / 1e9
    return flops / (time.perf_counter() - started), flops / (cpu_seconds() - cpu)


def one_epoch(model: keras.Model, dataset: Dataset, sample: np.ndarray, config: LSTMConfig) -> None:
    """One pass of `config.engine` over the training windows `sample` (validation on 256 windows for torch)."""
    windows = dataset.windows["train"].take(sample)
    if config.engine == "torch":
        from dualrec.ranking import lstm_torch

        val = dataset.windows["val"].take(np.arange(256))
        lstm_torch.fit(model, windows, val, dataclasses.replace(config, epochs=1), keras.callbacks.CallbackList([], model=model))
    else:
        model.fit(WindowBatches(windows, config.batch_size, shuffle=True, seed=config.seed), verbose=0)


def training_speed(dataset: Dataset, windows: int, config: LSTMConfig) -> tuple[float, float]:
    """Samples per wall second and per CPU-second of one epoch over `windows` training windows (a whole number of
    batches), after a warm-up pass on the same model (Keras traces its training step there)."""
    model = build_model(config, catalogue_features(dataset))
    compile_model(model, config)
    sample = np.arange(min(windows, len(dataset.windows["train"])) // config.batch_size * config.batch_size)
    one_epoch(model, dataset, sample[: 2 * config.batch_size], config)
    wall, cpu = time.perf_counter(), cpu_seconds()
    one_epoch(model, dataset, sample, config)
    return len(sample) / (time.perf_counter() - wall), len(sample) / (cpu_seconds() - cpu)


def untrained(dataset: Dataset, config: LSTMConfig) -> LSTMRecommender:
    features = catalogue_features(dataset)
    metadata = {"data": {"config": dataset.config.as_dict()}, "catalogue": dataset.catalogue.tolist()}
    return LSTMRecommender(build_model(config, features), metadata, features.vocabulary)


def latency(lstm: LSTMRecommender, dataset: Dataset, runs: int) -> tuple[float, float]:
    """p50 and p95 milliseconds of top-1 for single test histories, after a warm-up call."""
    histories = [h[h >= 0] for h in dataset.cases["test"].histories]
    lstm.top_k(histories[0], 1)
    times = []
    for i in range(runs):
        started = time.perf_counter()
        lstm.top_k(histories[i % len(histories)], 1)
        times.append(time.perf_counter() - started)
    p50, p95 = np.percentile(times, [50, 95]) * 1000
    return float(p50), float(p95)


def set_threads(threads: int) -> None:
    """The thread count of torch and TensorFlow (before either runs an op)."""
    import tensorflow as tf
    import torch

    torch.set_num_threads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(REAL_DATA) if REAL_DATA.is_dir() else None, help="MovieLens 1M folder (default: %(default)s)"
    )
    parser.add_argument("--model", help="trained LSTM folder for latency and evaluation (default: an untrained one)")
    parser.add_argument("--engines", default=",".join(LSTM_ENGINES), help="training engines to time (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and TensorFlow threads (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=LSTMConfig().batch_size)
    parser.add_argument("--train-windows", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--skip-eval", action="store_true", help="only the training figures")
    args = parser.parse_args()
    set_threads(args.threads)
    config = dataclasses.replace(LSTMConfig(), batch_size=args.batch_size)
    dataset = load_dataset(args.data_dir)
    print(
        f"data: {dataset.fingerprint[:8]}, {len(dataset.windows['train']):,} training windows, {len(dataset.cases['test'])} "
        f"test cases; {args.threads} threads, {os.cpu_count()} CPUs; {load()}"
    )
    (gflops, per_cpu_gflops), flops = matmul_gflops(), training_flops(config, dataset)
    limit, cpu_limit = gflops * 1e9 / flops, per_cpu_gflops * 1e9 / flops
    print(
        f"limit: a float32 {MATMUL_SIZE}^3 matmul sustains {gflops:.0f} GFLOP/s ({per_cpu_gflops:.0f} per CPU-second); "
        f"the model's training window is {flops / 1e6:.0f} MFLOP (torch engine: "
        f"{training_flops(config, dataset, True) / 1e6:.0f}), so at most {limit:.0f} samples/s ({cpu_limit:.0f} per "
        f"CPU-second; {load()})"
    )
    for engine in args.engines.split(","):
        wall, per_cpu = training_speed(dataset, args.train_windows, dataclasses.replace(config, engine=engine))
        print(
            f"training, {engine} engine: {wall:.0f} samples/s ({100 * wall / limit:.0f}% of the limit), {per_cpu:.0f} per "
            f"CPU-second ({100 * per_cpu / cpu_limit:.0f}%; batch {config.batch_size}, {args.train_windows} windows; {load()})"
        )
    if args.skip_eval:
        return
    lstm = load_lstm(args.model, dataset) if args.model else untrained(dataset, config)
    p50, p95 = latency(lstm, dataset, args.runs)
    print(f"top-1 latency, one history, warm: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({args.runs} runs; {load()})")
    for name, system in (("lstm", lstm), ("mostpop", None)):
        started = time.perf_counter()
        system = system or load_system(name, dataset)
        entries = evaluate_system(system, dataset)
        hr5 = ", ".join(f"{e['protocol']} HR@5 {e['metrics']['HR@5']['value']:.4f}" for e in entries)
        print(f"evaluation {name}: {time.perf_counter() - started:.1f} s wall (fit + score + both protocols; {hr5})")


if __name__ == "__main__":
    main()
