"""`dualrec evaluate`: score systems on the same cases under the same protocols; one results JSON per run."""

from __future__ import annotations

import argparse
import re
import sys
import time
from functools import partial
from pathlib import Path

from dualrec.commands.common import MODEL_HELP, add_data_options, data_config, positive_minutes
from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, EVAL_PROTOCOLS, FREEFORM_K, FREEFORM_TEMPLATE, paths
from dualrec.data.dataset import Dataset, load_dataset
from dualrec.errors import DualrecError
from dualrec.evaluation.freeform import FREEFORM, FreeformOptions, evaluate_freeform, shared_backends
from dualrec.evaluation.harness import evaluate, markdown_table, read_results, write_results
from dualrec.grounding.prompts import TEMPLATES
from dualrec.llm import DEFAULT_PRESET, LLMBackend
from dualrec.ranking.registry import load_system, system_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="HR and NDCG@1/5/10 of systems on the test cases, with 95%% bootstrap intervals"
    )
    add_data_options(parser)
    parser.add_argument(
        "--systems", default="lstm,mostpop", help=f"comma-separated, from: {', '.join(system_names())} (default %(default)s)"
    )
    parser.add_argument(
        "--protocol",
        default=",".join(EVAL_PROTOCOLS),
        help="comma-separated: full (all movies, watched excluded), sampled-20 (target + 19 never-rated, 5 seeds) (default: "
        "both)",
    )
    parser.add_argument("--split", choices=("test", "val"), default="test", help="whose cases (default %(default)s)")
    parser.add_argument("--out", help="results JSON (default: <DUALREC_HOME>/results/evaluate-<time>.json)")
    parser.add_argument("--lstm-dir", help="trained LSTM folder (default: <DUALREC_HOME>/models/lstm)")
    parser.add_argument(
        "--baseline-minutes",
        type=positive_minutes,
        help="training budget of each RecBole baseline in minutes (default: its own, in dualrec/baselines/recbole_models.py)",
    )
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP_SAMPLES, help="bootstrap resamples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=BOOTSTRAP_SEED, help="bootstrap seed (default %(default)s)")
    add_freeform_options(parser)
    parser.set_defaults(handler=run)
    table = subparsers.add_parser("results", help="one markdown table of saved results files (default: results/*.json)")
    table.add_argument("files", nargs="*", help="results JSON files written by `dualrec evaluate`")
    table.add_argument("--protocol", help="only rows of this protocol (full, sampled-20, freeform)")
    table.add_argument("--no-intervals", action="store_true", help="values only, without the bootstrap intervals")
    table.set_defaults(handler=show_results)


def names(text: str, allowed: list[str] | tuple[str, ...], what: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in allowed]
    if unknown or not chosen:
        raise DualrecError(f"Unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}.")
    return chosen


def add_freeform_options(parser: argparse.ArgumentParser) -> None:
    """The options of `dualrec evaluate --protocol freeform` (DUALRec stage 2 on the test cases)."""
    group = parser.add_argument_group("freeform protocol (--protocol freeform: DUALRec stage 2's answers, matched)")
    group.add_argument(
        "--model",
        default=DEFAULT_PRESET,
        help="comma-separated models answering the same cases, one row each (a base and its adapter: "
        "smollm2-135m,smollm2-135m+adapters/NAME): " + MODEL_HELP,
    )
    group.add_argument("--limit", type=int, help="a seeded subsample of N cases, the same for every model (default: all)")
    group.add_argument("--limit-seed", type=int, default=0, help="seed of that subsample (default %(default)s)")
    group.add_argument("--template", choices=TEMPLATES, default=FREEFORM_TEMPLATE, help="prompt template (default %(default)s)")
    group.add_argument("--k", type=int, default=FREEFORM_K, help="how many movies the prompt asks for (default %(default)s)")
    group.add_argument("--max-new-tokens", type=int, help="answer length limit (default: the preset's)")
    group.add_argument(
        "--sample-seed", type=int, help="sample at the preset's temperature with this seed (default: greedy decoding)"
    )


def freeform_entry(args: argparse.Namespace, dataset: Dataset, out: str | Path, backend: LLMBackend | None = None) -> dict:
    """The `freeform` results entry of args.model (on `backend` when given); its answers are saved beside `out`."""
    options = FreeformOptions(
        args.model, args.template, args.k, args.limit, args.limit_seed, args.max_new_tokens, args.lstm_dir, args.sample_seed
    )
    out = Path(out)
    answers = out.with_name(f"{out.stem}-freeform-{re.sub(r'[^a-zA-Z0-9_.-]+', '_', args.model)}.jsonl")
    return evaluate_freeform(
        dataset,
        options,
        args.split,
        answers,
        args.bootstrap,
        args.seed,
        progress=lambda m: print(m, file=sys.stderr),
        backend=backend,
    )


def freeform_entries(args: argparse.Namespace, dataset: Dataset, out: str | Path) -> list[dict]:
    """One row per model of --model, on the same cases; a base and its adapter share one loaded model."""
    models = [model.strip() for model in args.model.split(",") if model.strip()]
    backends = shared_backends(models)
    try:
        return [
            freeform_entry(argparse.Namespace(**{**vars(args), "model": model}), dataset, out, backends.get(model))
            for model in models
        ]
    finally:
        for backend in backends.values():
            backend.close()


def show_results(args: argparse.Namespace) -> None:
    files = args.files or sorted(str(path) for path in Path("results").glob("*.json"))
    if not files:
        raise DualrecError(
            "No results files given and none in ./results: make one with `dualrec evaluate --out results/NAME.json`."
        )
    entries = [entry for file in files for entry in read_results(file)["results"] if args.protocol in (None, entry["protocol"])]
    print(markdown_table(entries, intervals=not args.no_intervals))


def run(args: argparse.Namespace) -> None:
    systems = names(args.systems, system_names(), "system")
    protocols = names(args.protocol, EVAL_PROTOCOLS + (FREEFORM,), "protocol")
    scored = [protocol for protocol in protocols if protocol != FREEFORM]
    dataset = load_dataset(args.data_dir, data_config(args), use_cache=not args.no_cache)
    loader = partial(load_system, dataset=dataset, lstm_dir=args.lstm_dir, budget_minutes=args.baseline_minutes)
    document = evaluate(
        systems if scored else [],
        dataset,
        loader,
        args.split,
        scored,
        args.bootstrap,
        args.seed,
        progress=lambda message: print(message, file=sys.stderr),
    )
    document["options"] = {
        "systems": systems,
        "protocols": protocols,
        "split": args.split,
        "data_dir": args.data_dir,
        "lstm_dir": args.lstm_dir,
        "baseline_minutes": args.baseline_minutes,
    }
    out = args.out or paths().home / "results" / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if FREEFORM in protocols:
        document["results"] += freeform_entries(args, dataset, out)
    path = write_results(document, out)
    print(markdown_table(document["results"]))
    print(
        f"\n{len(document['results'])} rows, {document['data']['cases']} {args.split} cases, {document['seconds']} s; 95% "
        f"bootstrap intervals over cases in brackets, ± spread over negative seeds. Written to {path}"
    )
