"""The `freeform` protocol (docs/design.md §2): DUALRec stage 2 answers the test cases in free text.

Each case's prompt holds its window (the LSTM's input; the target is never in it) and the LSTM's top-1 when a trained
LSTM exists. The answer is parsed and matched to MovieLens; its matched movies, in the answer's order, minus
duplicates, movies outside the catalogue and movies the user watched before the target, are the ranking that the
harness's shared code turns into HR and NDCG (evaluation.ranks_of_lists, evaluation.result_entry). Unmatched titles
are hallucinations, reported as a rate. No answer is ever shown to any step; every answer is saved for inspection.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, FREEFORM, FREEFORM_K, FREEFORM_TEMPLATE
from dualrec.data.dataset import PAD_ITEM, Dataset, Windows
from dualrec.data.features import genre_matrix
from dualrec.errors import DualrecError
from dualrec.evaluation.harness import LIST_LENGTH, ranks_of_lists, result_entry, watched_before
from dualrec.grounding.pipeline import Stage2Result, interpret, load_trained_lstm, prepare_prompt, run_stage2
from dualrec.llm import EmptyAnswerError, GenerationSettings, LLMBackend, LLMError, adapter_on, load_backend


@dataclass(frozen=True)
class FreeformOptions:
    model: str
    template: str = FREEFORM_TEMPLATE
    k: int = FREEFORM_K
    limit: int | None = None  # a seeded subsample of the cases (the same cases for every model)
    limit_seed: int = 0
    max_new_tokens: int | None = None  # None: the preset's
    lstm_dir: str | None = None
    sample_seed: int | None = None  # None: greedy decoding (repeatable); else the preset's sampling with this seed


def sample_cases(cases: Windows, limit: int | None, seed: int) -> Windows:
    """`limit` cases drawn with `seed` (kept in their order), or all cases."""
    if limit is None or limit >= len(cases):
        return cases
    if limit < 1:
        raise DualrecError(f"--limit must be at least 1, not {limit}.")
    return cases.take(np.sort(np.random.default_rng(seed).choice(len(cases), size=limit, replace=False)))


def lstm_picks(dataset: Dataset, cases: Windows, lstm_dir: str | None) -> tuple[list[int | None], str | None]:
    """The LSTM's top-1 movie per case (one batch), or Nones and the note that says there is no trained LSTM."""
    lstm, note = load_trained_lstm(dataset, lstm_dir)
    if lstm is None:
        return [None] * len(cases), note
    return [int(m) for m in dataset.catalogue[lstm.top1(cases.histories)]], None


def answer_cases(
    dataset: Dataset,
    backend: LLMBackend,
    cases: Windows,
    picks: list[int | None],
    options: FreeformOptions,
    settings: GenerationSettings,
    progress: Callable[[str], None] = lambda message: None,
) -> list[Stage2Result]:
    """Stage 2 on every case; an empty answer counts as an answer without titles."""
    results = []
    for number, (window, pick) in enumerate(zip(cases.histories, picks), start=1):
        history = dataset.catalogue[window[window != PAD_ITEM]].tolist()
        prompt = prepare_prompt(dataset, history, pick, options.template, options.k)
        started = time.perf_counter()
        try:
            results.append(run_stage2(dataset, backend, prompt, settings))
        except EmptyAnswerError:
            results.append(interpret(dataset, prompt, "", time.perf_counter() - started))
        progress(f"{backend.name}: {number}/{len(cases)} answers")
    return results


def ranked_items(dataset: Dataset, cases: Windows, results: list[Stage2Result]) -> list[list[int]]:
    """Per case, the catalogue items of its answer in order: no duplicates, nothing watched before the target."""
    watched = watched_before(dataset, cases)
    lists = []
    for row, result in enumerate(results):
        items = dataset.item_of(result.recommended)
        lists.append([int(item) for item in items if item >= 0 and not watched[row, item]])
    return lists


def answer_figures(dataset: Dataset, results: list[Stage2Result], lists: list[list[int]]) -> dict:
    """What the ranks do not show: hallucinations, answers with a valid title, titles outside the catalogue, time."""
    titles = sum(len(r.titles) for r in results)
    matched = [m.movie_id for r in results for m in r.titles if m.movie_id is not None]
    in_catalogue = int((dataset.item_of(matched) >= 0).sum()) if matched else 0
    return {
        "answers": len(results),
        "titles_per_answer": titles / max(len(results), 1),
        "hallucination_rate": (titles - len(matched)) / max(titles, 1),
        "answers_with_a_valid_title": sum(any(m.movie_id is not None for m in r.titles) for r in results) / max(len(results), 1),
        "outside_catalogue_rate": (len(matched) - in_catalogue) / max(len(matched), 1),
        "ranked_per_answer": sum(map(len, lists)) / max(len(lists), 1),
        "empty_answers": sum(not r.answer.strip() for r in results),
        "seconds_per_answer": sum(r.seconds for r in results) / max(len(results), 1),
    }


def padded(lists: list[list[int]], length: int = LIST_LENGTH) -> np.ndarray:
    """(n, length) items, cut or padded with -1 (the harness's empty slot)."""
    return np.array([(items + [-1] * length)[:length] for items in lists], dtype=np.int64).reshape(len(lists), length)


def save_answers(path: Path, cases: Windows, results: list[Stage2Result], ranks: np.ndarray) -> Path:
    """One JSON line per case: whose case it was, where the target ranked, and the whole Stage 2 result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for user, rank, result in zip(cases.users, ranks, results):
            record = {"user": int(user), "target_rank": None if np.isinf(rank) else int(rank)} | result.as_dict()
            out.write(json.dumps(record) + "\n")
    return path


def decoding(preset: GenerationSettings, options: FreeformOptions) -> GenerationSettings:
    """The preset's settings, decoded greedily unless a sampling seed is given, with the options' length limit."""
    length = {"max_new_tokens": options.max_new_tokens} if options.max_new_tokens else {}
    return dataclasses.replace(preset, greedy=options.sample_seed is None, seed=options.sample_seed, **length)


def shared_backends(models: list[str]) -> dict[str, LLMBackend]:
    """One loaded model for a base and its adapter both in `models` ('P' and 'P+A'): the adapter's backend and its
    base view (adapter switched off), so the two answer on the same weights with the same engine."""
    backends: dict[str, LLMBackend] = {}
    for base in models:
        adapter = adapter_on(base, models)
        if adapter and adapter not in backends:
            try:
                backends[adapter] = load_backend(adapter)
            except LLMError as error:
                raise DualrecError(f"{adapter}: {error}") from None
            backends[base] = backends[adapter].base()
    return backends


def generate_answers(
    dataset: Dataset,
    cases: Windows,
    picks: list[int | None],
    options: FreeformOptions,
    progress: Callable[[str], None],
    backend: LLMBackend | None = None,
) -> tuple[list[Stage2Result], GenerationSettings, float, str]:
    """Every case's Stage 2 result, the settings used, the model's load time and its engine (a given backend stays open)."""
    started = time.perf_counter()
    own = backend is None
    try:
        backend = backend or load_backend(options.model)
        load_seconds = time.perf_counter() - started
        settings = decoding(backend.settings, options)
        return (
            answer_cases(dataset, backend, cases, picks, options, settings, progress),
            settings,
            load_seconds,
            type(backend).__name__,
        )
    except LLMError as error:
        raise DualrecError(f"{options.model}: {error}") from None
    finally:
        if own and backend is not None:
            backend.close()


def evaluate_freeform(
    dataset: Dataset,
    options: FreeformOptions,
    split: str = "test",
    answers_path: str | Path | None = None,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    progress: Callable[[str], None] = lambda message: None,
    backend: LLMBackend | None = None,
) -> dict:
    """The results entry of one model under `freeform` (a backend may be passed; otherwise the preset is loaded)."""
    cases = sample_cases(dataset.cases[split], options.limit, options.limit_seed)
    picks, note = lstm_picks(dataset, cases, options.lstm_dir)
    if note:
        progress(f"note: {note}")
    results, settings, load_seconds, engine = generate_answers(dataset, cases, picks, options, progress, backend)
    lists = ranked_items(dataset, cases, results)
    ranks = ranks_of_lists(lists, cases.targets)
    if answers_path:
        save_answers(Path(answers_path), cases, results, ranks)
    figures = answer_figures(dataset, results, lists)
    answering = sum(r.seconds for r in results)
    return result_entry(
        f"DUALRec, {options.model}",
        FREEFORM,
        ranks,
        options=asdict(options)
        | {
            "lstm_pick": note is None,
            "settings": asdict(settings),
            "engine": engine,
            "answers": answers_path and str(answers_path),
        },
        seconds={
            "load": round(load_seconds, 2),
            "answers": round(answering, 2),
            "per_answer": round(figures["seconds_per_answer"], 3),
        },
        lists=padded(lists),
        genres=genre_matrix(dataset.catalogue_movies),
        extra=figures | {"cases_drawn": len(cases), "cases_total": len(dataset.cases[split]), "limit_seed": options.limit_seed},
        samples=samples,
        seed=seed,
    )
