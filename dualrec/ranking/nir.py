"""NIR: zero-shot next-item recommendation by prompting an LLM in three chained steps (Wang & Lim 2023, "Zero-Shot
Next-Item Recommendation using Large Pretrained Language Models", arXiv:2304.03153), following the authors' code
AGI-Edgerunners/LLM-Next-Item-Rec (three_stage_0_NIR.py: sort_uf_items, soft_if_items, temp_1..temp_3).

    nir = NIRRecommender(NIROptions(llm="smollm2-135m"))
    nir.fit(dataset)                  # the training users' movies (co-watch counts for item filtering); loads the LLM
    evaluate([nir], dataset)          # full: its own candidates; sampled-20: the protocol's 20, re-ranked

- Candidates (the `full` protocol): user filtering, the reference's default: the `neighbours` (12) training users whose
  binary movie vectors have the largest dot product with the case user's (every catalogue movie rated before the
  target) vote, each with its similarity, for the movies they rated; the `candidates` (19)
  unwatched movies with the most votes (ties: the more rated) form the set. Item filtering, the option: each watched
  movie's `neighbours` most co-watched movies (counts over the training users) add their counts. Test and validation
  users never serve as neighbours; the case's target is never in a prompt unless it is a candidate.
- Under a sampled protocol the candidates are the protocol's (the target and its never-rated negatives: PO4ISR's NIR),
  re-ranked by the same three prompts, on `negative_seeds` of the data's negative draws (each is a whole run).
- The prompts (dualrec.grounding.nir_prompts) show the candidates shuffled (seeded per user, as the reference shuffles
  them) and the case's last `history` (8) movies, oldest first: step 1 asks for the user's preferences, step 2 for the
  most representative watched movies, step 3 for 10 movies from the candidate set; each answer goes into the next
  prompt. Steps 1 and 2 answer freely (greedy, as the reference's temperature 0); step 3 is grounded to the candidate
  set where the engine can ground (dualrec.grounding.grounded), else answered freely and then parsed and matched like
  any answer. The answer's movies that are candidates, in order, are the case's ranked list.
- The ceiling, how often the target is among the candidates, and the seconds per case go into the results row.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from dualrec.config import AT_LEAST_1, DEFAULT_PRESET, SEED, check_options, option
from dualrec.data.dataset import PAD_ITEM, Dataset, Windows
from dualrec.errors import DualrecError
from dualrec.evaluation.freeform import answer_figures, model_problem
from dualrec.evaluation.harness import ranks_of_lists, watched_before
from dualrec.grounding.grounded import Grounding, answer_constraint, grounded_answer
from dualrec.grounding.matching import title_index
from dualrec.grounding.nir_prompts import candidate_lines, nir_prompt
from dualrec.grounding.pipeline import Stage2Prompt, Stage2Result, interpret
from dualrec.llm import EmptyAnswerError, GenerationSettings, LLMBackend, LLMError, load_backend
from dualrec.ranking.base import Progress, RankedLists

FILTERINGS = ("user", "item")
LIST_LENGTH = 10  # step 3 asks for 10 movies
TEMPLATE = "nir"  # how the third prompt is named in the answers' records


@dataclass(frozen=True)
class NIROptions:
    """How NIR is run; options out of range, or an LLM that names nothing, raise ConfigError here, before any work."""

    llm: str = option(
        DEFAULT_PRESET, "NIR's LLM: a preset (an API one too), a local model or PRESET+ADAPTER_FOLDER", flag="--llm"
    )
    filtering: str = option(
        "user",
        "NIR's candidates under full: user (the most similar training users vote) or item (the movies most co-watched "
        "with the user's)",
        choices=FILTERINGS,
        flag="--nir-filtering",
    )
    neighbours: int = option(12, bounds=AT_LEAST_1)  # similar users (user filtering), or co-watched movies per movie (item)
    candidates: int = option(19, bounds=AT_LEAST_1)  # the candidate set's size under full
    history: int = option(8, bounds=AT_LEAST_1)  # the watched movies the prompts show (the last ones)
    max_new_tokens: int = option(64, bounds=AT_LEAST_1)  # each free answer's limit (the reference: 512; CPU time)
    grounded: bool = option(True)  # step 3 grounded to the candidates where the engine can
    shuffle_seed: int = option(2023, bounds=SEED)  # the candidates' order in the prompts (the reference's seed)
    negative_seeds: int | None = option(1, bounds=AT_LEAST_1)  # negative draws of a sampled protocol (None: all)
    answers: str | None = None  # a JSON-lines file that keeps every case's prompts and answers (never commit it)

    def __post_init__(self) -> None:
        problem = model_problem(self.llm) if isinstance(self.llm, str) else None
        check_options(self, "NIR", f"--llm: {problem}" if problem else None)


@dataclass(frozen=True)
class CaseAnswer:
    """One case's three steps and what was read from the third."""

    candidates: tuple[int, ...]  # movie ids, in the order the prompts show them
    prompts: tuple[str, ...]
    answers: tuple[str, ...]  # as written; the third's candidate side is what `result` read
    result: Stage2Result
    items: tuple[int, ...]  # the catalogue items of the answer that are candidates, in order


class NIRRecommender:
    """NIR as a candidate ranker (ranking.base.CandidateRanker): one ranked list of candidates per case."""

    def __init__(
        self, options: NIROptions | None = None, *, backend: LLMBackend | None = None, progress: Progress = lambda m: None
    ) -> None:
        self.settings = options or NIROptions()
        self.backend, self.owns_backend, self.progress = backend, backend is None, progress
        self.training: np.ndarray | None = None  # (training users, C) 1.0 where the user rated the movie
        self.co_watched: np.ndarray | None = None  # (C, C) training users who rated both (item filtering)

    @property
    def name(self) -> str:
        item = ", item filtering" if self.settings.filtering == "item" else ""
        return f"NIR ({self.settings.llm}, not GPT-3{item})"

    @property
    def negative_seeds(self) -> int | None:
        return self.settings.negative_seeds

    @property
    def options(self) -> dict:
        recorded = dataclasses.asdict(self.settings)
        return recorded | ({"engine": type(self.backend).__name__} if self.backend is not None else {})

    def fit(self, dataset: Dataset) -> None:
        """Read the training users (`learn`) and load the LLM."""
        self.learn(dataset)
        if self.settings.answers:  # each run (a protocol, a negative draw) adds its cases
            Path(self.settings.answers).parent.mkdir(parents=True, exist_ok=True)
            Path(self.settings.answers).write_text("")
        if self.backend is None:
            self.progress(f"NIR: loading {self.settings.llm}")
            try:
                self.backend = load_backend(self.settings.llm)
            except LLMError as error:
                raise DualrecError(f"{self.settings.llm}: {error}") from None

    def learn(self, dataset: Dataset) -> None:
        """The training users' movie vectors (and co-watch counts for item filtering): all the candidates need."""
        self.training = dataset.rated_matrix(dataset.split_users["train"]).astype(np.float64)
        if self.settings.filtering == "item":
            self.co_watched = self.training.T @ self.training

    def close(self) -> None:
        """Release the LLM if NIR loaded it."""
        if self.owns_backend and self.backend is not None:
            self.backend.close()
            self.backend = None

    # ---- candidates ------------------------------------------------------------------------------------------------

    def own_candidates(self, dataset: Dataset, cases: Windows) -> np.ndarray:
        """(n, candidates) each case's candidate items, best first, by the chosen filtering."""
        if self.training is None:
            raise DualrecError("NIR is not ready: call fit(dataset), or learn(dataset) for its candidates alone, first.")
        watched = watched_before(dataset, cases)
        if self.settings.filtering == "item":
            return item_filtering(watched, self.co_watched, self.settings.neighbours, self.settings.candidates)
        return user_filtering(watched, self.training, self.settings.neighbours, self.settings.candidates)

    # ---- the three prompts -----------------------------------------------------------------------------------------

    def rank_candidates(
        self, dataset: Dataset, cases: Windows, candidates: np.ndarray | None = None, progress: Progress | None = None
    ) -> RankedLists:
        """One ranked list per case: of its own candidates (None) or of the given (n, m) candidate items."""
        progress = progress or self.progress
        started = time.perf_counter()
        given = candidates is not None
        candidates = np.asarray(candidates) if given else self.own_candidates(dataset, cases)
        filtering_seconds = time.perf_counter() - started
        answered = []
        for row, (history, user, items) in enumerate(zip(cases.histories, cases.users, candidates)):
            answered.append(self.answer_case(dataset, history, int(user), items))
            progress(f"{self.name}: {row + 1}/{len(cases)} cases")
        lists = [list(case.items) for case in answered]
        figures = answer_figures(dataset, [case.result for case in answered], lists)
        figures |= case_figures(answered, candidates, cases.targets)
        if self.settings.answers:
            origin = "given" if given else f"{self.settings.filtering} filtering"
            save_answers(Path(self.settings.answers), cases, answered, ranks_of_lists(lists, cases.targets), origin)
        answering = sum(case.result.seconds for case in answered)
        seconds = {"candidates": round(filtering_seconds, 2), "answers": round(answering, 2)}
        seconds["per_case"] = round(answering / max(len(cases), 1), 3)
        return RankedLists(cases, lists, figures, self.options, seconds)

    def answer_case(self, dataset: Dataset, history: np.ndarray, user: int, items: np.ndarray) -> CaseAnswer:
        """The three chained prompts of one case, its candidates shown in the user's seeded order."""
        backend = self.ready_backend()
        movies = dataset.movies
        order = np.random.default_rng([self.settings.shuffle_seed, user]).permutation(len(items))
        shown = [int(movie) for movie in dataset.catalogue[np.asarray(items)[order]]]
        watched = [int(movie) for movie in dataset.catalogue[history[history != PAD_ITEM]][-self.settings.history :]]
        settings = dataclasses.replace(backend.settings, greedy=True, seed=None, max_new_tokens=self.settings.max_new_tokens)
        started = time.perf_counter()
        prompts, answers = [], []
        try:
            for _ in range(2):
                prompts.append(nir_prompt(movies, shown, watched, answers))
                answers.append(free_answer(backend, prompts[-1], settings))
            prompts.append(nir_prompt(movies, shown, watched, answers))
            answer, grounding = self.third_answer(dataset, prompts[-1], shown, watched, settings)
        except LLMError as error:
            raise DualrecError(f"{self.settings.llm}: {error}") from None
        answers.append(answer)
        read = candidate_lines(answer, title_index(dataset), set(watched))
        prompt = Stage2Prompt(tuple(watched), None, TEMPLATE, prompts[-1], k=LIST_LENGTH)
        result = interpret(dataset, prompt, read, time.perf_counter() - started, grounding)
        chosen = set(shown)
        ranked = [movie for movie in result.recommended if movie in chosen]
        return CaseAnswer(tuple(shown), tuple(prompts), tuple(answers), result, tuple(dataset.item_of(ranked).tolist()))

    def third_answer(
        self, dataset: Dataset, prompt: str, shown: Sequence[int], watched: Sequence[int], settings: GenerationSettings
    ) -> tuple[str, Grounding | None]:
        """Step 3's answer: grounded to the candidates (where the engine can), else free; and how it was grounded."""
        backend = self.ready_backend()
        if not self.settings.grounded:
            return free_answer(backend, prompt, settings), None
        reports: list[Grounding] = []
        constraint = answer_constraint(dataset, watched, LIST_LENGTH, allowed=shown)
        try:
            stream = partial(backend.stream, prompt, settings)
            answer = "".join(grounded_answer(stream, constraint, backend.grounding, reports.append))
        except EmptyAnswerError:
            answer = ""
        return answer, reports[-1]

    def ready_backend(self) -> LLMBackend:
        if self.backend is None:
            raise DualrecError("NIR is not ready: call fit(dataset) first.")
        return self.backend


def registered(name: str) -> NIRRecommender:
    """The registry's NIR (dualrec.ranking.registry): the default options."""
    return NIRRecommender()


# ---- the pieces -----------------------------------------------------------------------------------------------------


def free_answer(backend: LLMBackend, prompt: str, settings: GenerationSettings) -> str:
    """A free answer; an empty one is an answer with nothing in it."""
    try:
        return backend.generate(prompt, settings)
    except EmptyAnswerError:
        return ""


def user_filtering(watched: np.ndarray, training: np.ndarray, neighbours: int, size: int) -> np.ndarray:
    """(n, size) candidate items per case: the `neighbours` training users (rows of `training`, ties to the first) with
    the largest dot product with the case's binary vector (`watched`, (n, C) bool) vote for their movies with their
    similarity (the reference's sort_uf_items divides it by the neighbours' total, a factor common to the case's votes,
    so whole-number sums rank the same, and ties are exact); the unwatched movies with most votes, ties to the smaller
    item (the more rated). A case sharing no movie with anyone gets the most rated unwatched movies."""
    similarity = watched.astype(np.float64) @ training.T
    nearest = best_first(similarity, neighbours)
    weights = np.take_along_axis(similarity, nearest, axis=1)
    votes = np.stack([row @ training[users] for row, users in zip(weights, nearest)])
    return best_first(np.where(watched, -np.inf, votes), size)


def item_filtering(watched: np.ndarray, co_watched: np.ndarray, neighbours: int, size: int) -> np.ndarray:
    """(n, size) candidate items per case: each watched movie's `neighbours` most co-watched movies (itself included, as
    in the reference's soft_if_items) add their co-watch counts; the unwatched movies with the largest sums."""
    scores = np.zeros(watched.shape, dtype=np.float64)
    for row, rated in enumerate(watched):
        similar = co_watched[np.flatnonzero(rated)]
        nearest = best_first(similar, neighbours)
        np.add.at(scores[row], nearest.ravel(), np.take_along_axis(similar, nearest, axis=1).ravel())
    return best_first(np.where(watched, -np.inf, scores), size)


def best_first(scores: np.ndarray, count: int) -> np.ndarray:
    """(n, count) column indices of each row's largest scores, best first, ties to the smaller index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, : min(count, scores.shape[1])]


def case_figures(answered: Sequence[CaseAnswer], candidates: np.ndarray, targets: np.ndarray) -> dict:
    """What NIR adds to an answer's figures: the ceiling (how often the target is a candidate), the matched titles
    outside the candidate set, and the answers that really were grounded."""
    matched = sum(m.movie_id is not None for case in answered for m in case.result.titles)
    outside = sum(len(case.result.recommended) - len(case.items) for case in answered)
    return {
        "candidates_per_case": int(candidates.shape[1]),
        "ceiling": float(np.mean([target in row for row, target in zip(candidates, targets)])) if len(targets) else 0.0,
        "outside_candidates_rate": outside / max(matched, 1),
        "grounded_answers": sum(bool(case.result.grounding and case.result.grounding.grounded) for case in answered),
    }


def save_answers(path: Path, cases: Windows, answered: Sequence[CaseAnswer], ranks: np.ndarray, origin: str) -> None:
    """One JSON line per case, added to the file: whose case, where the target ranked, the candidates and where they
    came from (NIR's own filtering, or given by a protocol), every prompt and answer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as out:
        for user, rank, case in zip(cases.users, ranks, answered):
            record = {"user": int(user), "target_rank": None if np.isinf(rank) else int(rank), "candidates": case.candidates}
            record["candidates_from"] = origin
            record |= {"steps": [{"prompt": p, "answer": a} for p, a in zip(case.prompts, case.answers)]}
            out.write(json.dumps(record | {"read": case.result.as_dict()}) + "\n")
