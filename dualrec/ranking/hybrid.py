"""The hybrid (issue 13): the LSTM proposes its top N movies for a case, an LLM scores each given the history, and the
final score is log p_LSTM + w * s_LLM; the movies outside the top N keep the LSTM's order below them.

    hybrid = HybridRecommender(HybridOptions(llm="smollm2-135m", candidates=20, scorer="likelihood"))
    hybrid.fit(dataset)        # loads the trained LSTM and the LLM, and chooses w on the validation cases
    evaluate(["lstm", hybrid], dataset)

- The LLM score `s` (dualrec.llm.scoring): `likelihood`, the log-likelihood of the candidate written as the answer
  format writes it ("1. Heat (1995) Genres: Action, Crime, Thriller") after a prompt holding the case's last
  PROMPT_HISTORY movies (the poster's history lines, with genres), minus the same after a neutral prompt (so popular
  or short titles are not favoured); or `labels`, LlamaRec's verbalizer: the candidates listed (A), (B), ... in the
  LSTM's order, the log-probability of each letter as the answer.
- `w` is chosen on the validation cases from a grid that holds 0 (the LSTM alone, so the choice is never worse than
  the LSTM there), by SELECTION_METRIC under `full`, or among given candidates (the poster protocol's: `fit(dataset,
  candidates)`); test cases are never read. At w = 0 the LLM is not asked.
- The harness treats the hybrid as a re-ranker (ranking.base.Reranker): under `full` it ranks `score`, the catalogue
  scores (the top N re-ranked); under `sampled-20` it ranks `score_candidates` of the protocol's own 20 candidates,
  all scored by the LLM; and each row carries the paired comparison with the LSTM on the same cases.
- The top N leave out what the user watched up to the end of the history (the user's earlier ratings too, as the
  harness does), so the LLM re-ranks exactly the LSTM's N best candidates of the `full` protocol.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dualrec.config import AT_LEAST_0, DEFAULT_PRESET, Bounds, check_options, option
from dualrec.data.dataset import PAD_ITEM, Dataset, Windows
from dualrec.errors import DualrecError
from dualrec.evaluation.freeform import model_problem
from dualrec.evaluation.harness import ranks_full, ranks_in_candidates, watched_before
from dualrec.evaluation.metrics import per_case_metrics
from dualrec.grounding.prompts import ANSWER_FORMAT, HEADER, format_answer, movie_line
from dualrec.llm import ADAPTER_SEPARATOR, LLMBackend, LLMError, load_backend, resolve_preset
from dualrec.llm.adapters import adapter_spec
from dualrec.llm.base import looks_like_path
from dualrec.llm.scoring import LABELS, label_log_probs, labelled, relative_log_likelihoods, scoring_engine
from dualrec.ranking.base import Progress

if TYPE_CHECKING:
    from dualrec.ranking.lstm import LSTMRecommender

SCORERS = ("likelihood", "labels")
AUTO = "auto"  # both scorers tried on the validation cases, the winner kept
ENGINES = ("transformers", "llama.cpp")  # the scoring engine of a preset that runs on either (a GGUF preset)
# transformers first: measured by benchmarks/bench_scoring.py on this 2-core CPU (one thread each, load 3-4), the
# likelihood scorer evaluates 184 tokens/s on transformers and 85 on llama.cpp (prompt processing alone: 226 and 110).
CANDIDATES = Bounds(1, 1000)
DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
SELECTION_METRIC = "NDCG@10"  # what w maximises on the validation cases under `full` (ties: the smaller w)
RECOMMEND_WEIGHT = 1.0  # `dualrec recommend --hybrid`'s w when none is given (it runs no validation)
PROMPT_HISTORY = 10  # the LLM reads the case's last 10 movies (the LSTM reads 30): ~220 prompt tokens instead of ~600

ONE_LINE = "Answer with one line in this format:\n" + ANSWER_FORMAT.format(
    rank=1, title="Title", year="Year", genres="Genre, Genre"
)
REQUEST = f"Recommend the one movie this user would most likely watch next. {ONE_LINE}"
NEUTRAL = f"Recommend one movie. {ONE_LINE}"
LABEL_REQUEST = "Which candidate would this user most likely watch next? Answer with its letter in parentheses."


@dataclass(frozen=True)
class HybridOptions:
    """How the hybrid is made; options out of range raise ConfigError here, before any model or data loads."""

    llm: str = option(
        DEFAULT_PRESET,
        "the LLM of the hybrid: a local model (a preset, a .gguf or folder, or PRESET+ADAPTER_FOLDER) whose "
        "log-probabilities it reads",
        flag="--llm",
    )
    candidates: int = option(20, "how many of the LSTM's top movies the LLM re-ranks per case", CANDIDATES)
    scorer: str = option(
        "likelihood",
        "the LLM score: likelihood (each candidate's log-likelihood after the history minus after a neutral prompt), "
        "labels (the candidates listed (A)...(Z), the probability of each letter) or auto (both tried on the validation "
        "cases, the one whose best w scores higher kept)",
        choices=(*SCORERS, AUTO),
    )
    engine: str = option(
        ENGINES[0],
        "the engine that scores, for a preset that runs on either (a GGUF preset; a path or another preset runs on its own)",
        choices=ENGINES,
        flag="--scoring-engine",
    )
    weights: tuple[float, ...] = option(
        DEFAULT_WEIGHTS,
        "the weights w tried on the validation cases (0, the LSTM alone, among them)",
        AT_LEAST_0,
        flag="--hybrid-weights",
    )

    def __post_init__(self) -> None:
        check_options(self, "hybrid", *self.problems())

    def problems(self) -> list[str | None]:
        """What the fields' own bounds do not say: the grid needs 0, the labels are 26 letters, and the LLM must be a
        local model (an API gives no log-probabilities) that exists; found without loading it."""
        weights_given = isinstance(self.weights, tuple) and all(isinstance(w, int | float) for w in self.weights)
        no_zero = weights_given and 0 not in self.weights
        too_many = self.scorer in ("labels", AUTO) and isinstance(self.candidates, int) and self.candidates > len(LABELS)
        return [
            f"--hybrid-weights must include 0 (the LSTM alone), not {self.weights!r}" if no_zero else None,
            f"--candidates must be at most {len(LABELS)} with --scorer {self.scorer} (labels lists (A) to (Z)), not "
            f"{self.candidates}"
            if too_many
            else None,
            llm_problem(self.llm),
        ]


def llm_problem(spec: str) -> str | None:
    """Why a model spec cannot be the hybrid's LLM, found without loading it: it names nothing (an unknown preset, a
    missing file or adapter folder), or it is an API, which gives no log-probabilities; None when it can."""
    try:
        if problem := model_problem(spec):
            return f"--llm: {problem}"
        if looks_like_path(spec):
            return None
        preset = adapter_spec(spec).preset if ADAPTER_SEPARATOR in spec else resolve_preset(spec)
    except LLMError as error:
        return f"--llm: {error}"
    if preset.engine != "openai":
        return None
    return (
        f"--llm {spec} is an API model ({preset.base_url}): the hybrid reads the log-probabilities of given answers, so it "
        "needs a local model (a GGUF on llama.cpp or a transformers model, such as smollm2-135m) or a server that returns "
        "log-probabilities"
    )


def scoring_backend(spec: str, engine: str) -> LLMBackend:
    """The LLM on `engine` when its preset runs on either engine (engine "auto": a GGUF preset), else as `spec` says."""
    if looks_like_path(spec):
        return load_backend(spec)
    preset = adapter_spec(spec).preset if ADAPTER_SEPARATOR in spec else resolve_preset(spec)
    return load_backend(spec, engine=engine) if preset.engine == "auto" else load_backend(spec)


@dataclass(frozen=True)
class Reranked:
    """One history's top N, in the hybrid's order, with what each candidate scored."""

    items: np.ndarray  # (N,) catalogue items, the hybrid's best first
    lstm_probabilities: np.ndarray  # (N,)
    llm_scores: np.ndarray  # (N,) s_LLM
    scores: np.ndarray  # (N,) log p_LSTM + w * s_LLM
    lstm_ranks: np.ndarray  # (N,) 1-based place in the LSTM's own order
    weight: float


class HybridRecommender:
    """The LSTM's top N re-ranked by an LLM: a Recommender, and a re-ranker of the LSTM for the harness."""

    def __init__(
        self,
        options: HybridOptions | None = None,
        lstm_dir: str | Path | None = None,
        *,
        lstm: LSTMRecommender | None = None,
        backend: LLMBackend | None = None,
        progress: Progress = lambda message: None,
    ) -> None:
        self.settings = options or HybridOptions()
        self.lstm_dir, self.baseline, self.backend, self.progress = lstm_dir, lstm, backend, progress
        self.owns_backend = backend is None
        self.dataset: Dataset | None = None
        self.weight: float | None = None  # chosen by `fit` (or set for a single ranking)
        self.scorer = SCORERS[0] if self.settings.scorer == AUTO else self.settings.scorer  # auto: `fit` chooses
        self.selection: dict = {}
        self.neutral: dict[str, float] = {}  # the candidates' neutral log-likelihoods, computed once
        self.remembered: dict[tuple[bytes, int], float] = {}  # likelihood scores by (history, item)

    @property
    def name(self) -> str:
        scorer = f"{self.scorer} (auto)" if self.settings.scorer == AUTO else self.scorer
        return f"hybrid, {self.settings.llm}, {scorer}, top {self.settings.candidates}"

    @property
    def depth(self) -> int:
        """How many of the baseline's top movies per case are re-ranked."""
        return self.settings.candidates

    @property
    def options(self) -> dict:
        """What the results files record: the options, the chosen w with the grid and its validation scores, the LLM's
        engine, and the LSTM's own options."""
        recorded = dataclasses.asdict(self.settings) | {"scorer_used": self.scorer, "weight": self.weight}
        recorded["selection"] = self.selection
        if self.backend is not None:
            recorded["engine"] = type(self.backend).__name__
        return recorded | ({"lstm": self.baseline.options} if self.baseline is not None else {})

    # ---- getting ready -------------------------------------------------------------------------------------------

    def ready(self, dataset: Dataset) -> None:
        """Load the trained LSTM (refused if trained on other data) and the LLM, and check that the LLM can score (with
        a grid of w = 0 alone the LLM would never count, and is not loaded)."""
        from dualrec.ranking.lstm import load_lstm  # TensorFlow loads only here

        self.dataset = dataset
        if self.baseline is None:
            self.baseline = load_lstm(self.lstm_dir, dataset, strict=True)
        if self.backend is None and max(self.settings.weights) > 0:
            self.progress(f"hybrid: loading {self.settings.llm}")
            try:
                self.backend = scoring_backend(self.settings.llm, self.settings.engine)
                scoring_engine(self.backend)
            except LLMError as error:
                self.close()
                raise DualrecError(f"{self.settings.llm}: {error}") from None

    def fit(self, dataset: Dataset, candidates: np.ndarray | None = None) -> None:
        """Get ready, then choose w on the validation cases (the Recommender interface; the LSTM is not retrained): under
        `full`, or among `candidates`, (n, m) items of each validation case (a protocol's own, as the poster protocol's);
        with --scorer auto, w for each scorer and the scorer whose best w scores higher there (on a tie, the first of
        SCORERS)."""
        self.ready(dataset)
        if self.settings.scorer != AUTO:
            self.weight, self.selection = choose_weight(self, dataset.cases["val"], candidates)
            return
        tried = {}
        for scorer in SCORERS:
            self.scorer = scorer
            tried[scorer] = choose_weight(self, dataset.cases["val"], candidates)
        self.scorer = max(SCORERS, key=lambda name: (best_score(*tried[name]), -SCORERS.index(name)))
        self.weight, self.selection = tried[self.scorer]
        self.selection = self.selection | {"scorers": {name: {"weight": w} | record for name, (w, record) in tried.items()}}

    def close(self) -> None:
        """Release the LLM if the hybrid loaded it."""
        if self.owns_backend and self.backend is not None:
            self.backend.close()
            self.backend = None

    # ---- scoring -------------------------------------------------------------------------------------------------

    def score(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        """(n, C) scores in the hybrid's order: each case's top N by log p + w * s above every other movie, those in
        the LSTM's order (see `fused_scores`)."""
        probabilities = self.lstm_probabilities(histories)
        top = top_unseen(probabilities, seen_through_history(self.ready_dataset(), histories, users), self.depth)
        return fused_scores(probabilities, top, self.llm_scores(histories, top, self.chosen_weight()), self.chosen_weight())

    def score_candidates(self, histories: np.ndarray, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(n, m) log p + w * s of each case's given candidates (a sampled protocol's), every one scored by the LLM."""
        log_p, llm = self.candidate_parts(histories, candidates, self.chosen_weight())
        return log_p + self.chosen_weight() * llm

    def candidate_parts(self, histories: np.ndarray, candidates: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
        """(n, m) log p_LSTM and s_LLM of each case's given candidates (s: zeros at w = 0); the labels scorer lists
        them in the LSTM's order."""
        probabilities = self.lstm_probabilities(histories)
        chosen = np.take_along_axis(probabilities, candidates, axis=1).astype(np.float64)
        order = np.argsort(-chosen, axis=1, kind="stable")
        ordered = np.take_along_axis(candidates, order, axis=1)
        llm = np.empty(chosen.shape)
        np.put_along_axis(llm, order, self.llm_scores(histories, ordered, weight), axis=1)
        with np.errstate(divide="ignore"):
            return np.log(chosen), llm

    def rerank(self, history_items: Sequence[int]) -> Reranked:
        """The LSTM's top N after a history of any length (every movie of it left out), in the hybrid's order."""
        lstm = self.ready_lstm()
        proposed = lstm.top_k(np.asarray(history_items, dtype=np.int32), self.depth)
        window = np.asarray(history_items, dtype=np.int32)[-lstm.window :]
        histories = np.r_[np.full(lstm.window - len(window), PAD_ITEM), window].astype(np.int32)[None]
        weight = self.chosen_weight()
        llm = self.llm_scores(histories, proposed.items[None])[0]  # shown even at w = 0
        with np.errstate(divide="ignore"):
            scores = np.log(proposed.probabilities.astype(np.float64)) + weight * llm
        order = np.argsort(-scores, kind="stable")
        return Reranked(proposed.items[order], proposed.probabilities[order], llm[order], scores[order], order + 1, weight)

    def llm_scores(self, histories: np.ndarray, candidates: np.ndarray, weight: float = 1.0) -> np.ndarray:
        """(n, m) s_LLM of each case's candidates given its history; zeros at w = 0, where they would not count."""
        scores = np.zeros(candidates.shape)
        if weight == 0:
            return scores
        dataset = self.ready_dataset()
        for row, (history, items) in enumerate(zip(histories, candidates)):
            if row % 10 == 0:
                self.progress(f"{self.name}: LLM scores of case {row + 1}/{len(histories)}")
            scores[row] = self.case_scores(dataset, history, items)
        return scores

    def case_scores(self, dataset: Dataset, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        """One case's s_LLM; the likelihood scorer remembers each (history, item) pair, the labels scorer cannot (a
        label's score depends on the other candidates listed)."""
        try:
            if self.scorer == "labels":
                return label_log_probs(self.backend, label_prompt(dataset, history, items), len(items))
            key = history.tobytes()
            missing = [int(item) for item in dict.fromkeys(items.tolist()) if (key, item) not in self.remembered]
            if missing:
                texts = [answer_text(dataset, item) for item in missing]
                found = relative_log_likelihoods(
                    self.backend, likelihood_prompt(dataset, history), NEUTRAL, texts, memo=self.neutral
                )
                self.remembered.update({(key, item): float(value) for item, value in zip(missing, found)})
            return np.array([self.remembered[key, int(item)] for item in items])
        except LLMError as error:
            raise DualrecError(f"{self.settings.llm}: {error}") from None

    def lstm_probabilities(self, histories: np.ndarray) -> np.ndarray:
        """The LSTM's (n, C) probabilities; DualrecError for a history without a catalogue movie (no candidates)."""
        empty = np.flatnonzero((histories == PAD_ITEM).all(axis=1))
        if len(empty):
            raise DualrecError(
                f"case {empty[0]} has no catalogue movie in its history, so the LSTM proposes no candidates to re-rank"
            )
        return self.ready_lstm().probabilities(histories)

    def ready_lstm(self) -> LSTMRecommender:
        if self.baseline is None:
            raise DualrecError("The hybrid is not ready: call fit(dataset) (or ready(dataset) and set a weight) first.")
        return self.baseline

    def ready_dataset(self) -> Dataset:
        if self.dataset is None:
            raise DualrecError("The hybrid is not ready: call fit(dataset) (or ready(dataset) and set a weight) first.")
        return self.dataset

    def chosen_weight(self) -> float:
        if self.weight is None:
            raise DualrecError("The hybrid has no weight w yet: fit(dataset) chooses it on the validation cases.")
        return self.weight


# ---- the prompts (the ranking adapter's training examples are built with these too) -------------------------------


def history_lines(dataset: Dataset, history: Sequence[int]) -> list[str]:
    """HEADER and the last PROMPT_HISTORY movies of a history of catalogue items (padding skipped), one line each."""
    items = np.asarray(history)
    watched = dataset.catalogue[items[items != PAD_ITEM]][-PROMPT_HISTORY:]
    return [HEADER, *(movie_line(dataset.movies, movie_id) for movie_id in watched)]


def likelihood_prompt(dataset: Dataset, history: Sequence[int]) -> str:
    """The likelihood scorer's prompt: the history, then REQUEST (its neutral counterpart is NEUTRAL)."""
    return "\n".join([*history_lines(dataset, history), REQUEST])


def answer_text(dataset: Dataset, item: int) -> str:
    """A catalogue item as the answer the likelihood scorer scores: '1. Heat (1995) Genres: Action, Crime, Thriller'."""
    return format_answer(dataset.movies, [int(dataset.catalogue[item])])


def label_prompt(dataset: Dataset, history: Sequence[int], items: Sequence[int]) -> str:
    """The labels scorer's prompt: the history, the candidates listed (A), (B), ... in the given order, LABEL_REQUEST;
    the answer's first tokens are LABEL_PREFIX and the label's letter."""
    lines = [movie_line(dataset.movies, int(movie_id)).removeprefix("- ") for movie_id in dataset.catalogue[np.asarray(items)]]
    return "\n".join([*history_lines(dataset, history), "Candidates:", labelled(lines), LABEL_REQUEST])


def registered(name: str) -> HybridRecommender:
    """The registry's hybrid (dualrec.ranking.registry): the default options, on the LSTM of the run's lstm_dir."""
    return HybridRecommender()


# ---- the pieces, on whole batches ------------------------------------------------------------------------------------


def seen_through_history(dataset: Dataset, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
    """(n, C) True for each movie the user rated up to the end of the history (the window's last movie): what the
    `full` protocol leaves out, as the case's target follows the window."""
    seen = watched_before(dataset, Windows(histories, histories[:, -1], users))
    filled = histories != PAD_ITEM
    seen[np.nonzero(filled)[0], histories[filled]] = True  # the window itself (its last movie too), whoever the users are
    return seen


def top_unseen(probabilities: np.ndarray, seen: np.ndarray, depth: int) -> np.ndarray:
    """(n, depth) the most probable unseen items per case, best first."""
    masked = np.where(seen, -np.inf, probabilities)
    depth = min(depth, masked.shape[1])
    best = np.argpartition(-masked, depth - 1, axis=1)[:, :depth]
    return np.take_along_axis(best, np.argsort(-np.take_along_axis(masked, best, axis=1), axis=1, kind="stable"), axis=1)


def fused_scores(probabilities: np.ndarray, top: np.ndarray, llm: np.ndarray, weight: float) -> np.ndarray:
    """(n, C) scores whose order is the hybrid's. The top items score 2 + their rank from the bottom by log p + w * s
    (tied fused scores tie), every other item its LSTM probability (at most 1): so the top N stay above the rest, the
    rest keep the LSTM's order and ties, and at w = 0 the whole order is the LSTM's."""
    with np.errstate(divide="ignore"):
        fused = np.log(np.take_along_axis(probabilities, top, axis=1).astype(np.float64)) + weight * llm
    places = np.stack([np.searchsorted(np.sort(row), row, side="left") for row in fused])
    scores = probabilities.astype(np.float64)
    np.put_along_axis(scores, top, 2.0 + places, axis=1)
    return scores


def best_score(weight: float, record: dict) -> float:
    """The validation SELECTION_METRIC at the chosen w, from `choose_weight`'s record."""
    return record["scores"][str(weight)][SELECTION_METRIC]


def choose_weight(hybrid: HybridRecommender, cases: Windows, candidates: np.ndarray | None = None) -> tuple[float, dict]:
    """The w of the grid with the best SELECTION_METRIC on `cases` (validation), the smaller on a tie, and the record of
    the choice: every w's HR and NDCG there. The targets are ranked under `full` (the LSTM's top N re-ranked), or among
    `candidates`, (n, m) items per case (ties against the target)."""
    if not len(cases):
        raise DualrecError("The hybrid chooses w on the validation cases, and this data has none.")
    started = time.perf_counter()
    hybrid.progress(f"{hybrid.name}: choosing w on {len(cases)} validation cases")
    grid = sorted(set(hybrid.settings.weights))
    ranks_at = weight_ranks(hybrid, cases, max(grid), candidates)
    llm_seconds = time.perf_counter() - started
    scores = {}
    for weight in grid:
        scores[str(weight)] = {name: float(values.mean()) for name, values in per_case_metrics(ranks_at(weight)).items()}
    best = max(grid, key=lambda weight: (scores[str(weight)][SELECTION_METRIC], -weight))
    protocol = "full" if candidates is None else f"among {candidates.shape[1]} given candidates"
    record = {"split": "val", "cases": len(cases), "metric": SELECTION_METRIC, "protocol": protocol, "grid": grid}
    record["scorer"] = hybrid.scorer
    return best, record | {"scores": scores, "llm_seconds_per_case": round(llm_seconds / len(cases), 3)}


def weight_ranks(
    hybrid: HybridRecommender, cases: Windows, most: float, candidates: np.ndarray | None
) -> Callable[[float], np.ndarray]:
    """The LLM asked once (as at w = `most`) for the cases; returned: w -> the targets' ranks at that w, under `full`
    or among the given candidates."""
    if candidates is not None:
        log_p, llm = hybrid.candidate_parts(cases.histories, candidates, most)
        return lambda weight: ranks_in_candidates(log_p + weight * llm, candidates, cases.targets)
    dataset = hybrid.ready_dataset()
    probabilities = hybrid.lstm_probabilities(cases.histories)
    top = top_unseen(probabilities, seen_through_history(dataset, cases.histories, cases.users), hybrid.depth)
    llm = hybrid.llm_scores(cases.histories, top, most)
    watched = watched_before(dataset, cases)
    return lambda weight: ranks_full(fused_scores(probabilities, top, llm, weight), cases.targets, watched)
