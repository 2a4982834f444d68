"""The `freeform` protocol (docs/design.md §2): `LLMAnswers`, a list system (ranking.base.ListRecommender) in which
one model answers each case in free text. The prompt holds the case's window (the target is never in it) and the
LSTM's top-1 when a trained LSTM exists. The answer's titles matched to MovieLens, in order, minus duplicates, movies
outside the catalogue and movies watched before the target, are the case's ranked list, which the harness turns into
HR and NDCG. Unmatched titles are hallucinations, reported as a rate. No answer is ever shown to any step; every
answer can be saved for inspection.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dualrec.config import FREEFORM_K, FREEFORM_TEMPLATE
from dualrec.data.dataset import PAD_ITEM, Dataset, Windows
from dualrec.errors import DualrecError
from dualrec.evaluation.harness import ranks_of_lists, watched_before
from dualrec.grounding.pipeline import Stage2Prompt, Stage2Result, interpret, load_trained_lstm, prepare_prompt, run_stage2
from dualrec.llm import EmptyAnswerError, GenerationSettings, LLMBackend, LLMError, adapter_on, load_backend
from dualrec.ranking.base import Progress, RankedLists


@dataclass(frozen=True)
class LLMAnswers:
    """One model's answers as a list system: `LLMAnswers("smollm2-135m", limit=20)`."""

    model: str  # a preset, a local folder or .gguf path, or PRESET+ADAPTER_FOLDER
    template: str = FREEFORM_TEMPLATE
    k: int = FREEFORM_K
    limit: int | None = None  # a seeded subsample of the cases (the same cases for every model)
    limit_seed: int = 0
    max_new_tokens: int | None = None  # None: the preset's
    lstm_dir: str | None = None
    sample_seed: int | None = None  # None: greedy decoding (repeatable); else the preset's sampling with this seed
    grounded: bool = False  # grounded answers: only real catalogue movies outside the window, K distinct ones
    answers: str | Path | None = None  # a JSON-lines file that keeps every answer
    backend: LLMBackend | None = field(default=None, repr=False)  # a loaded model (left open); else loaded and closed

    @property
    def name(self) -> str:
        return f"DUALRec, {self.model}"

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
        try:
            results = answer_prompts(dataset, backend, prompts, settings, progress, self.grounded)
        except LLMError as error:
            raise DualrecError(f"{self.model}: {error}") from None
        finally:
            if self.backend is None:
                backend.close()
        lists = ranked_items(dataset, cases, results)
        if self.answers:
            save_answers(Path(self.answers), cases, results, ranks_of_lists(lists, cases.targets))
        figures = answer_figures(dataset, results, lists)
        answering = {"answers": round(sum(r.seconds for r in results), 2), "per_answer": round(figures["seconds_per_answer"], 3)}
        run = {"lstm_pick": note is None, "settings": asdict(settings), "engine": type(backend).__name__}
        run |= {"grounded_answers": sum(bool(r.grounding and r.grounding.grounded) for r in results)} if self.grounded else {}
        return RankedLists(cases, lists, figures, run, {"load": round(load_seconds, 2)} | answering)


def sample_cases(cases: Windows, limit: int | None, seed: int) -> Windows:
    """`limit` cases drawn with `seed` (kept in their order), or all cases."""
    if limit is None or limit >= len(cases):
        return cases
    if limit < 1:
        raise DualrecError(f"--limit must be at least 1, not {limit}.")
    return cases.take(np.sort(np.random.default_rng(seed).choice(len(cases), size=limit, replace=False)))


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
    grounded: bool = False,
) -> list[Stage2Result]:
    """Stage 2 on every prompt; an empty answer counts as an answer without titles."""
    results = []
    for number, prompt in enumerate(prompts, start=1):
        started = time.perf_counter()
        try:
            results.append(run_stage2(dataset, backend, prompt, settings, grounded=grounded))
        except EmptyAnswerError:
            results.append(interpret(dataset, prompt, "", time.perf_counter() - started))
        progress(f"{backend.name}: {number}/{len(prompts)} answers")
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
    beside that results file. A base and its adapter both among them ('P' and 'P+A') share one loaded model: the
    adapter's backend and its base view (adapter switched off), so the two answer on the same weights and engine."""
    backends: dict[str, LLMBackend] = {}
    for base in models:
        if (adapter := adapter_on(base, models)) and adapter not in backends:
            backends[adapter] = loaded(adapter)
            backends[base] = backends[adapter].base()
    results = results and Path(results)
    return [
        LLMAnswers(model, **options, answers=results and answers_file(results, model), backend=backends.get(model))
        for model in models
    ]
