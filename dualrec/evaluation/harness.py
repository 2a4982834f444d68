"""The scoreboard: every system ranked on the same test cases under the same protocols (docs/design.md §2).

Every protocol reduces a system's output to the rank of each case's target, and the same metric code summarises
those ranks (metrics.summarise), so scoring systems (Recommender.score) and list systems (ListRecommender) share one
path, `evaluate`:
- `full`: the target among all catalogue movies, movies the user rated before it excluded;
- `sampled-N`: the target among itself and N - 1 movies the user never rated (the data's negatives), for each seed;
- `freeform`: a list system's ranked list per case (an LLM's matched answer), turned into ranks by `ranks_of_lists`.
A candidate ranker (NIR) answers with ranked lists too, under `full` of its own candidates and under `sampled-N` of
the protocol's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, FREEFORM, DataConfig
from dualrec.data.dataset import Dataset, Windows
from dualrec.data.features import genre_matrix
from dualrec.errors import DualrecError
from dualrec.evaluation.metrics import hit_rate
from dualrec.evaluation.results import result_entry, results_document
from dualrec.evaluation.significance import paired_comparison
from dualrec.ranking.base import CandidateRanker, ListRecommender, Progress, Recommender, Reranker
from dualrec.ranking.registry import load_system, system_names

LIST_LENGTH = 10  # the top-k lists behind coverage and genre similarity


# ---- from a system's output to ranks -------------------------------------------------------------------------------


def watched_before(dataset: Dataset, cases: Windows) -> np.ndarray:
    """(n, C) True for the catalogue movies each case's user rated before its target (a user rates a movie once, so
    the target's item marks its place in the user's sequence)."""
    rated = dataset.ratings[(dataset.ratings["item"] >= 0) & dataset.ratings["user_id"].isin(np.unique(cases.users))]
    users = rated["user_id"].to_numpy()
    position = rated.groupby("user_id", sort=False).cumcount().to_numpy()
    unique, row_of = np.unique(cases.users, return_inverse=True)
    order = np.full((len(unique), dataset.catalogue_size), np.iinfo(np.int32).max, dtype=np.int64)
    order[np.searchsorted(unique, users), rated["item"].to_numpy()] = position
    order = order[row_of]
    target_position = order[np.arange(len(cases)), cases.targets]
    return order < target_position[:, None]


def ranks_among(scores: np.ndarray, targets: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """1-based rank of each target's score among the allowed items' scores; ties count against the target."""
    target = scores[np.arange(len(targets)), targets][:, None]
    others = allowed & (np.arange(scores.shape[1]) != targets[:, None])
    return 1 + ((scores >= target) & others).sum(axis=1)


def ranks_full(scores: np.ndarray, targets: np.ndarray, watched: np.ndarray) -> np.ndarray:
    """The `full` protocol: the target among every catalogue movie that is not watched."""
    return ranks_among(scores, targets, ~watched)


def ranks_sampled(scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """The sampled protocol for one seed: the target among itself and the (n, negatives) never-rated movies."""
    allowed = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(allowed, negatives, True, axis=1)
    return ranks_among(scores, targets, allowed)


def ranks_in_candidates(scores: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target among its row of candidates by score; ties count against the target."""
    is_target = candidates == targets[:, None]
    target = scores[is_target][:, None]
    return 1 + ((scores >= target) & ~is_target).sum(axis=1)


def ranks_of_lists(ranked_lists: Sequence[Sequence[int]], targets: np.ndarray) -> np.ndarray:
    """Ranks from one ranked list of catalogue items per case (a list system); np.inf where the target is absent."""
    return np.array(
        [list(items).index(t) + 1 if t in items else np.inf for items, t in zip(ranked_lists, targets)], dtype=np.float64
    )


def top_lists(scores: np.ndarray, watched: np.ndarray, k: int = LIST_LENGTH) -> np.ndarray:
    """(n, k) the best k unwatched items per case, best first (what a user would be shown)."""
    scores = np.where(watched, -np.inf, scores)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def padded_lists(lists: Sequence[Sequence[int]], length: int = LIST_LENGTH) -> np.ndarray:
    """(n, length) items of ranked lists, cut or padded with -1 (an empty slot)."""
    return np.array([(list(items) + [-1] * length)[:length] for items in lists], dtype=np.int64).reshape(len(lists), length)


def protocol_ranks(
    protocol: str, scores: np.ndarray | None, dataset: Dataset, cases: Windows, watched: np.ndarray, system: object = None
) -> tuple[np.ndarray, dict]:
    """(repeats, cases) ranks of a scoring protocol, and the figures that say how they were drawn (a re-ranker's, under
    a sampled protocol, from its scores of the protocol's candidates)."""
    full, sampled = dataset.config.scored_protocols
    if protocol == full:
        return ranks_full(scores, cases.targets, watched)[None], {"candidates": "catalogue minus watched"}
    if protocol == sampled:
        seeds = dataset.config.negative_seeds
        draws = [dataset.negatives(cases, seed) for seed in seeds]
        items = len(dataset.catalogue)
        own = [sampled_scores(system, scores, cases, drawn, items) for drawn in draws]
        ranks = np.stack([ranks_sampled(chosen, cases.targets, drawn) for chosen, drawn in zip(own, draws)])
        return ranks, {"candidates": f"target + {dataset.config.negatives} never-rated", "negative_seeds": list(seeds)}
    raise DualrecError(f"Unknown protocol {protocol!r}; choose from {', '.join(dataset.config.scored_protocols)}.")


def sampled_scores(system: object, scores: np.ndarray | None, cases: Windows, negatives: np.ndarray, items: int) -> np.ndarray:
    """The scores a sampled protocol ranks by: a re-ranker's own scores of exactly its candidates (the target and
    `negatives`, given in item order so that their order says nothing; its catalogue `scores` are not needed), else the
    catalogue scores."""
    if not isinstance(system, Reranker):
        return scores
    candidates = np.sort(np.c_[cases.targets, negatives], axis=1)
    own = np.full((len(cases), items), -np.inf)
    np.put_along_axis(own, candidates, system.score_candidates(cases.histories, cases.users, candidates), axis=1)
    return own


def baseline_comparison(
    system: Reranker, protocol: str, ranks: np.ndarray, dataset: Dataset, cases: Windows, watched: np.ndarray, **bootstrap
) -> dict:
    """A re-ranker beside its baseline on the same cases under the same protocol: the paired differences with their
    bootstrap intervals and the exact McNemar test on HR@5 (significance.py), and under full the baseline's HR@depth,
    the most that re-ranking its top `depth` can hit."""
    baseline = system.baseline
    scores = np.asarray(baseline.score(cases.histories, cases.users), dtype=np.float64)
    baseline_ranks, _ = protocol_ranks(protocol, scores, dataset, cases, watched, baseline)
    extra = {"paired": {"baseline": baseline.name} | paired_comparison(baseline_ranks, ranks, **bootstrap)}
    if protocol == dataset.config.scored_protocols[0]:
        extra["ceiling"] = {f"HR@{system.depth}": float(hit_rate(baseline_ranks, system.depth).mean())}
    return extra


def candidate_entry(
    system: CandidateRanker, protocol: str, dataset: Dataset, cases: Windows, progress: Progress, seed: int, **common
) -> dict:
    """A candidate ranker's row under a scored protocol: its lists of its own candidates under `full`; under a sampled
    protocol, its lists of the target and the negatives of each of its negative draws (given in item order)."""
    full, sampled = dataset.config.scored_protocols
    if protocol == full:
        draws, extra = [None], {"candidates": "the system's own"}
    elif protocol == sampled:
        seeds = dataset.config.negative_seeds[: system.negative_seeds]
        draws = [np.sort(np.c_[cases.targets, dataset.negatives(cases, s)], axis=1) for s in seeds]
        extra = {"candidates": f"target + {dataset.config.negatives} never-rated", "negative_seeds": list(seeds)}
    else:
        raise DualrecError(f"Unknown protocol {protocol!r}; choose from {', '.join(dataset.config.scored_protocols)}.")
    progress(f"{system.name}: {protocol}, {len(cases)} cases")
    runs = [system.rank_candidates(dataset, cases, drawn, progress) for drawn in draws]
    ranks = np.stack([ranks_of_lists(run.lists, cases.targets) for run in runs])
    extra |= runs[0].figures if len(runs) == 1 else {"per_draw": [run.figures for run in runs]}
    seconds = {name: round(sum(run.seconds.get(name, 0.0) for run in runs), 3) for name in runs[0].seconds}
    lists = padded_lists(runs[0].lists) if protocol == full else None
    common["options"] = system.options | runs[0].options
    return result_entry(system.name, protocol, ranks, lists=lists, extra=extra, seconds=seconds, seed=seed, **common)


def evaluate_system(
    system: Recommender | ListRecommender | CandidateRanker,
    dataset: Dataset,
    split: str = "test",
    protocols: Sequence[str] | None = None,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    fit_seconds: float = 0.0,
    progress: Progress = lambda message: None,
) -> list[dict]:
    """Run a ready system once on the split's cases and summarise it under each protocol: a list system's lists under
    freeform, a scoring system's scores and a candidate ranker's lists under full and sampled (default: both)."""
    cases = dataset.cases[split]
    common = {"options": getattr(system, "options", {}), "genres": genre_matrix(dataset.catalogue_movies), "samples": samples}
    if isinstance(system, CandidateRanker):
        chosen = protocols or dataset.config.scored_protocols
        return [candidate_entry(system, protocol, dataset, cases, progress, seed, **common) for protocol in chosen]
    if isinstance(system, ListRecommender):
        got = system.rank_cases(dataset, cases, progress)
        ranks, lists = ranks_of_lists(got.lists, got.cases.targets), padded_lists(got.lists)
        extra = got.figures | {"cases_drawn": len(got.cases), "cases_total": len(cases)}
        common["options"] = system.options | got.options
        return [result_entry(system.name, FREEFORM, ranks, lists=lists, extra=extra, seconds=got.seconds, seed=seed, **common)]
    chosen = protocols or dataset.config.scored_protocols
    progress(f"{system.name}: scoring {len(cases)} {split} cases")
    started = time.perf_counter()
    # a re-ranker under sampled protocols alone scores only their candidates: its catalogue scores would be wasted work
    needed = not isinstance(system, Reranker) or dataset.config.scored_protocols[0] in chosen
    scores = np.asarray(system.score(cases.histories, cases.users), dtype=np.float64) if needed else None
    timing = {"fit": round(fit_seconds, 2), "score": round(time.perf_counter() - started, 2)}
    watched = watched_before(dataset, cases)
    entries = []
    for protocol in chosen:
        started = time.perf_counter()
        ranks, extra = protocol_ranks(protocol, scores, dataset, cases, watched, system)
        if isinstance(system, Reranker):
            extra |= baseline_comparison(system, protocol, ranks, dataset, cases, watched, samples=samples, seed=seed)
        lists = top_lists(scores, watched) if protocol == dataset.config.scored_protocols[0] else None
        seconds = timing | {"protocol": round(time.perf_counter() - started, 2)}
        entries.append(result_entry(system.name, protocol, ranks, lists=lists, extra=extra, seconds=seconds, seed=seed, **common))
    return entries


def check_names(chosen: Sequence, allowed: Sequence[str], what: str) -> None:
    """Refuse an empty choice or a name that is not allowed (objects are not names: they pass)."""
    unknown = [name for name in chosen if isinstance(name, str) and name not in allowed]
    if unknown or not chosen:
        raise DualrecError(f"Unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}.")


def checked_run(systems: Sequence, protocols: Sequence[str] | None, config: DataConfig) -> list[str]:
    """The protocols of a run on data made with `config` (None: all of them), once every protocol and system name is
    known (a run with none is refused); it needs no data, so a command checks its choice before the data loads."""
    every = (*config.scored_protocols, FREEFORM)
    protocols = list(every if protocols is None else protocols)
    check_names(protocols, every, "protocol")
    check_names(systems, system_names(), "system")
    return protocols


def system_name(system: str | object) -> str:
    return system if isinstance(system, str) else system.name


def run_options(
    systems: Sequence, protocols: Sequence[str], split: str, lstm_dir: str | Path | None, baseline_minutes: float | None
) -> dict:
    """A results document's "options": the systems' names, the protocols, the split and how names were made ready."""
    return {
        "systems": [system_name(system) for system in systems],
        "protocols": list(protocols),
        "split": split,
        "lstm_dir": lstm_dir and str(lstm_dir),
        "baseline_minutes": baseline_minutes,
    }


def evaluate(
    systems: Sequence[str | Recommender | ListRecommender | CandidateRanker],
    dataset: Dataset,
    protocols: Sequence[str] | None = None,
    split: str = "test",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    lstm_dir: str | Path | None = None,
    baseline_minutes: float | None = None,
    progress: Progress = lambda message: None,
) -> dict:
    """A whole run, returned as the results document: every system under each of `protocols` (default: all) that
    applies to it (a scoring system: full and sampled; a list system: freeform); the others are listed under
    "skipped". A name is made ready by the registry (the trained LSTM of `lstm_dir`, a baseline fitted within
    `baseline_minutes`); an object is used as given."""
    protocols = checked_run(systems, protocols, dataset.config)
    started = time.perf_counter()
    names = [system_name(system) for system in systems]
    entries, skipped = [], []
    for name, system in zip(names, systems):
        applies = (FREEFORM,) if isinstance(system, ListRecommender) else dataset.config.scored_protocols
        skipped += [{"system": name, "protocol": protocol} for protocol in protocols if protocol not in applies]
        chosen = [protocol for protocol in protocols if protocol in applies]
        if chosen:
            progress(f"{name}: preparing")
            ready = time.perf_counter()
            system = load_system(system, dataset, lstm_dir, baseline_minutes) if isinstance(system, str) else system
            entries += evaluate_system(system, dataset, split, chosen, samples, seed, time.perf_counter() - ready, progress)
    options = run_options(systems, protocols, split, lstm_dir, baseline_minutes)
    seconds = time.perf_counter() - started
    return results_document(entries, dataset, split, samples, seed, seconds) | {"options": options, "skipped": skipped}
