"""`dualrec evaluate`: score systems on the same cases under the same protocols; one results JSON per run."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

from dualrec.commands.common import (
    MODEL_HELP,
    add_data_options,
    add_field_options,
    check_option,
    data_config,
    options_from_args,
    positive_minutes,
    run_settings,
)
from dualrec.commands.poster import add_poster_options, poster_options, run_poster
from dualrec.config import AT_LEAST_1, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, EVAL_PROTOCOLS, FREEFORM, POSTER_PROTOCOL, SEED, paths
from dualrec.data.dataset import Dataset, load_dataset
from dualrec.data.text_features import text_encoder
from dualrec.errors import ConfigError, DualrecError
from dualrec.evaluation.freeform import LLMAnswers, each_model, sample_cases, shared_models
from dualrec.evaluation.harness import check_names, checked_run, evaluate
from dualrec.evaluation.results import poster_comparison_table, read_results, results_tables, write_results
from dualrec.llm import DEFAULT_PRESET
from dualrec.ranking.baselines.unisrec import NAME as UNISREC
from dualrec.ranking.baselines.unisrec import UniSRecOptions
from dualrec.ranking.hybrid import HybridOptions, HybridRecommender
from dualrec.ranking.nir import NIROptions, NIRRecommender
from dualrec.ranking.registry import HYBRID, NIR, fitted, system_names

# the fields of LLMAnswers that are options of --protocol freeform
FREEFORM_OPTIONS = ("limit", "limit_seed", "template", "k", "max_new_tokens", "sample_seed", "concurrency", "grounded")
HYBRID_OPTIONS = ("llm", "candidates", "scorer", "engine", "weights")  # the HybridOptions fields that are options
NIR_OPTIONS = ("llm", "filtering")  # the fields of NIROptions read from the command line (--llm is the hybrid's)
UNISREC_OPTIONS = ("text_encoder", "checkpoint")  # the fields of UniSRecOptions that are options of --systems unisrec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="HR and NDCG@1/5/10 of systems on the test cases, with 95%% bootstrap intervals"
    )
    add_data_options(parser, negatives=True)
    parser.add_argument(
        "--systems", default="lstm,mostpop", help=f"comma-separated, from: {', '.join(system_names())} (default %(default)s)"
    )
    full, sampled = EVAL_PROTOCOLS
    parser.add_argument(
        "--protocol",
        default=",".join(EVAL_PROTOCOLS),
        help=f"comma-separated: {full} (all movies, watched excluded), {sampled} (the target among itself and never-rated "
        f"movies, per negative seed), {FREEFORM} (the answers of --model), or alone {POSTER_PROTOCOL} (the poster's own: "
        f"PO4ISR's ML-1M sessions, each target among 20 candidates) (default %(default)s)",
    )
    parser.add_argument("--split", choices=("test", "val"), default="test", help="whose cases (default %(default)s)")
    parser.add_argument("--out", help="results JSON (default: <DUALREC_HOME>/results/evaluate-<time>.json)")
    parser.add_argument("--lstm-dir", help="trained LSTM folder (default: <DUALREC_HOME>/models/lstm)")
    parser.add_argument(
        "--baseline-minutes",
        type=positive_minutes,
        help="training budget of each RecBole baseline in minutes (default: its own, in "
        "dualrec/ranking/baselines/recbole_models.py)",
    )
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP_SAMPLES, help="bootstrap resamples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=BOOTSTRAP_SEED, help="bootstrap seed (default %(default)s)")
    add_freeform_options(parser)
    add_hybrid_options(parser)
    add_poster_options(parser)
    add_nir_options(parser)
    group = parser.add_argument_group("UniSRec (--systems unisrec: item text and a SASRec transformer)")
    add_field_options(group, UniSRecOptions, UNISREC_OPTIONS)
    parser.set_defaults(handler=run)
    table = subparsers.add_parser("results", help="one markdown table of saved results files (default: results/*.json)")
    table.add_argument("files", nargs="*", help="results JSON files written by `dualrec evaluate`")
    table.add_argument(
        "--protocol", help=f"only rows of this protocol ({', '.join((*EVAL_PROTOCOLS, FREEFORM, POSTER_PROTOCOL))})"
    )
    table.add_argument("--no-intervals", action="store_true", help="values only, without the bootstrap intervals")
    table.set_defaults(handler=show_results)


def add_freeform_options(parser: argparse.ArgumentParser) -> None:
    """The options of `dualrec evaluate --protocol freeform` (DUALRec stage 2 on the test cases)."""
    group = parser.add_argument_group("freeform protocol (--protocol freeform: DUALRec stage 2's answers, matched)")
    group.add_argument(
        "--model",
        dest="models",
        default=DEFAULT_PRESET,
        help="comma-separated models answering the same cases, one row each (a base and its adapter: "
        "smollm2-135m,smollm2-135m+adapters/NAME): " + MODEL_HELP,
    )
    add_field_options(group, LLMAnswers, FREEFORM_OPTIONS)


def add_hybrid_options(parser: argparse.ArgumentParser) -> None:
    """The options of the hybrid (--systems ...,hybrid) and of the case subsample its CPU runs take."""
    group = parser.add_argument_group(
        "hybrid (--systems lstm,hybrid: the LSTM's top N re-ranked by an LLM, w chosen on the validation cases)"
    )
    add_field_options(group, HybridOptions, HYBRID_OPTIONS, types={"weights": numbers})
    group.add_argument(
        "--hybrid-limit",
        type=int,
        help="a seeded subsample of N validation and N test cases (--protocol poster: of its 1,000 sampled sessions), the same "
        "for every system (for CPU runs; default: all)",
    )
    group.add_argument(
        "--hybrid-valid-limit",
        type=int,
        help="a seeded subsample of N validation cases only, for choosing w (default: --hybrid-limit's, else all)",
    )
    group.add_argument("--hybrid-limit-seed", type=int, default=0, help="seed of that subsample (default %(default)s)")


def add_nir_options(parser: argparse.ArgumentParser) -> None:
    """The options of NIR (--systems nir: zero-shot prompting of --llm over a candidate set, in three steps)."""
    group = parser.add_argument_group(
        "NIR (--systems nir: --llm prompted in three steps to rank a candidate set; any LLM, an API one too)"
    )
    add_field_options(group, NIROptions, ("filtering",))


def nir_options(args: argparse.Namespace) -> NIROptions:
    """NIR's options from the command line (its --llm is the hybrid's option); bad ones raise ConfigError."""
    return options_from_args(NIROptions(), argparse.Namespace(**{name: getattr(args, name) for name in NIR_OPTIONS}))


def hybrid_options(args: argparse.Namespace, systems: list[str]) -> HybridOptions:
    """The hybrid's options, checked even when the hybrid is not chosen; its --llm only when it is, or when NIR (which
    takes any LLM, an API one too) does not read it."""
    if NIR in systems and HYBRID not in systems:
        args = argparse.Namespace(**vars(args) | {"llm": None})
    return options_from_args(HybridOptions(), args)


def numbers(text: str) -> tuple[float, ...]:
    """An argparse type: numbers separated by commas."""
    try:
        return tuple(float(number) for number in text.split(",") if number.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def case_limits(args: argparse.Namespace) -> dict[str, int | None]:
    """How many cases of each split --hybrid-limit and --hybrid-valid-limit draw (None: all)."""
    valid = args.hybrid_valid_limit if args.hybrid_valid_limit is not None else args.hybrid_limit
    return {"train": args.hybrid_limit, "val": valid, "test": args.hybrid_limit}


def case_sample(dataset: Dataset, limits: dict[str, int | None], seed: int) -> Dataset:
    """The data with each split's cases drawn with `seed` down to its limit (every system scores the same ones)."""
    drawn = {split: sample_cases(cases, limits.get(split), seed) for split, cases in dataset.cases.items()}
    return dataclasses.replace(dataset, cases=drawn)


def ready_hybrid(systems: list[str], protocols: list[str], options: HybridOptions, dataset: Dataset, args) -> list:
    """The systems, 'hybrid' replaced by the hybrid of the command's options made ready (the LSTM and LLM loaded, w
    chosen on the validation cases) when a protocol that scores it is chosen."""
    if HYBRID not in systems or not set(protocols) & set(dataset.config.scored_protocols):
        return systems
    hybrid = HybridRecommender(options, args.lstm_dir, progress=lambda message: print(message, file=sys.stderr))
    hybrid.fit(dataset)
    return [hybrid if name == HYBRID else name for name in systems]


def ready_unisrec(systems: list[str], options: UniSRecOptions, dataset: Dataset, args) -> list:
    """The systems, 'unisrec' made with the command's UniSRec options and fitted (within --baseline-minutes) when they
    are not its defaults; with the defaults the harness makes it as any registered system."""
    if UNISREC not in systems or options == UniSRecOptions():
        return systems
    from dualrec.ranking.baselines.unisrec_model import unisrec_recommender  # RecBole and torch load only when needed

    system = fitted(unisrec_recommender(unisrec=options), dataset, args.lstm_dir, args.baseline_minutes)
    return [system if name == UNISREC else name for name in systems]


def ready_nir(systems: list, protocols: list[str], options: NIROptions, dataset: Dataset, out: Path) -> list:
    """The systems, 'nir' replaced by NIR of the command's options made ready (the training users read, the LLM loaded)
    when a protocol that ranks it is chosen; its prompts and answers are kept beside the results file."""
    if NIR not in systems or not set(protocols) & set(dataset.config.scored_protocols):
        return systems
    nir = NIRRecommender(answers_beside(options, out), progress=lambda message: print(message, file=sys.stderr))
    nir.fit(dataset)
    return [nir if name == NIR else name for name in systems]


def answers_beside(options: NIROptions, out: Path) -> NIROptions:
    """NIR's options with its prompts and answers kept beside the results file (they hold histories: never commit them)."""
    return dataclasses.replace(options, answers=str(out.with_name(f"{out.stem}-nir-answers.jsonl")))


def name_the_sample(document: dict, dataset: Dataset, args: argparse.Namespace) -> None:
    """With --hybrid-limit, every row's name and the run's options say which cases were drawn."""
    limits = case_limits(args)
    if all(limit is None for limit in limits.values()):
        return
    counts = {f"{split}_cases": len(cases) for split, cases in dataset.cases.items()}
    sample = {"limit": args.hybrid_limit, "valid_limit": limits["val"], "seed": args.hybrid_limit_seed}
    document["options"]["case_sample"] = sample | counts
    if limits[args.split] is None:
        return
    for entry in document["results"]:
        entry["system"] += f" ({len(dataset.cases[args.split])} {args.split} cases, seed {args.hybrid_limit_seed})"


def comma_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def check_results_file(path: Path) -> None:
    """Refuse an --out that is a folder or lies inside a file, before any work that would be lost at the end."""
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder: name a results file, such as {path / 'evaluate.json'}.")
    if blocking := next((folder for folder in path.parents if folder.exists() and not folder.is_dir()), None):
        raise ConfigError(f"--out {path} cannot be written: {blocking} is a file.")


def freeform_systems(args: argparse.Namespace, protocols: list[str], out: Path) -> list[LLMAnswers]:
    """One list system per --model, options and models checked (no model loaded); none unless freeform is chosen."""
    options = options_from_args(LLMAnswers(), args)  # bad freeform options stop here, even when freeform is not chosen
    if FREEFORM not in protocols:
        return []
    models = comma_list(args.models)
    if not models:
        raise ConfigError(f"Invalid freeform options: --model must name one or more models, not {args.models!r}.")
    return each_model(options, models, out)


def show_results(args: argparse.Namespace) -> None:
    if args.protocol is not None and not re.fullmatch(r"sampled-\d+", args.protocol):  # sampled-N of any data
        check_names([args.protocol], (*EVAL_PROTOCOLS, FREEFORM, POSTER_PROTOCOL), "protocol")
    files = args.files or sorted(str(path) for path in Path("results").glob("*.json"))
    if not files:
        raise DualrecError(
            "No results files given and none in ./results: make one with `dualrec evaluate --out results/NAME.json`."
        )
    entries = [entry for file in files for entry in read_results(file)["results"] if args.protocol in (None, entry["protocol"])]
    print(results_tables(entries, intervals=not args.no_intervals))
    if args.protocol == POSTER_PROTOCOL and (comparison := poster_comparison_table(entries)):
        print(f"\n{comparison}")


def run(args: argparse.Namespace) -> None:
    # Every option is checked before the data loads: a mistake costs no time and loses no work.
    config, systems, protocols = data_config(args), comma_list(args.systems), comma_list(args.protocol)
    check_option("--bootstrap", args.bootstrap, AT_LEAST_1)
    check_option("--seed", args.seed, SEED)
    out = Path(args.out or paths().home / "results" / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}.json")
    check_results_file(out)
    hybrid = hybrid_options(args, systems)  # bad hybrid options stop here, even when the hybrid is not chosen
    nir = nir_options(args)
    check_option("--hybrid-limit", args.hybrid_limit, AT_LEAST_1)
    check_option("--hybrid-valid-limit", args.hybrid_valid_limit, AT_LEAST_1)
    check_option("--hybrid-limit-seed", args.hybrid_limit_seed, SEED)
    if poster := poster_options(args, protocols):  # the poster protocol: its own sessions and systems' training
        llm_options = {HYBRID: hybrid, NIR: answers_beside(nir, out)}
        return run_poster(args, systems, poster, out, llm_options, case_limits(args))
    answering = freeform_systems(args, protocols, out)
    unisrec = options_from_args(UniSRecOptions(), args)
    if UNISREC in systems or unisrec != UniSRecOptions():
        text_encoder(unisrec.text_encoder)  # a missing encoder package or folder stops here
    protocols = checked_run([*systems, *answering], protocols, config)
    dataset = case_sample(
        load_dataset(args.data_dir, config, use_cache=not args.no_cache), case_limits(args), args.hybrid_limit_seed
    )
    systems = ready_nir(ready_hybrid(systems, protocols, hybrid, dataset, args), protocols, nir, dataset, out)
    systems = ready_unisrec(systems, unisrec, dataset, args)
    document = evaluate([*systems, *shared_models(answering)], dataset, protocols, **run_settings(args))
    document["options"]["data_dir"] = args.data_dir
    name_the_sample(document, dataset, args)
    path = write_results(document, out)
    skipped = ", ".join(f"{row['system']} ({row['protocol']})" for row in document["skipped"])
    print(results_tables(document["results"]))
    print(
        f"\n{len(document['results'])} rows, {document['data']['cases']} {args.split} cases, {document['seconds']} s; 95% "
        f"bootstrap intervals over cases in brackets, ± spread over negative seeds. Written to {path}"
        + (f"\nSkipped, as the protocol does not apply: {skipped}" if skipped else "")
    )
