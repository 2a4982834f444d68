"""Paired comparison of two systems ranked on the same cases: is the second one better, and by how much?

From each system's per-case ranks (as metrics.py reads them: (cases,) or (repeats, cases), 1-based, np.inf for a
target never ranked): the difference of each metric (system minus baseline) with a paired bootstrap interval (the
same resampled cases for both systems, seeded), and an exact McNemar test on HR@5 (a two-sided binomial test on the
cases one system hits and the other misses).
"""

from __future__ import annotations

import math

import numpy as np

from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED
from dualrec.errors import DualrecError
from dualrec.evaluation.metrics import LEVEL, hit_rate, interval, per_case_metrics

COMPARED = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10")
COMPARED_KS = (1, 5, 10)
MCNEMAR_K = 5


def check_paired(baseline: np.ndarray, system: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both rank arrays as (repeats, cases) of the same shape; DualrecError when they are not paired ranks."""
    baseline, system = np.atleast_2d(np.asarray(baseline, dtype=np.float64)), np.atleast_2d(np.asarray(system, dtype=np.float64))
    if baseline.shape != system.shape or baseline.ndim != 2:
        raise DualrecError(
            f"a paired comparison needs both systems' ranks on the same cases: got shapes {baseline.shape} and {system.shape}"
        )
    if not baseline.size:
        raise DualrecError("a paired comparison needs at least one case")
    if np.isnan(baseline).any() or np.isnan(system).any() or (baseline < 1).any() or (system < 1).any():
        raise DualrecError("ranks count from 1 (np.inf for a target never ranked): found a rank below 1 or NaN")
    return baseline, system


def mcnemar_exact(baseline_hits: np.ndarray, system_hits: np.ndarray) -> dict:
    """Exact McNemar test of two paired hit/miss vectors: the two-sided binomial test (p = 1/2) on the discordant pairs.

    Returns the counts `baseline_only` (the baseline hits, the system misses) and `system_only`, and `p_value`.
    """
    baseline_hits, system_hits = np.asarray(baseline_hits, dtype=bool), np.asarray(system_hits, dtype=bool)
    baseline_only = int((baseline_hits & ~system_hits).sum())
    system_only = int((system_hits & ~baseline_hits).sum())
    discordant = baseline_only + system_only
    tail = sum(math.comb(discordant, i) for i in range(min(baseline_only, system_only) + 1))
    return {
        "baseline_only": baseline_only,
        "system_only": system_only,
        "p_value": min(1.0, 2 * tail / 2**discordant),
    }


def paired_comparison(
    baseline: np.ndarray,
    system: np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> dict:
    """Per metric of COMPARED: both systems' means, their difference (system minus baseline) and its paired bootstrap
    interval over cases (a case's value averaged over the repeats first); and `mcnemar`, the exact McNemar test on
    HR@5, one per repeat (one for `full`, one per negative seed for `sampled-20`: the seeds share their cases, so they
    are not pooled)."""
    baseline, system = check_paired(baseline, system)
    before, after = per_case_metrics(baseline, COMPARED_KS), per_case_metrics(system, COMPARED_KS)
    comparison: dict = {}
    for name in COMPARED:
        differences = (after[name] - before[name]).mean(axis=0)
        low, high = interval(differences, samples, seed, level)
        comparison[name] = {
            "baseline": float(before[name].mean()),
            "system": float(after[name].mean()),
            "difference": float(differences.mean()),
            "low": low,
            "high": high,
        }
    comparison["mcnemar"] = [
        {"metric": f"HR@{MCNEMAR_K}"} | mcnemar_exact(hit_rate(b, MCNEMAR_K), hit_rate(s, MCNEMAR_K))
        for b, s in zip(baseline, system)
    ]
    return comparison
