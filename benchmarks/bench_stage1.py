"""Stage 1 on this machine: LSTM training samples/s, single-history top-1 latency once warm, evaluation wall time.

    python benchmarks/bench_stage1.py [--data-dir DIR] [--model DIR] [--train-windows 2048] [--runs 200]

Training speed is the poster-size model's (one pass over `--train-windows` windows after a warm-up). Latency is
`LSTMRecommender.top_k(history, 1)`: the trained model in `--model`, else an untrained one of the same shape (speed
does not depend on the weights). Evaluation is the harness on every test case, both protocols, for the LSTM and MostPop.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dualrec.config import LSTMConfig
from dualrec.data.dataset import Dataset, load_dataset
from dualrec.data.features import catalogue_features
from dualrec.evaluation.harness import evaluate_system
from dualrec.ranking.lstm import LSTMRecommender, WindowBatches, build_model, compile_model, load_lstm
from dualrec.ranking.registry import load_system

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m-full-order"


def training_speed(dataset: Dataset, windows: int, config: LSTMConfig) -> float:
    """Samples per second of one epoch over the first `windows` training windows (after one warm-up batch)."""
    model = build_model(config, catalogue_features(dataset))
    compile_model(model, config)
    sample = dataset.windows["train"].take(np.arange(min(windows, len(dataset.windows["train"]))))
    model.fit(WindowBatches(sample.take(np.arange(config.batch_size)), config.batch_size, shuffle=False), verbose=0)
    started = time.perf_counter()
    model.fit(WindowBatches(sample, config.batch_size, shuffle=True), verbose=0)
    return len(sample) / (time.perf_counter() - started)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(REAL_DATA) if REAL_DATA.is_dir() else None, help="MovieLens 1M folder (default: %(default)s)"
    )
    parser.add_argument("--model", help="trained LSTM folder for latency and evaluation (default: an untrained one)")
    parser.add_argument("--train-windows", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    config = LSTMConfig()
    dataset = load_dataset(args.data_dir)
    print(
        f"data: {dataset.fingerprint[:8]}, {len(dataset.windows['train']):,} training windows, {len(dataset.cases['test'])} "
        f"test cases"
    )
    print(
        f"training: {training_speed(dataset, args.train_windows, config):.0f} samples/s (batch {config.batch_size}, "
        f"{args.train_windows} windows)"
    )
    lstm = load_lstm(args.model, dataset) if args.model else untrained(dataset, config)
    p50, p95 = latency(lstm, dataset, args.runs)
    print(f"top-1 latency, one history, warm: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({args.runs} runs)")
    for name, system in (("lstm", lstm), ("mostpop", None)):
        started = time.perf_counter()
        system = system or load_system(name, dataset)
        entries = evaluate_system(system, dataset)
        hr5 = ", ".join(f"{e['protocol']} HR@5 {e['metrics']['HR@5']['value']:.4f}" for e in entries)
        print(f"evaluation {name}: {time.perf_counter() - started:.1f} s wall (fit + score + both protocols; {hr5})")


if __name__ == "__main__":
    main()
