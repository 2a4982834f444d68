"""The hybrid's LLM scores on this machine: per-case time to score a case's candidates with each scorer and engine,
the tokens evaluated per second beside each engine's prompt-processing rate (the limit), and how far the engines agree.

    python benchmarks/bench_scoring.py [--data-dir ../shared/data/ml-1m-full-order] [--cases 6] [--candidates 20]
                                       [--threads N] [--engines llama.cpp,transformers]

A case is a real test case: a prompt holding its 30-movie history (the poster's history lines), and as candidates the
target and random movies the user never rated (the sampled-20 protocol's, written "1. Toy Story (1995)"). Scorers:
- likelihood: the candidates' log-likelihoods after the history prompt (one prompt evaluation, then their tokens);
- relative, cold: minus the same after a neutral prompt, both computed; relative, warm: the neutral values
  remembered from earlier cases (what a run over all test cases pays once its memo holds the candidates);
- labels: the candidates listed (A)...(T) in the prompt, the next-token log-probabilities of the labels (one pass).
Figures are medians over the cases after one warm-up case. The prompt-processing rate is the same history prompt
evaluated alone: llama.cpp's `eval`, transformers' forward without the logits of every token.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dualrec.data.dataset import Dataset, load_dataset  # noqa: E402
from dualrec.grounding.prompts import HEADER, movie_line  # noqa: E402
from dualrec.llm import DEFAULT_PRESET, PRESETS, LLMBackend, gguf_path, load_backend, to_messages  # noqa: E402
from dualrec.llm.llamacpp_backend import LlamaCppBackend, load_llamacpp  # noqa: E402
from dualrec.llm.scoring import (  # noqa: E402
    LABEL_PREFIX,
    label_log_probs,
    labelled,
    log_likelihoods,
    relative_log_likelihoods,
    scoring_engine,
)

REAL_DATA = ROOT.parent / "shared" / "data" / "ml-1m-full-order"
ANSWER = "Answer with one line in this format: 1. Title (Year)"
REQUEST = f"Recommend the one movie this user would most likely watch next. {ANSWER}"
NEUTRAL = f"Recommend one movie. {ANSWER}"
LABEL_REQUEST = "Which candidate would this user most likely watch next? Answer with its letter in parentheses."


class Case:
    """One test case's prompts and candidate strings."""

    def __init__(self, dataset: Dataset, history: np.ndarray, candidates: np.ndarray) -> None:
        movies = dataset.movies
        lines = [movie_line(movies, int(dataset.catalogue[item])) for item in history if item >= 0]
        movie_ids = [int(dataset.catalogue[item]) for item in candidates]
        self.candidates = [f"1. {movies.loc[m, 'title']} ({movies.loc[m, 'year']})" for m in movie_ids]
        self.prompt = "\n".join([HEADER, *lines, REQUEST])
        listing = labelled([text.removeprefix("1. ") for text in self.candidates])
        self.label_prompt = "\n".join([HEADER, *lines, "Candidates:", listing, LABEL_REQUEST])


def real_cases(dataset: Dataset, count: int, candidates: int) -> list[Case]:
    """The first `count` test cases, each with its target and `candidates - 1` unrated movies, the target at a random
    place."""
    cases = dataset.cases["test"]
    negatives = dataset.negatives(cases, seed=0)[:, : candidates - 1]
    rng = np.random.default_rng(0)
    return [
        Case(dataset, cases.histories[i], rng.permutation(np.r_[cases.targets[i], negatives[i]]))
        for i in range(min(count, len(cases)))
    ]


def seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def prompt_rate(backend: LLMBackend, tokens: list[int]) -> float:
    """Tokens per second of evaluating a prompt alone on this backend's engine."""
    if isinstance(backend, LlamaCppBackend):
        llama = backend.llama

        def evaluate() -> None:
            llama.reset()
            llama.eval(tokens)

        elapsed = seconds(evaluate)
        llama.reset()
    else:
        with torch.inference_mode():
            elapsed = seconds(lambda: backend.model(input_ids=torch.tensor([tokens]), logits_to_keep=1))
    return len(tokens) / elapsed


SCORERS = ("likelihood", "relative, cold", "relative, warm", "labels")


def score_case(backend: LLMBackend, case: Case, memo: dict[str, float]) -> tuple[dict, dict, np.ndarray]:
    """Each scorer's seconds and tokens evaluated on one case, and the case's relative scores."""
    engine = scoring_engine(backend)
    prompt = len(engine.chat_tokens(to_messages(case.prompt)))
    neutral = len(engine.chat_tokens(to_messages(NEUTRAL)))
    after_prompt = sum(len(engine.tokens(c)) - 1 for c in case.candidates)  # a candidate's last token is not fed
    labels = len(engine.chat_tokens(to_messages(case.label_prompt))) + len(engine.tokens(LABEL_PREFIX))
    relative_log_likelihoods(backend, NEUTRAL, NEUTRAL, case.candidates, memo=memo)  # the memo holds this case's
    relative: list[np.ndarray] = []
    runs = {
        "likelihood": (lambda: log_likelihoods(backend, case.prompt, case.candidates), prompt + after_prompt),
        "relative, cold": (
            lambda: relative_log_likelihoods(backend, case.prompt, NEUTRAL, case.candidates),
            prompt + neutral + 2 * after_prompt,
        ),
        "relative, warm": (
            lambda: relative.append(relative_log_likelihoods(backend, case.prompt, NEUTRAL, case.candidates, memo=memo)),
            prompt + after_prompt,
        ),
        "labels": (lambda: label_log_probs(backend, case.label_prompt, len(case.candidates)), labels),
    }
    elapsed = {name: seconds(work) for name, (work, _) in runs.items()}
    return elapsed, {name: evaluated for name, (_, evaluated) in runs.items()}, relative[0]


def bench_engine(backend: LLMBackend, cases: list[Case]) -> np.ndarray:
    """Print the engine's per-case figures; return each case's relative scores (for the agreement check)."""
    memo: dict[str, float] = {}
    prompt_tokens = scoring_engine(backend).chat_tokens
    rates, times, tokens, relative = [], {name: [] for name in SCORERS}, {name: [] for name in SCORERS}, []
    for index, case in enumerate(cases):
        rate = prompt_rate(backend, prompt_tokens(to_messages(case.prompt)))
        elapsed, evaluated, scores = score_case(backend, case, memo)
        relative.append(scores)
        if index == 0:
            continue  # warm-up
        rates.append(rate)
        for name in SCORERS:
            times[name].append(elapsed[name])
            tokens[name].append(evaluated[name])
    print(
        f"{backend.name} on {engine_name(backend)}: {len(cases) - 1} cases | prompt processing alone "
        f"{statistics.median(rates):6.0f} tokens/s (the limit)"
    )
    for name in SCORERS:
        speed = statistics.median(np.array(tokens[name]) / np.array(times[name]))
        print(
            f"  {name:15s} {statistics.median(times[name]):6.2f} s per case | {statistics.median(tokens[name]):5.0f} tokens "
            f"evaluated, {speed:6.0f} tokens/s",
            flush=True,
        )
    print(f"  726 test cases, relative warm: about {726 * statistics.median(times['relative, warm']) / 60:.1f} min")
    return np.array(relative)


def engine_name(backend: LLMBackend) -> str:
    return "llama.cpp" if isinstance(backend, LlamaCppBackend) else "transformers"


def load(engine: str, threads: int | None) -> LLMBackend:
    if engine == "llama.cpp":
        gguf = gguf_path(PRESETS[DEFAULT_PRESET])
        return (
            load_llamacpp(gguf, name=DEFAULT_PRESET, n_threads=threads)
            if threads
            else load_backend(DEFAULT_PRESET, engine=engine)
        )
    return load_backend(DEFAULT_PRESET, engine=engine)


def print_agreement(first: np.ndarray, second: np.ndarray) -> None:
    """How far the two engines' relative scores of the same candidates agree, case by case."""
    pearson = [np.corrcoef(a, b)[0, 1] for a, b in zip(first, second)]
    spearman = [np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1] for a, b in zip(first, second)]
    top1 = np.mean([a.argmax() == b.argmax() for a, b in zip(first, second)])
    difference = np.abs(first - second)
    print(
        f"engines agree: max |difference| {difference.max():.3f} nats, median {np.median(difference):.3f}; "
        f"correlation per case min {min(pearson):.4f}; rank correlation min {min(spearman):.3f}; same top-1 in {top1:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REAL_DATA), help="MovieLens 1M folder (default %(default)s)")
    parser.add_argument("--cases", type=int, default=6, help="test cases, the first a warm-up (default %(default)s)")
    parser.add_argument("--candidates", type=int, default=20, help="candidates per case, at most 20 (default %(default)s)")
    parser.add_argument("--threads", type=int, help="llama.cpp's and torch's threads (default: each backend's own)")
    parser.add_argument("--engines", default="llama.cpp,transformers", help="comma-separated (default %(default)s)")
    args = parser.parse_args()
    if not 2 <= args.cases or not 1 <= args.candidates <= 20:
        parser.error("--cases must be at least 2 and --candidates 1 to 20")
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = real_cases(load_dataset(args.data_dir), args.cases, args.candidates)
    print(
        f"{DEFAULT_PRESET}: {args.candidates} candidates per case, {os.cpu_count()} CPU cores, threads "
        f"{args.threads or 'default'} (torch {torch.get_num_threads()}), load average {os.getloadavg()[0]:.2f}"
    )
    relative = []
    for engine in args.engines.split(","):
        backend = load(engine, args.threads)
        relative.append(bench_engine(backend, cases))
        backend.close()
    if len(relative) == 2:
        print_agreement(*relative)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
