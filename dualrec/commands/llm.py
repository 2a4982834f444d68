"""`dualrec prompt`, `dualrec match` and `dualrec generate`: DUALRec stage 2 from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dualrec.commands.common import MODEL_HELP, add_data_options, add_history_options, check_option, print_json, typed_history
from dualrec.commands.data import load
from dualrec.config import AT_LEAST_1, PROMPT_K, PROMPT_TEMPLATE, SEED
from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError
from dualrec.grounding.matching import Match, match_all
from dualrec.grounding.parsing import parse_answer
from dualrec.grounding.pipeline import (
    Stage2Prompt,
    Stage2Result,
    load_trained_lstm,
    lstm_top1,
    prepare_prompt,
    run_stage2,
    user_history,
)
from dualrec.grounding.prompts import TEMPLATES
from dualrec.llm import DEFAULT_PRESET, LLMError, load_backend


def register(subparsers: argparse._SubParsersAction) -> None:
    prompt = subparsers.add_parser("prompt", help="print the Stage 2 prompt for a MovieLens user or a typed history")
    add_prompt_options(prompt)
    prompt.set_defaults(handler=run_prompt)

    match = subparsers.add_parser("match", help="read an LLM answer on stdin; print its titles matched to MovieLens as JSON")
    add_data_options(match)
    match.add_argument("--prompt-file", help="the prompt the answer replies to: lines that echo it are ignored")
    match.set_defaults(handler=run_match)

    generate = subparsers.add_parser("generate", help="DUALRec stage 2: LSTM pick, prompt, the LLM's answer, matched titles")
    add_prompt_options(generate)
    generate.add_argument("--model", default=DEFAULT_PRESET, help=MODEL_HELP)
    generate.add_argument("--stream", action="store_true", help="print the answer as it is generated (to stderr with --json)")
    generate.add_argument("--json", action="store_true", help="print the result as JSON")
    generate.add_argument("--max-new-tokens", type=int, help="answer length limit (default: the preset's)")
    generate.add_argument("--seed", type=int, help="sampling seed, for a repeatable answer")
    generate.add_argument("--greedy", action="store_true", help="always pick the most likely token")
    generate.add_argument(
        "--grounded",
        action="store_true",
        help="the model can only write K lines 'N. Title (Year) Genres: ...', each a different catalogue movie outside "
        "the history (constrained decoding; --max-new-tokens does not cut it). A server without guided decoding gives a "
        "free answer, marked as not grounded",
    )
    generate.set_defaults(handler=run_generate)


def add_prompt_options(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="MovieLens UserID (test and validation users: their target is held out)")
    add_history_options(who)
    parser.add_argument("--template", choices=TEMPLATES, default=PROMPT_TEMPLATE, help="prompt template (default %(default)s)")
    parser.add_argument("--k", type=int, default=PROMPT_K, help="how many movies to ask for (default %(default)s)")
    parser.add_argument("--lstm-dir", help="folder of a trained LSTM (default: where `dualrec train lstm` saves)")
    parser.add_argument("--no-lstm", action="store_true", help="leave the LSTM's pick out of the prompt")


def stage2_prompt(args: argparse.Namespace) -> tuple[Dataset, Stage2Prompt]:
    """The dataset and the prompt for --user, --history or --history-file, with the LSTM's pick when a trained LSTM exists."""
    check_option("--k", args.k, AT_LEAST_1)
    dataset = load(args)
    history = user_history(dataset, args.user) if args.user is not None else typed_history(dataset, args)
    if args.no_lstm:
        lstm, note = None, "--no-lstm: the prompt has no LSTM pick."
    else:
        lstm, note = load_trained_lstm(dataset, args.lstm_dir)
    prompt = prepare_prompt(dataset, history, lstm_top1(dataset, lstm, history), args.template, args.k, note)
    if prompt.note:
        print_to_stderr(f"note: {prompt.note}")
    return dataset, prompt


def run_prompt(args: argparse.Namespace) -> None:
    print(stage2_prompt(args)[1].text)


def read_prompt_file(path: str | None) -> str | None:
    """The text of --prompt-file (None when not given); a missing or unreadable file is one clear message."""
    if path is None:
        return None
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DualrecError(f"Cannot read --prompt-file {path}: {error.strerror or error}.") from None


def run_match(args: argparse.Namespace) -> None:
    prompt = read_prompt_file(args.prompt_file)
    dataset = load(args)
    parsed = parse_answer(sys.stdin.read(), prompt)
    print_json({"titles": [match.as_dict() for match in match_all(dataset, [(p.text, p.title, p.year) for p in parsed])]})


def run_generate(args: argparse.Namespace) -> None:
    check_option("--max-new-tokens", args.max_new_tokens, AT_LEAST_1)
    check_option("--seed", args.seed, SEED)
    dataset, prompt = stage2_prompt(args)
    backend = load_backend(args.model)
    overrides = {"max_new_tokens": args.max_new_tokens, "seed": args.seed, "greedy": args.greedy or None}
    settings = dataclasses.replace(backend.settings, **{k: v for k, v in overrides.items() if v is not None})
    out = sys.stderr if args.json else sys.stdout
    if not args.json:
        print(f"{prompt.text}\n\n--- {backend.name} ---", flush=True)
    on_chunk = (lambda chunk: print(chunk, end="", file=out, flush=True)) if args.stream else None
    try:
        result = run_stage2(dataset, backend, prompt, settings, on_chunk, grounded=args.grounded)
    except LLMError as error:
        raise DualrecError(f"{backend.name}: {error}") from None
    finally:
        backend.close()
    if args.stream:
        print(file=out)
    if args.json:
        if result.grounding is not None:
            print_to_stderr(f"note: {result.grounding.summary}")
        print_json({"model": args.model} | result.as_dict())
        return
    if not args.stream:
        print(result.answer)
    if result.grounding is not None:
        print(f"\n--- {result.grounding.summary} ---")
    print_recommendations(dataset, result)


def print_recommendations(dataset: Dataset, result: Stage2Result) -> None:
    """The matched list: each recommended title, the MovieLens movie it names (or that it names none)."""
    print("\n--- recommendations ---")
    if result.prompt.lstm_pick is not None:
        print(f" LSTM: {dataset.movies.loc[result.prompt.lstm_pick, 'raw_title']} [movie {result.prompt.lstm_pick}]")
    for rank, match in enumerate(result.titles, start=1):
        print(f"{rank:>3}. {describe(match, result.prompt.history)}")
    if not result.titles:
        print("  (no titles found in the answer)")


def describe(match: Match, history: tuple[int, ...]) -> str:
    written = match.title + (f" ({match.year})" if match.year else "")
    if match.movie_id is None:
        return f"{written} -> not in MovieLens"
    watched = ", already watched" if match.movie_id in history else ""
    return f"{written} -> {match.movie} [movie {match.movie_id}, score {match.score:g}{watched}]"


def print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)
