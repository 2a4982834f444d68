"""The `freeform` protocol (docs/design.md §2): `LLMAnswers`, a list system (ranking.base.ListRecommender) in which
one model answers each case in free text. The prompt holds the case's window (the target is never in it) and the
LSTM's top-1 when a trained LSTM exists. The answer's titles matched to MovieLens, in order, minus duplicates, movies
outside the catalogue and movies watched before the target, are the case's ranked list, which the harness turns into
HR and NDCG. Unmatched titles are hallucinations, reported as a rate. No answer is ever shown to any step; every
answer can be saved for inspection.

An OpenAI-compatible server (vLLM, a hosted API) is sent `concurrency` requests at once, each with the client's own
retries, and the answers are kept in case order. A local engine (llama.cpp, transformers) answers one request at a time
per model (its backend lock), so for it a concurrency above 1 is ignored, and a note in the results says so.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dualrec.config import AT_LEAST_1, DEFAULT_PRESET, FREEFORM_K, FREEFORM_TEMPLATE, SEED, check_options, option
from dualrec.data.dataset import PAD_ITEM, Dataset, Windows
from dualrec.errors import DualrecError
from dualrec.evaluation.harness import ranks_of_lists, watched_before
from dualrec.grounding.grounded import catalogue_choices
from dualrec.grounding.matching import title_index
from dualrec.grounding.pipeline import Stage2Prompt, Stage2Result, interpret, load_trained_lstm, prepare_prompt, run_stage2
from dualrec.grounding.prompts import TEMPLATES
from dualrec.llm import (
    ADAPTER_SEPARATOR,
    EmptyAnswerError,
    GenerationSettings,
    LLMBackend,
    LLMError,
    adapter_on,
    load_backend,
    resolve_preset,
)
from dualrec.llm.adapters import adapter_spec
from dualrec.llm.base import looks_like_path
from dualrec.ranking.base import Progress, RankedLists


@dataclass(frozen=True)
class LLMAnswers:
    """One model's answers as a list system: `LLMAnswers("smollm2-135m", limit=20)`. Options out of range, or a model
    that names nothing (checked without loading it), raise ConfigError here, before any work."""

    model: str = DEFAULT_PRESET  # a preset, a local folder or .gguf path, or PRESET+ADAPTER_FOLDER
    template: str = option(FREEFORM_TEMPLATE, "prompt template", choices=TEMPLATES)
    k: int = option(FREEFORM_K, "how many movies the prompt asks for", AT_LEAST_1)
    limit: int | None = option(None, "a seeded subsample of N cases, the same for every model (default: all)", AT_LEAST_1)
    limit_seed: int = option(0, "seed of that subsample", SEED)
    max_new_tokens: int | None = option(None, "answer length limit (default: the preset's)", AT_LEAST_1)
    lstm_dir: str | None = None
    sample_seed: int | None = option(None, "sample at the preset's temperature with this seed (default: greedy decoding)", SEED)
    grounded: bool = option(False, "grounded answers: only real catalogue movies outside the window, K distinct ones")
    concurrency: int = option(
        1, "requests at once to an OpenAI-compatible server (vLLM, an API); a local engine answers one at a time", AT_LEAST_1
    )
    answers: str | Path | None = None  # a JSON-lines file that keeps every answer
    backend: LLMBackend | None = field(default=None, repr=False)  # a loaded model (left open); else loaded and closed

    def __post_init__(self) -> None:
        check_options(self, "freeform", None if self.backend else model_problem(self.model))

    @property
    def name(self) -> str:
        return f"DUALRec, {self.model}" + (", grounded" if self.grounded else "")

    @property
    def options(self) -> dict:
        chosen = {item.name: getattr(self, item.name) for item in dataclasses.fields(self) if item.name != "backend"}
        return chosen | {"answers": self.answers and str(self.answers)}

    def rank_cases(self, dataset: Dataset, cases: Windows, progress: Progress = lambda m: None) -> RankedLists:
        """Stage 2 on (a subsample of) the cases: each answer's catalogue items in order, and the answers' figures (the
        system's own backend stays open; one it loads is closed)."""
        cases = sample_cases(cases, self.limit, self.limit_seed)
        prompts, note = case_prompts(dataset, cases, self)
        if note:
            progress(f"note: {note}")
        started = time.perf_counter()
        backend = self.backend or loaded(self.model)
        load_seconds = time.perf_counter() - started
        length = {"max_new_tokens": self.max_new_tokens} if self.max_new_tokens else {}
        settings = dataclasses.replace(backend.settings, greedy=self.sample_seed is None, seed=self.sample_seed, **length)
        at_once, concurrency_note = requests_at_once(backend, self.concurrency)
        if concurrency_note:
            progress(f"note: {concurrency_note}")
        started = time.perf_counter()
        try:
            results = answer_prompts(dataset, backend, prompts, settings, progress, at_once, self.grounded)
        except LLMError as error:
            raise DualrecError(f"{self.model}: {error}") from None
        finally:
            if self.backend is None:
                backend.close()
        answer_seconds = time.perf_counter() - started
        lists = ranked_items(dataset, cases, results)
        if self.answers:
            save_answers(Path(self.answers), cases, results, ranks_of_lists(lists, cases.targets))
        figures = answer_figures(dataset, results, lists)
        answering = {"answers": round(answer_seconds, 2), "per_answer": round(figures["seconds_per_answer"], 3)}
        run = {"lstm_pick": note is None, "settings": asdict(settings), "engine": type(backend).__name__, "concurrency": at_once}
        run |= {"concurrency_note": concurrency_note} if concurrency_note else {}
        run |= {"grounded_answers": sum(bool(r.grounding and r.grounding.grounded) for r in results)} if self.grounded else {}
        return RankedLists(cases, lists, figures, run, {"load": round(load_seconds, 2)} | answering)


def model_problem(spec: str) -> str | None:
    """What keeps a model spec from naming a model, found without loading it: an unknown preset, a local model that is
    not there, an adapter folder that holds no adapter (or one of another base); None when nothing does."""
    base = spec.partition(ADAPTER_SEPARATOR)[0]
    try:
        if looks_like_path(base) and not Path(base).expanduser().exists():
            return f"no model at {base} (a local model is a folder or a .gguf file)"
        resolve_preset(base)
        if base != spec:
            adapter_spec(spec)
    except LLMError as error:
        return str(error)
    return None


def requests_at_once(backend: LLMBackend, concurrency: int) -> tuple[int, str | None]:
    """How many requests the backend is sent at once: `concurrency` for an OpenAI-compatible server; one for a local
    engine, which answers one at a time (its lock), with a note that says the concurrency asked was ignored."""
    if concurrency == 1:
        return 1, None
    from dualrec.llm.openai_backend import OpenAIBackend  # openai loads only when requests may overlap

    if isinstance(backend, OpenAIBackend):
        return concurrency, None
    return 1, f"concurrency {concurrency} ignored: {backend.name} runs locally ({type(backend).__name__}), one answer at a time"


def sample_cases(cases: Windows, limit: int | None, seed: int) -> Windows:
    """`limit` cases drawn with `seed` (kept in their order), or all cases."""
    return cases if limit is None or limit >= len(cases) else cases.take(sampled_rows(len(cases), limit, seed))


def sampled_rows(count: int, limit: int | None, seed: int) -> np.ndarray:
    """The positions of `limit` of `count` cases drawn with `seed`, ascending (all of them without a limit)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def case_prompts(dataset: Dataset, cases: Windows, system: LLMAnswers) -> tuple[list[Stage2Prompt], str | None]:
    """Each case's prompt (its window and the LSTM's top-1, one batch), and the note that says when no LSTM is trained."""
    lstm, note = load_trained_lstm(dataset, system.lstm_dir)
    picks = [None] * len(cases) if lstm is None else dataset.catalogue[lstm.top1(cases.histories)].tolist()
    histories = [dataset.catalogue[window[window != PAD_ITEM]].tolist() for window in cases.histories]
    return [prepare_prompt(dataset, history, pick, system.template, system.k) for history, pick in zip(histories, picks)], note


def answer_prompts(
    dataset: Dataset,
    backend: LLMBackend,
    prompts: list[Stage2Prompt],
    settings: GenerationSettings,
    progress: Progress,
    at_once: int = 1,
    grounded: bool = False,
) -> list[Stage2Result]:
    """Stage 2 on every prompt, `at_once` of them in flight, the results in the prompts' order; an empty answer counts
    as an answer without titles. A failure (or Ctrl-C) stops the answers under way and sends no more."""
    stop = threading.Event()

    def answer(prompt: Stage2Prompt) -> Stage2Result:
        started = time.perf_counter()
        try:
            return run_stage2(dataset, backend, prompt, settings, stop=stop, grounded=grounded)
        except EmptyAnswerError:
            return interpret(dataset, prompt, "", time.perf_counter() - started)

    title_index(dataset)  # what every answer shares, built here once rather than by each thread at its first answer
    if grounded:
        catalogue_choices(dataset)
    pool = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="freeform")
    rows = {pool.submit(answer, prompt): row for row, prompt in enumerate(prompts)}
    answered = {}
    try:
        for number, done in enumerate(as_completed(rows), start=1):
            answered[rows[done]] = done.result()
            progress(f"{backend.name}: {number}/{len(prompts)} answers")
    finally:
        stop.set()
        pool.shutdown(cancel_futures=True)
    return [answered[row] for row in range(len(prompts))]


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


def save_answers(path: Path, cases: Windows, results: list[Stage2Result], ranks: np.ndarray) -> None:
    """One JSON line per case: whose case it was, where the target ranked, and the whole Stage 2 result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for user, rank, result in zip(cases.users, ranks, results):
            record = {"user": int(user), "target_rank": None if np.isinf(rank) else int(rank)} | result.as_dict()
            out.write(json.dumps(record) + "\n")


def loaded(model: str) -> LLMBackend:
    """A model spec's backend, or a DualrecError that names the model."""
    try:
        return load_backend(model)
    except LLMError as error:
        raise DualrecError(f"{model}: {error}") from None


def answers_file(results: Path, model: str) -> Path:
    """Where a model's answers are kept beside a results file."""
    return results.with_name(f"{results.stem}-freeform-{re.sub(r'[^a-zA-Z0-9_.-]+', '_', model)}.jsonl")


def llm_answers(models: Sequence[str], results: str | Path | None = None, **options) -> list[LLMAnswers]:
    """One list system per model, with the same options (so the same cases); with `results`, each keeps its answers
    beside that results file. A base and its adapter among them share one loaded model (`shared_models`)."""
    return shared_models(each_model(LLMAnswers(**options), models, results))


def each_model(system: LLMAnswers, models: Sequence[str], results: str | Path | None = None) -> list[LLMAnswers]:
    """The system for each model, every model checked and none loaded; with `results`, each keeps its answers beside
    that results file."""
    results = results and Path(results)
    return [dataclasses.replace(system, model=model, answers=results and answers_file(results, model)) for model in models]


def shared_models(systems: Sequence[LLMAnswers]) -> list[LLMAnswers]:
    """The systems, a base and its adapter among them ('P' and 'P+A') given one loaded model: the adapter's backend
    and its base view (adapter switched off), so the two answer on the same weights and engine."""
    models = [system.model for system in systems]
    backends: dict[str, LLMBackend] = {}
    for base in models:
        if (adapter := adapter_on(base, models)) and adapter not in backends:
            backends[adapter] = loaded(adapter)
            backends[base] = backends[adapter].base()
    return [dataclasses.replace(system, backend=backends.get(system.model, system.backend)) for system in systems]
