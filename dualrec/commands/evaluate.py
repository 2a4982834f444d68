"""`dualrec evaluate`: score systems on the same cases under the same protocols; one results JSON per run."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dualrec.commands.common import MODEL_HELP, add_data_options, data_config, positive_minutes
from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, EVAL_PROTOCOLS, FREEFORM, FREEFORM_K, FREEFORM_TEMPLATE, paths
from dualrec.data.dataset import load_dataset
from dualrec.errors import DualrecError
from dualrec.evaluation.freeform import llm_answers
from dualrec.evaluation.harness import evaluate
from dualrec.evaluation.results import markdown_table, read_results, write_results
from dualrec.grounding.prompts import TEMPLATES
from dualrec.llm import DEFAULT_PRESET
from dualrec.ranking.registry import system_names

LLM_OPTIONS = ("template", "k", "limit", "limit_seed", "max_new_tokens", "lstm_dir", "sample_seed", "grounded")  # of LLMAnswers


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="HR and NDCG@1/5/10 of systems on the test cases, with 95%% bootstrap intervals"
    )
    add_data_options(parser)
    parser.add_argument(
        "--systems", default="lstm,mostpop", help=f"comma-separated, from: {', '.join(system_names())} (default %(default)s)"
    )
    full, sampled = EVAL_PROTOCOLS
    parser.add_argument(
        "--protocol",
        default=",".join(EVAL_PROTOCOLS),
        help=f"comma-separated: {full} (all movies, watched excluded), {sampled} (the target among itself and never-rated "
        f"movies, per negative seed), {FREEFORM} (the answers of --model) (default %(default)s)",
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
    table.add_argument("--protocol", help=f"only rows of this protocol ({', '.join((*EVAL_PROTOCOLS, FREEFORM))})")
    table.add_argument("--no-intervals", action="store_true", help="values only, without the bootstrap intervals")
    table.set_defaults(handler=show_results)


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
    group.add_argument(
        "--grounded", action="store_true", help="grounded answers: only real catalogue movies outside the window, K distinct ones"
    )


def comma_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def show_results(args: argparse.Namespace) -> None:
    files = args.files or sorted(str(path) for path in Path("results").glob("*.json"))
    if not files:
        raise DualrecError(
            "No results files given and none in ./results: make one with `dualrec evaluate --out results/NAME.json`."
        )
    entries = [entry for file in files for entry in read_results(file)["results"] if args.protocol in (None, entry["protocol"])]
    print(markdown_table(entries, intervals=not args.no_intervals))


def run(args: argparse.Namespace) -> None:
    protocols = comma_list(args.protocol)
    dataset = load_dataset(args.data_dir, data_config(args), use_cache=not args.no_cache)
    out = args.out or paths().home / "results" / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    systems = comma_list(args.systems)
    if FREEFORM in protocols:
        systems += llm_answers(comma_list(args.model), out, **{name: getattr(args, name) for name in LLM_OPTIONS})
    document = evaluate(
        systems,
        dataset,
        protocols,
        args.split,
        args.bootstrap,
        args.seed,
        args.lstm_dir,
        args.baseline_minutes,
        progress=lambda message: print(message, file=sys.stderr),
    )
    document["options"]["data_dir"] = args.data_dir
    path = write_results(document, out)
    skipped = ", ".join(f"{row['system']} ({row['protocol']})" for row in document["skipped"])
    print(markdown_table(document["results"]))
    print(
        f"\n{len(document['results'])} rows, {document['data']['cases']} {args.split} cases, {document['seconds']} s; 95% "
        f"bootstrap intervals over cases in brackets, ± spread over negative seeds. Written to {path}"
        + (f"\nSkipped, as the protocol does not apply: {skipped}" if skipped else "")
    )
