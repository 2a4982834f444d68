"""Ranking metrics from the target's rank, bootstrap intervals, and what a list of recommendations covers.

A rank counts from 1; `np.inf` means the target was not ranked at all (a generative system that never named it).
Arrays of ranks are (repeats, cases): one row per repeat of a randomised protocol (the sampled-20 negative seeds),
a single row otherwise.
"""

from __future__ import annotations

import numpy as np

from dualrec.config import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, EVAL_KS

LEVEL = 0.95


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the target is in the top k, else 0.0 (same shape as ranks)."""
    return (ranks <= k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """1 / log2(rank + 1) where rank <= k, else 0.0: with one relevant item, the ideal DCG is 1."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(np.minimum(ranks, k) + 1), 0.0)


def per_case_metrics(ranks: np.ndarray, ks: tuple[int, ...] = EVAL_KS) -> dict[str, np.ndarray]:
    """ "HR@k" and "NDCG@k" for every k, per case and repeat, in the order HR@1, HR@5, ..., NDCG@1, ..."""
    return {f"HR@{k}": hit_rate(ranks, k) for k in ks} | {f"NDCG@{k}": ndcg(ranks, k) for k in ks}


def interval(
    values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over cases: means of `samples` resamples (with replacement) of the
    per-case values; the same seed resamples the same cases."""
    index = np.random.default_rng(seed).integers(0, len(values), size=(samples, len(values)))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values[index].mean(axis=1), [tail, 100 - tail])
    return float(low), float(high)


def summarise(
    ranks: np.ndarray, ks: tuple[int, ...] = EVAL_KS, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, dict]:
    """Per metric: the mean over cases (and repeats), its bootstrap interval over cases, and with several repeats
    the per-repeat means and their standard deviation."""
    ranks = np.atleast_2d(ranks)
    summary = {}
    for name, values in per_case_metrics(ranks, ks).items():
        low, high = interval(values.mean(axis=0), samples, seed)
        entry = {"value": float(values.mean()), "low": low, "high": high}
        if len(ranks) > 1:
            per_repeat = values.mean(axis=1)
            entry |= {"per_seed": [float(v) for v in per_repeat], "std": float(per_repeat.std(ddof=1))}
        summary[name] = entry
    return summary


def list_diversity(lists: np.ndarray, genres: np.ndarray) -> dict[str, float]:
    """For (n, k) recommended items (-1 = empty slot): catalogue coverage (distinct items / catalogue size) and
    intra-list genre similarity (mean pairwise cosine of the genre multi-hots within each list; 1 = homogeneous)."""
    k = lists.shape[1]
    valid = lists >= 0
    vectors = genres[np.where(valid, lists, 0)] * valid[..., None]  # (n, k, 18)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    cosine = unit @ unit.transpose(0, 2, 1)  # (n, k, k)
    pairs = valid[:, :, None] & valid[:, None, :] & ~np.eye(k, dtype=bool)
    similarity = (cosine * pairs).sum(axis=(1, 2)) / np.maximum(pairs.sum(axis=(1, 2)), 1)
    has_pairs = pairs.any(axis=(1, 2))
    return {
        f"coverage@{k}": len(np.unique(lists[valid])) / len(genres),
        f"genre_similarity@{k}": float(similarity[has_pairs].mean()) if has_pairs.any() else float("nan"),
    }
