"""Fitting the trained baselines (the RecBole models and the session models), what they share: the budget, where a
trained model is kept, the device, and the epoch loop with early stopping on the validation cases."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualrec.config import AT_LEAST_0, AT_LEAST_1, check_options, option, paths
from dualrec.data.dataset import Dataset
from dualrec.evaluation.harness import ranks_full, watched_before
from dualrec.evaluation.metrics import ndcg
from dualrec.ranking.base import Recommender

log = logging.getLogger(__name__)

VALIDATION_K = 10


@dataclass(frozen=True)
class TrainingBudget:
    """How long one baseline may train: whichever of the limits comes first ends training."""

    max_epochs: int = option(50, bounds=AT_LEAST_1)
    max_minutes: float = option(30.0, bounds=AT_LEAST_0)  # 0: the first training step spends it
    patience: int = option(3, bounds=AT_LEAST_1)  # epochs without a better validation NDCG@10

    def __post_init__(self) -> None:
        check_options(self, "training budget")


def torch_device(gpu_capable: bool = True) -> torch.device:
    """Where a model trains and scores: the GPU when CUDA is available (and the model can use it), else the CPU."""
    return torch.device("cuda" if gpu_capable and torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def baseline_file(name: str, dataset: Dataset, settings: dict, version: int) -> Path:
    """Where the baseline `name` trained on this data with these settings is kept (under the models folder): the same
    file whatever the scoring options (another --negative-seeds does not retrain it)."""
    key = json.dumps([version, dataset.fingerprint, dataset.config.training_options(), settings], sort_keys=True, default=str)
    return paths().models / "baselines" / f"{name}-{hashlib.md5(key.encode()).hexdigest()[:16]}.pt"


def validation_ndcg(system: Recommender, dataset: Dataset) -> Callable[[], float]:
    """A function giving the system's NDCG@10 on the validation cases under the harness's full protocol (watched movies
    excluded)."""
    cases = dataset.cases["val"]
    watched = watched_before(dataset, cases)

    def score() -> float:
        ranks = ranks_full(system.score(cases.histories, cases.users), cases.targets, watched)
        return round(float(ndcg(ranks, VALIDATION_K).mean()), 5)

    return score


def gradient_steps(
    optimizer: torch.optim.Optimizer, batches: Iterable[Any], loss_of: Callable[[Any], torch.Tensor], deadline: float
) -> float:
    """One optimiser step per batch on `loss_of(batch)`, stopping after the step that passes `deadline` (a
    time.monotonic() value); the mean loss of the steps taken."""
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if time.monotonic() > deadline:
            break
    return float(np.mean(losses)) if losses else float("nan")


def early_stopping(
    name: str, model: torch.nn.Module, budget: TrainingBudget, run_epoch: Callable[[float], float], validate: Callable[[], float]
) -> dict:
    """Epochs of `run_epoch(deadline)` (it trains the model, stops past the deadline and returns its mean loss), each
    followed by `validate()` (the validation NDCG@10), until the budget or the patience runs out; the model is left
    with the best epoch's weights, in eval mode. Returns what training did, with the CPU seconds this process spent (on
    a shared machine far fewer than the wall-clock budget)."""
    deadline, cpu_started = time.monotonic() + 60 * budget.max_minutes, time.process_time()
    best, best_state, stale, scores, stop = -1.0, None, 0, [], "max_epochs"
    for epoch in range(1, budget.max_epochs + 1):
        model.train()
        loss = run_epoch(deadline)
        model.eval()
        scores.append(validate())
        log.info("%s epoch %d: loss %.4f, validation NDCG@%d %.4f", name, epoch, loss, VALIDATION_K, scores[-1])
        if scores[-1] > best:
            best, best_state, stale = scores[-1], copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if time.monotonic() > deadline or stale >= budget.patience:
            stop = "budget" if time.monotonic() > deadline else "patience"
            break
    model.load_state_dict(best_state)
    best_epoch = int(np.argmax(scores)) + 1
    cpu_seconds = round(time.process_time() - cpu_started, 1)
    return {
        "epochs": len(scores),
        "best_epoch": best_epoch,
        "stopped_by": stop,
        f"val_ndcg@{VALIDATION_K}": scores,
        "cpu_seconds": cpu_seconds,
    }
