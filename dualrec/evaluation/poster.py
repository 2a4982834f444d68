"""The poster protocol's scoreboard: systems trained on PO4ISR's training sessions rank each sampled session's target
among its 20 candidates (docs/design.md §2, the poster protocol; the data: dualrec.data.poster).

Every system learns from the protocol as a Dataset (poster_dataset: 150, 50 or all training sessions) and ranks the
1,000 sampled test sessions' candidates of each candidate seed (the validation sessions: the reference's one draw):
- a system with `score_candidates` (SKNN, the hybrid) scores the candidates in the reference's order (the target at a
  random place, so the order says nothing about it); the hybrid re-ranks them on the LSTM of the same training
  sessions, its w chosen among the validation sessions' candidates, and its rows carry the paired comparison with
  that LSTM;
- a CandidateRanker (NIR) answers with its ranked list of them;
- any other Recommender scores the catalogue, of which the candidates' scores are taken.
Ties count against the target (PO4ISR leaves them to torch.topk). Metrics: HR and NDCG at 1, 5 and 10 and MRR (which
PO4ISR calls MAP), the mean over the candidate seeds with their spread and a bootstrap interval over the sessions.
The LSTM is trained on the same training sessions (kept under <models>/poster/, keyed by them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dualrec.config import (
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    EVAL_KS,
    POSTER_CANDIDATE_SEEDS,
    POSTER_PROTOCOL,
    LSTMConfig,
    PosterConfig,
    paths,
)
from dualrec.data.dataset import Dataset, Windows
from dualrec.data.poster import EVAL_SAMPLE, PosterData, poster_dataset
from dualrec.evaluation.freeform import sampled_rows
from dualrec.evaluation.harness import check_names, ranks_in_candidates, ranks_of_lists, run_options, system_name
from dualrec.evaluation.metrics import interval, ndcg
from dualrec.evaluation.results import result_entry, results_document, seeds_text
from dualrec.evaluation.significance import paired_comparison
from dualrec.ranking.base import CandidateRanker, Progress, Recommender, Reranker
from dualrec.ranking.registry import HYBRID, LSTM, NIR, fitted, load_system, system_names

if TYPE_CHECKING:
    from dualrec.ranking.hybrid import HybridOptions

SPLIT_NAMES = {"test": "test", "val": "valid"}  # the project's split names -> the protocol's


def sample_label(config: PosterConfig, sessions: int) -> str:
    """What a row's name says of its training sessions (150 is the poster's setting)."""
    if config.train_sample == "all":
        return f"all {sessions:,} training sessions"
    return f"{sessions} training sessions" + (", the poster's setting" if config.train_sample == "150" else "")


def candidate_draws(data: PosterData, split: str, seeds: Sequence[int]) -> dict[int, np.ndarray]:
    """Candidate seed -> (1000, 20) movie ids: the test draws of the chosen seeds, or the validation draw."""
    if SPLIT_NAMES[split] == "valid":
        return {"valid": data.candidates("valid")}
    return {seed: data.candidates("test", seed) for seed in seeds}


def candidate_ranks(
    system: object, dataset: Dataset, cases: Windows, candidates: np.ndarray, progress: Progress
) -> tuple[np.ndarray, dict]:
    """The ranks one system gives the targets among one draw of (n, 20) candidate items, given in the reference's order,
    and a candidate ranker's figures (NIR's: its answers' hallucination, the ceiling)."""
    if isinstance(system, CandidateRanker):
        answered = system.rank_candidates(dataset, cases, candidates, progress)
        return ranks_of_lists(answered.lists, cases.targets), answered.figures
    if hasattr(system, "score_candidates"):
        scores = system.score_candidates(cases.histories, cases.users, candidates)
    else:
        scores = np.take_along_axis(np.asarray(system.score(cases.histories, cases.users), dtype=np.float64), candidates, axis=1)
    return ranks_in_candidates(np.asarray(scores, dtype=np.float64), candidates, cases.targets), {}


def mrr_summary(ranks: np.ndarray, samples: int, seed: int) -> dict:
    """MRR over the candidates (1 / rank), summarised as the other metrics are (summarise)."""
    values = 1.0 / ranks
    low, high = interval(values.mean(axis=0), samples, seed)
    entry = {"value": float(values.mean()), "low": low, "high": high}
    if len(ranks) > 1:
        per_seed = values.mean(axis=1)
        entry |= {"per_seed": [float(v) for v in per_seed], "std": float(per_seed.std(ddof=1))}
    return entry


def po4isr_mostpop(dataset: Dataset, cases: Windows, ks: Sequence[int] = EVAL_KS) -> dict[str, float]:
    """MostPop as PO4ISR's test script scores it, the source of the poster's MostPop row: its top k of the whole
    catalogue by count in the training sessions (ties by first appearance), candidates ignored."""
    ratings = dataset.ratings
    rows = ratings[(ratings["item"] >= 0) & ratings["user_id"].isin(dataset.split_users["train"])]["item"].to_numpy()
    items, first, counts = np.unique(rows, return_index=True, return_counts=True)
    order = items[np.lexsort((first, -counts))]
    position = np.full(dataset.catalogue_size, np.inf)
    position[order] = np.arange(1, len(order) + 1)
    ranks = position[cases.targets]
    return {f"HR@{k}": float((ranks <= k).mean()) for k in ks} | {f"NDCG@{k}": float(ndcg(ranks, k).mean()) for k in ks}


def poster_lstm(
    dataset: Dataset, lstm_dir: str | Path | None = None, progress: Progress = lambda message: None, minutes: float | None = None
) -> Recommender:
    """The LSTM trained on the protocol's training sessions (the full profile, within `minutes` if given): the one of
    `lstm_dir` (refused if trained on others), or the one kept for these sessions, trained first if there is none."""
    from dualrec.ranking.lstm import load_lstm, train_lstm  # TensorFlow loads only when needed

    name = f"lstm-{dataset.fingerprint[:16]}" + (f"-{minutes:g}min" if minutes else "")
    folder = Path(lstm_dir) if lstm_dir else paths().models / POSTER_PROTOCOL / name
    if lstm_dir or folder.is_dir():
        return load_lstm(folder, dataset, strict=True)
    progress(f"lstm: training on {len(dataset.split_users['train'])} training sessions")
    model = train_lstm(dataset, LSTMConfig(max_minutes=minutes), verbose=0)
    model.save(folder)
    return model


def ready_system(
    system: str | object,
    dataset: Dataset,
    valid: np.ndarray | None,
    lstm_dir: str | Path | None,
    minutes: float | None,
    llm_options: Mapping[str, object],
    progress: Progress,
) -> object:
    """A name made ready on the training sessions (the LSTM: poster_lstm; the hybrid: poster_hybrid, on `valid`, the
    validation sessions' candidates; NIR with `llm_options[NIR]`); an object as given."""
    if not isinstance(system, str):
        return system
    if system == LSTM:
        return poster_lstm(dataset, lstm_dir, progress, minutes)
    if system == HYBRID:
        return poster_hybrid(llm_options.get(HYBRID), dataset, valid, lstm_dir, minutes, progress)
    if system == NIR:
        from dualrec.ranking.nir import NIRRecommender

        return fitted(NIRRecommender(llm_options.get(NIR), progress=progress), dataset)
    return load_system(system, dataset, None, minutes)


def poster_hybrid(
    options: HybridOptions | None,
    dataset: Dataset,
    valid: np.ndarray,
    lstm_dir: str | Path | None,
    minutes: float | None,
    progress: Progress,
) -> Reranker:
    """The hybrid on the LSTM of these training sessions, w chosen as it is scored: among the validation sessions'
    candidates (`valid`, the reference's draw)."""
    from dualrec.ranking.hybrid import HybridRecommender

    hybrid = HybridRecommender(options, lstm=poster_lstm(dataset, lstm_dir, progress, minutes), progress=progress)
    hybrid.fit(dataset, valid)
    return hybrid


def session_rows(dataset: Dataset, limits: Mapping[str, int | None], seed: int) -> dict[str, np.ndarray]:
    """Split -> the positions of the sampled sessions a run scores: all 1,000, or `limits[split]` of them drawn with
    `seed` (in their order)."""
    return {split: sampled_rows(len(cases), limits.get(split), seed) for split, cases in dataset.cases.items()}


def candidate_items(data: PosterData, dataset: Dataset, split: str, seeds: Sequence[int], rows: np.ndarray) -> dict:
    """Candidate seed (or "valid") -> (len(rows), 20) catalogue items of the chosen sessions of the split."""
    draws = candidate_draws(data, split, seeds)
    return {key: dataset.item_of(draw[rows].ravel()).reshape(len(rows), -1) for key, draw in draws.items()}


def drawn_label(sessions: int, limit_seed: int, seeds: list) -> str:
    """What a row's name adds when it scores fewer than the 1,000 sessions or the five test candidate draws."""
    label = "" if sessions == EVAL_SAMPLE else f"; {sessions} of the {EVAL_SAMPLE:,} sessions, seed {limit_seed}"
    if seeds != ["valid"] and len(seeds) < len(POSTER_CANDIDATE_SEEDS):
        label += f"; {seeds_text('candidate seed', seeds)}"
    return label


def poster_entry(
    system: object, name: str, dataset: Dataset, draws: dict, config: PosterConfig, split: str, progress: Progress, **common
) -> dict:
    """One row: the system's ranks of the split's cases under each candidate draw, summarised (a re-ranker's with the
    paired comparison with its baseline on the same sessions and draws)."""
    cases = dataset.cases[split]
    started = time.perf_counter()
    ranked = [candidate_ranks(system, dataset, cases, candidates, progress) for candidates in draws.values()]
    ranks = np.stack([draw_ranks for draw_ranks, _ in ranked])
    sessions = len(dataset.split_users["train"])
    extra = {
        "candidates": "target + 19 movies not in the session (PO4ISR's draws)",
        "candidate_seeds": list(draws),
        "train_sample": config.train_sample,
        "train_sessions": sessions,
    }
    if figures := [draw_figures for _, draw_figures in ranked if draw_figures]:
        extra |= figures[0] if len(figures) == 1 else {"per_draw": figures}
    if name == "mostpop":
        extra["po4isr_mostpop"] = po4isr_mostpop(dataset, cases)
    if isinstance(system, Reranker):
        baseline = system.baseline
        before = np.stack([candidate_ranks(baseline, dataset, cases, candidates, progress)[0] for candidates in draws.values()])
        bootstrap = {"samples": common["samples"], "seed": common["seed"]}
        extra["paired"] = {"baseline": system.baseline.name} | paired_comparison(before, ranks, **bootstrap)
    seconds = common.pop("seconds") | {"rank": round(time.perf_counter() - started, 2)}
    label = sample_label(config, sessions) + common.pop("drawn")
    entry = result_entry(f"{name} ({label})", POSTER_PROTOCOL, ranks, extra=extra, seconds=seconds, **common)
    entry["metrics"]["MRR"] = mrr_summary(ranks.astype(np.float64), common["samples"], common["seed"])
    return entry


def check_poster_run(systems: Sequence[str | object], split: str) -> None:
    """Refuse an unknown system name or split before any data loads."""
    check_names(systems, system_names(), "system")
    check_names([split], tuple(SPLIT_NAMES), "split")


def evaluate_poster(
    systems: Sequence[str | object],
    data: PosterData,
    config: PosterConfig | None = None,
    split: str = "test",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    lstm_dir: str | Path | None = None,
    baseline_minutes: float | None = None,
    progress: Progress = lambda message: None,
    llm_options: Mapping[str, object] | None = None,
    limits: Mapping[str, int | None] | None = None,
    limit_seed: int = 0,
) -> dict:
    """A whole run under the poster protocol, returned as a results document (its rows' protocol is "poster"). A name
    is trained on the chosen training sessions (the LSTM too; the hybrid and NIR made with `llm_options[name]`); an
    object is used as given, on `poster_dataset(data, config.train_sample)`. `limits` ("val", "test" -> a count) draw
    that many of a split's 1,000 sampled sessions with `limit_seed` (the LLM systems' CPU runs); rows say so."""
    config = config or PosterConfig()
    check_poster_run(systems, split)
    started = time.perf_counter()
    dataset = poster_dataset(data, config.train_sample)
    rows = session_rows(dataset, limits or {}, limit_seed)
    dataset = dataclasses.replace(dataset, cases={name: cases.take(rows[name]) for name, cases in dataset.cases.items()})
    draws = candidate_items(data, dataset, split, config.candidate_seeds, rows[split])
    drawn = drawn_label(len(rows[split]), limit_seed, list(draws))
    entries = []
    for system in systems:
        name = system_name(system)
        progress(f"{name}: preparing on {len(dataset.split_users['train'])} training sessions")
        ready = time.perf_counter()
        valid = candidate_items(data, dataset, "val", (), rows["val"])["valid"] if system == HYBRID else None
        model = ready_system(system, dataset, valid, lstm_dir, baseline_minutes, llm_options or {}, progress)
        name = model.name if system in (HYBRID, NIR) else name
        fit = {"fit": round(time.perf_counter() - ready, 2)}
        common = {"options": getattr(model, "options", {}), "samples": samples, "seed": seed, "seconds": fit, "drawn": drawn}
        entries.append(poster_entry(model, name, dataset, draws, config, split, progress, **common))
    document = results_document(entries, dataset, split, samples, seed, time.perf_counter() - started)
    document["protocol"] = {
        "name": POSTER_PROTOCOL,
        "data_fingerprint": data.fingerprint,
        "sessions": len(data.sessions),
        "splits": {name: stop - start for name, (start, stop) in data.bounds.items()},
    } | config.as_dict()
    document["options"] = run_options(systems, [POSTER_PROTOCOL], split, lstm_dir, baseline_minutes)
    if any(len(chosen) < EVAL_SAMPLE for chosen in rows.values()):
        document["options"]["session_sample"] = {f"{name}_sessions": len(chosen) for name, chosen in rows.items()}
        document["options"]["session_sample"]["seed"] = limit_seed
    return document
