"""The hybrid's LLM scores on this machine: per-case time to score a case's candidates with each scorer and engine,
the tokens evaluated per second beside the engine's prompt-processing rate (the limit), and how far the engines agree.

    python benchmarks/bench_scoring.py [--data-dir ../shared/data/ml-1m-full-order] [--cases 6] [--candidates 20]
                                       [--threads N] [--engines llama.cpp,llama.cpp-serial,transformers]

A case is a real test case with the hybrid's own prompts (dualrec.ranking.hybrid: its last 10 movies, the answer
format "1. Heat (1995) Genres: Action, Crime, Thriller"), and as candidates the target and random movies the user
never rated (the sampled-20 protocol's). Engines:
- llama.cpp: the default; the prompt evaluated once, then all candidates in one batch, each its own sequence on the
  prompt's KV cache (dualrec.llm.scoring.ScoringContext);
- llama.cpp-serial: the same context holding one sequence, so the candidates go one after another from the prompt's
  end (what the scorer did before);
- transformers: the candidates packed into one row on the prompt's cache.
Scorers:
- likelihood: the candidates' log-likelihoods after the history prompt (one prompt evaluation, then their tokens);
- relative, cold: minus the same after the neutral prompt, both computed; relative, warm: the neutral values
  remembered from earlier cases (what a run over all test cases pays once its memo holds the candidates);
- labels: the candidates listed (A)...(T) in the prompt, the next-token log-probabilities of the labels (one pass).
Figures are medians over the cases after one warm-up case. The prompt-processing rate is the same history prompt
evaluated alone with only its last logits: llama.cpp's scoring context, transformers' forward with logits_to_keep=1.
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
from dualrec.llm import (  # noqa: E402
    DEFAULT_PRESET,
    PRESETS,
    LLMBackend,
    gguf_path,
    load_backend,
    scoring,  # noqa: E402
    to_messages,
)
from dualrec.llm.llamacpp_backend import LlamaCppBackend, load_llamacpp  # noqa: E402
from dualrec.llm.scoring import (  # noqa: E402
    LABEL_PREFIX,
    label_log_probs,
    log_likelihoods,
    relative_log_likelihoods,
    scoring_context,
    scoring_engine,
)
from dualrec.ranking.hybrid import NEUTRAL, answer_text, label_prompt, likelihood_prompt  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "ml-1m-full-order"
ENGINES = ("llama.cpp", "llama.cpp-serial", "transformers")
SCORERS = ("likelihood", "relative, cold", "relative, warm", "labels")
BATCHED = scoring.SEQUENCES  # llama.cpp's candidates per batch


class Case:
    """One test case's prompts and candidate answers, as the hybrid writes them."""

    def __init__(self, dataset: Dataset, history: np.ndarray, candidates: np.ndarray) -> None:
        self.candidates = [answer_text(dataset, int(item)) for item in candidates]
        self.prompt = likelihood_prompt(dataset, history)
        self.label_prompt = label_prompt(dataset, history, candidates)


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
    """Tokens per second of evaluating a prompt alone (its last logits only) on the engine that scores."""
    if isinstance(backend, LlamaCppBackend):
        context = scoring_context(backend)
        elapsed = seconds(lambda: context.evaluate_prompt(tokens))
        context.clear()
    else:
        with torch.inference_mode():
            elapsed = seconds(lambda: backend.model(input_ids=torch.tensor([tokens]), logits_to_keep=1))
    return len(tokens) / elapsed


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


def bench_engine(name: str, backend: LLMBackend, cases: list[Case]) -> np.ndarray:
    """Print the engine's per-case figures; return each case's relative scores (for the agreement check)."""
    memo: dict[str, float] = {}
    prompt_tokens = scoring_engine(backend).chat_tokens
    rates, times, tokens, relative = [], {s: [] for s in SCORERS}, {s: [] for s in SCORERS}, []
    for index, case in enumerate(cases):
        rate = prompt_rate(backend, prompt_tokens(to_messages(case.prompt)))
        elapsed, evaluated, scores = score_case(backend, case, memo)
        relative.append(scores)
        if index == 0:
            continue  # warm-up
        rates.append(rate)
        for scorer in SCORERS:
            times[scorer].append(elapsed[scorer])
            tokens[scorer].append(evaluated[scorer])
    print(
        f"{backend.name} on {name}: {len(cases) - 1} cases | prompt processing alone "
        f"{statistics.median(rates):6.0f} tokens/s (the limit)"
    )
    for scorer in SCORERS:
        speed = statistics.median(np.array(tokens[scorer]) / np.array(times[scorer]))
        print(
            f"  {scorer:15s} {statistics.median(times[scorer]):6.2f} s per case | {statistics.median(tokens[scorer]):5.0f} "
            f"tokens evaluated, {speed:6.0f} tokens/s",
            flush=True,
        )
    print(f"  726 test cases, relative warm: about {726 * statistics.median(times['relative, warm']) / 60:.1f} min")
    return np.array(relative)


def load(engine: str, threads: int | None) -> LLMBackend:
    """The embedded model on an engine; llama.cpp-serial: its scoring context holds one sequence."""
    scoring.SEQUENCES = 1 if engine == "llama.cpp-serial" else BATCHED
    if engine == "transformers":
        return load_backend(DEFAULT_PRESET, engine=engine)
    if threads:
        return load_llamacpp(gguf_path(PRESETS[DEFAULT_PRESET]), name=DEFAULT_PRESET, n_threads=threads)
    return load_backend(DEFAULT_PRESET, engine="llama.cpp")


def print_agreement(names: list[str], relative: list[np.ndarray]) -> None:
    """How far each engine's relative scores of the same candidates agree with the first engine's, case by case."""
    first = relative[0]
    for name, second in zip(names[1:], relative[1:]):
        pearson = [np.corrcoef(a, b)[0, 1] for a, b in zip(first, second)]
        spearman = [np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1] for a, b in zip(first, second)]
        top1 = np.mean([a.argmax() == b.argmax() for a, b in zip(first, second)])
        difference = np.abs(first - second)
        print(
            f"{name} against {names[0]}: max |difference| {difference.max():.3f} nats, median {np.median(difference):.3f}; "
            f"correlation per case min {min(pearson):.4f}; rank correlation min {min(spearman):.3f}; same top-1 in {top1:.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REAL_DATA), help="MovieLens 1M folder (default %(default)s)")
    parser.add_argument("--cases", type=int, default=6, help="test cases, the first a warm-up (default %(default)s)")
    parser.add_argument("--candidates", type=int, default=20, help="candidates per case, at most 20 (default %(default)s)")
    parser.add_argument("--threads", type=int, help="llama.cpp's and torch's threads (default: each backend's own)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated (default %(default)s)")
    args = parser.parse_args()
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    if not 2 <= args.cases or not 1 <= args.candidates <= 20 or not set(engines) <= set(ENGINES):
        parser.error(f"--cases must be at least 2, --candidates 1 to 20 and --engines from {', '.join(ENGINES)}")
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = real_cases(load_dataset(args.data_dir), args.cases, args.candidates)
    print(
        f"{DEFAULT_PRESET}: {args.candidates} candidates per case, {os.cpu_count()} CPU cores, threads "
        f"{args.threads or 'default'} (torch {torch.get_num_threads()}), load average {os.getloadavg()[0]:.2f}"
    )
    relative = []
    for engine in engines:
        backend = load(engine, args.threads)
        relative.append(bench_engine(engine, backend, cases))
        backend.close()
    if len(relative) > 1:
        print_agreement(engines, relative)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
