"""The scoreboard: every system ranked on the same test cases under the same protocols (docs/design.md §2).

Every protocol reduces a system's output to the rank of each case's target, and the same metric code summarises
those ranks (metrics.summarise), so scoring systems (Recommender.score) and generative ones share one path:
- `full`: the target among all catalogue movies, movies the user rated before it excluded;
- `sampled-20`: the target among itself and 19 movies the user never rated, for each negative seed;
- generative systems (the Stage 2 `freeform` protocol): a ranked list of catalogue items per case, turned into
  ranks by `ranks_of_lists` and recorded with `result_entry`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, EVAL_KS, EVAL_PROTOCOLS
from dualrec.data.dataset import Dataset, Windows
from dualrec.data.features import genre_matrix
from dualrec.errors import DualrecError
from dualrec.evaluation.metrics import LEVEL, list_diversity, summarise
from dualrec.ranking.base import Recommender

FORMAT_VERSION = 1
LIST_LENGTH = 10  # the top-k lists behind coverage and genre similarity

# The poster's table (docs/design.md §1), kept as data so the app can draw ours beside it.
POSTER_METRICS = ("HR@1", "HR@5", "NDCG@1", "NDCG@5")
POSTER_BASELINE_PROTOCOL = "sampled-20 (as published)"
POSTER_DUALREC_PROTOCOL = "free-form, last 5 movies, answers leaked"
POSTER_CAVEAT = (
    "The poster's baseline rows rank each target among 20 candidates (the target + 19 random negatives; random "
    "guessing gives HR@5 = 0.25). Its DUALRec rows come from free-form generation scored against the user's last 5 "
    "movies with fuzzy title matching, in code that let the answers into its re-ranking step. The two halves are not "
    "comparable with each other, and each is comparable only with our rows of the same protocol."
)
POSTER_RESULTS: list[dict] = [
    {"system": system, "protocol": protocol, "HR@1": h1, "HR@5": h5, "NDCG@1": n1, "NDCG@5": n5}
    for system, protocol, h1, h5, n1, n5 in [
        ("MostPop", POSTER_BASELINE_PROTOCOL, 0.0004, 0.0070, 0.0004, 0.0053),
        ("SLIM", POSTER_BASELINE_PROTOCOL, 0.1270, 0.3600, 0.1270, 0.2530),
        ("FPMC", POSTER_BASELINE_PROTOCOL, 0.1132, 0.3748, 0.1132, 0.2464),
        ("NARM", POSTER_BASELINE_PROTOCOL, 0.1692, 0.5230, 0.1692, 0.3501),
        ("STAMP", POSTER_BASELINE_PROTOCOL, 0.1584, 0.5078, 0.1584, 0.3367),
        ("GCE-GNN", POSTER_BASELINE_PROTOCOL, 0.1312, 0.4748, 0.1312, 0.3044),
        ("MCPRN", POSTER_BASELINE_PROTOCOL, 0.1434, 0.4758, 0.1434, 0.3157),
        ("HIDE", POSTER_BASELINE_PROTOCOL, 0.1498, 0.4998, 0.1498, 0.3256),
        ("Atten-Mixer", POSTER_BASELINE_PROTOCOL, 0.1490, 0.4932, 0.1490, 0.3216),
        ("UniSRec", POSTER_BASELINE_PROTOCOL, 0.0508, 0.2508, 0.0508, 0.1459),
        ("NIR", POSTER_BASELINE_PROTOCOL, 0.0572, 0.2326, 0.0572, 0.1436),
        ("DUALRec, DeepSeek V3 (API)", POSTER_DUALREC_PROTOCOL, 0.1371, 0.1425, 0.1371, 0.1406),
        ("DUALRec, Mistral 8B", POSTER_DUALREC_PROTOCOL, 0.0810, 0.0907, 0.0810, 0.0871),
        ("DUALRec, DeepSeek-R1-Distill-Qwen-1.5B + LoRA", POSTER_DUALREC_PROTOCOL, 0.0583, 0.0605, 0.0583, 0.0597),
        ("DUALRec, Mistral-7B + LoRA", POSTER_DUALREC_PROTOCOL, 0.1847, 0.2214, 0.1847, 0.2078),
    ]
]


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
    """The `sampled-20` protocol for one seed: the target among itself and the (n, 19) negatives."""
    allowed = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(allowed, negatives, True, axis=1)
    return ranks_among(scores, targets, allowed)


def ranks_of_lists(ranked_lists: Sequence[Sequence[int]], targets: np.ndarray) -> np.ndarray:
    """Ranks from one ranked list of catalogue items per case (a generative system); np.inf where the target is absent."""
    return np.array(
        [list(items).index(t) + 1 if t in items else np.inf for items, t in zip(ranked_lists, targets)], dtype=np.float64
    )


def top_lists(scores: np.ndarray, watched: np.ndarray, k: int = LIST_LENGTH) -> np.ndarray:
    """(n, k) the best k unwatched items per case, best first (what a user would be shown)."""
    scores = np.where(watched, -np.inf, scores)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


# ---- results -------------------------------------------------------------------------------------------------------


def result_entry(
    system: str,
    protocol: str,
    ranks: np.ndarray,
    *,
    options: dict | None = None,
    seconds: dict | None = None,
    lists: np.ndarray | None = None,
    genres: np.ndarray | None = None,
    extra: dict | None = None,
    ks: tuple[int, ...] = EVAL_KS,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict:
    """One row of a results file: a system under a protocol. `ranks` is (repeats, cases) or (cases,); `lists` and
    `genres` (the catalogue's multi-hots) add coverage and genre similarity; `extra` holds protocol-specific figures
    (e.g. a generative system's hallucination rate)."""
    ranks = np.atleast_2d(ranks)
    entry = {"system": system, "protocol": protocol, "cases": ranks.shape[1], "metrics": summarise(ranks, ks, samples, seed)}
    if lists is not None and genres is not None:
        entry["lists"] = list_diversity(lists, genres)
    return entry | {"extra": extra or {}, "options": options or {}, "seconds": seconds or {}}


def protocol_ranks(
    protocol: str, scores: np.ndarray, dataset: Dataset, cases: Windows, watched: np.ndarray
) -> tuple[np.ndarray, dict]:
    """(repeats, cases) ranks of a protocol, and the figures that say how they were drawn."""
    if protocol == "full":
        return ranks_full(scores, cases.targets, watched)[None], {"candidates": "catalogue minus watched"}
    if protocol == "sampled-20":
        seeds = dataset.config.negative_seeds
        ranks = np.stack([ranks_sampled(scores, cases.targets, dataset.negatives(cases, seed)) for seed in seeds])
        return ranks, {"candidates": f"target + {dataset.config.negatives} never-rated", "negative_seeds": list(seeds)}
    raise DualrecError(f"Unknown protocol {protocol!r}; choose from {', '.join(EVAL_PROTOCOLS)}.")


def evaluate_system(
    system: Recommender,
    dataset: Dataset,
    split: str = "test",
    protocols: Sequence[str] = EVAL_PROTOCOLS,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    fit_seconds: float = 0.0,
) -> list[dict]:
    """Score a ready system once on the split's cases and summarise it under each protocol."""
    cases = dataset.cases[split]
    started = time.perf_counter()
    scores = np.asarray(system.score(cases.histories, cases.users), dtype=np.float64)
    score_seconds = time.perf_counter() - started
    watched = watched_before(dataset, cases)
    genres = genre_matrix(dataset.catalogue_movies)
    entries = []
    for protocol in protocols:
        started = time.perf_counter()
        ranks, extra = protocol_ranks(protocol, scores, dataset, cases, watched)
        lists = top_lists(scores, watched) if protocol == "full" else None
        seconds = {
            "fit": round(fit_seconds, 2),
            "score": round(score_seconds, 2),
            "protocol": round(time.perf_counter() - started, 2),
        }
        options = getattr(system, "options", {})
        entries.append(
            result_entry(
                system.name,
                protocol,
                ranks,
                options=options,
                seconds=seconds,
                lists=lists,
                genres=genres,
                extra=extra,
                samples=samples,
                seed=seed,
            )
        )
    return entries


def evaluate(
    systems: Sequence[str],
    dataset: Dataset,
    load_system: Callable[[str], Recommender],
    split: str = "test",
    protocols: Sequence[str] = EVAL_PROTOCOLS,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    progress: Callable[[str], None] = lambda message: None,
) -> dict:
    """A whole run: each named system made ready by `load_system`, then scored; returns the results document."""
    started = time.perf_counter()
    entries = []
    for name in systems:
        progress(f"{name}: preparing")
        ready = time.perf_counter()
        system = load_system(name)
        fit_seconds = time.perf_counter() - ready
        progress(f"{name}: scoring {len(dataset.cases[split])} {split} cases")
        entries += evaluate_system(system, dataset, split, protocols, samples, seed, fit_seconds)
    return results_document(entries, dataset, split, samples, seed, time.perf_counter() - started)


def results_document(entries: list[dict], dataset: Dataset, split: str, samples: int, seed: int, seconds: float) -> dict:
    """The JSON of one run: the data it ran on, how intervals were drawn, and the entries."""
    return {
        "format": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {
            "fingerprint": dataset.fingerprint,
            "config": dataset.config.as_dict(),
            "split": split,
            "cases": len(dataset.cases[split]),
        },
        "bootstrap": {"samples": samples, "seed": seed, "level": LEVEL, "over": "cases"},
        "seconds": round(seconds, 1),
        "results": entries,
    }


def write_results(document: dict, path: str | Path) -> Path:
    """Write a results document atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".json.part")
    with os.fdopen(handle, "w") as out:
        json.dump(document, out, indent=1)
        out.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def read_results(path: str | Path) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DualrecError(f"Cannot read results file {path}: {error}") from error
    if document.get("format") != FORMAT_VERSION:
        raise DualrecError(f"{path} is not a DUALRec results file of format {FORMAT_VERSION}.")
    return document


def table_rows(entries: list[dict], intervals: bool = True) -> list[dict[str, str]]:
    """Printable rows: system, protocol and each metric as "value [low, high]" (± the seed spread when repeated)."""
    rows = []
    for entry in entries:
        row = {"system": entry["system"], "protocol": entry["protocol"]}
        for name, m in entry["metrics"].items():
            text = f"{m['value']:.4f}"
            if intervals:
                text += f" [{m['low']:.3f}, {m['high']:.3f}]"
            if "std" in m:
                text += f" ±{m['std']:.3f}"
            row[name] = text
        rows.append(row)
    return rows


def markdown_table(entries: list[dict], intervals: bool = True) -> str:
    """The entries as a markdown table (95% bootstrap intervals in brackets; ± the spread over negative seeds)."""
    rows = table_rows(entries, intervals)
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.get(column, "") for column in header) + " |" for row in rows]
    return "\n".join(lines)
