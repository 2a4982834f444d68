"""GCE-GNN, HIDE, MCPRN and Atten-Mixer, the poster's session-based baselines, behind the Recommender interface.

Each model is its module's port of the authors' reference code (gcegnn, hide, mcprn, attenmixer; the reference checks
are tests/test_<model>_reference.py). This module trains one the way the RecBole baselines are trained: on every
prefix of the training users' catalogue sequences (at most `window` movies before the target,
dataset.prefix_windows), shuffled into batches of the model's `batch_size`, with the model's own loss, its
reference's optimiser and per-epoch learning-rate decay, under a budget of epochs and minutes (fitting.TrainingBudget,
BUDGETS), with early stopping on NDCG@10 of the validation cases (full ranking, history excluded; the best epoch's
weights are kept). The trained model is kept under <models>/baselines/, keyed by the data and the settings, and a
saved model is refused on other data. It trains and scores on the GPU when CUDA is available.

Hyper-parameters: PO4ISR's tuned ML-1M settings (each module's PO4ISR_ML1M) unless `params` overrides fields of them.
What the trainer gives each model beyond the histories:
- GCE-GNN's global item graph is built from the training users' whole catalogue sequences (its reference builds it
  from the training sessions before their prefixes are taken).
- HIDE and Atten-Mixer pad every batch to the widths of the whole set of histories being read (the training prefixes,
  the validation cases, or the histories given to `score`), as their references pad a split. GCE-GNN's and MCPRN's
  scores do not depend on the padding.
`seed` seeds torch (initial weights, dropout) and the order of the samples; GCE-GNN draws its initial weights and its
neighbour table from its own option `seed`, as its reference does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from dualrec.data.dataset import Dataset, Windows, prefix_windows, sequence_bounds
from dualrec.errors import ConfigError, DualrecError
from dualrec.ranking.baselines import attenmixer, fitting, gcegnn, hide, mcprn
from dualrec.ranking.baselines.sessions import model_ids

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SCORE_BATCH = 256


class ModelMismatchError(DualrecError):
    """A saved session model was trained on other data or another split than the one in use."""


def training_sequences(dataset: Dataset) -> list[np.ndarray]:
    """Each training user's whole catalogue sequence (items, oldest first)."""
    ratings = dataset.ratings
    rows = ratings[(ratings["item"] >= 0) & ratings["user_id"].isin(dataset.split_users["train"])]
    _, starts, _ = sequence_bounds(rows["user_id"].to_numpy())
    return np.split(rows["item"].to_numpy(dtype=np.int64), starts[1:])


class Architecture(NamedTuple):
    """How the trainer builds one model and feeds it a batch of histories."""

    title: str  # the paper's name of the model
    module: ModuleType  # its port: the options (PO4ISR_ML1M), build_optimizer
    build: Callable[[Dataset, Any], nn.Module]  # (dataset, options) -> an untrained model
    layout: Callable[[list[np.ndarray], Any], Any]  # (every history's model ids, options) -> how its batches are padded
    batch: Callable[[np.ndarray, int, Any, Any], Any]  # (histories, n_items, options, layout) -> the model's inputs


def with_global_graph(dataset: Dataset, options: gcegnn.GCEGNNOptions) -> nn.Module:
    return gcegnn.build_model(dataset.catalogue_size, training_sequences(dataset), options)


def over_catalogue(module: ModuleType) -> Callable[[Dataset, Any], nn.Module]:
    return lambda dataset, options: module.build_model(dataset.catalogue_size, options)


def no_layout(ids: list[np.ndarray], options: Any) -> None:
    """None: each batch as wide as its longest history (GCE-GNN's and MCPRN's scores do not depend on the padding)."""


def longest_and_a_slot(ids: list[np.ndarray], options: Any) -> int:
    return max(map(len, ids)) + 1


def padded_to_layout(module: ModuleType) -> Callable[[np.ndarray, int, Any, Any], Any]:
    return lambda histories, n_items, options, layout: module.session_batch(histories, n_items, layout)


ARCHITECTURES = {
    "gcegnn": Architecture("GCE-GNN", gcegnn, with_global_graph, no_layout, padded_to_layout(gcegnn)),
    "hide": Architecture("HIDE", hide, over_catalogue(hide), hide.widths_of, hide.session_batch),
    "mcprn": Architecture("MCPRN", mcprn, over_catalogue(mcprn), no_layout, padded_to_layout(mcprn)),
    "attenmixer": Architecture(
        "Atten-Mixer", attenmixer, over_catalogue(attenmixer), longest_and_a_slot, padded_to_layout(attenmixer)
    ),
}
# Budgets on this shared 2-core CPU (one torch thread, 498k training prefixes; an epoch takes about 3-5 minutes for
# Atten-Mixer, 10-16 for GCE-GNN, 16 for HIDE, 32-70 for MCPRN, depending on the load: benchmarks/bench_session_models.py).
# 20 epochs and patience 3 are GCE-GNN's reference's; with the learning rate cut tenfold every 3 epochs, early stopping
# comes after about 10-12 epochs (Atten-Mixer: 12, in 28 minutes), which these minutes reach except for MCPRN (3-7
# epochs here; on a GPU, --baseline-minutes sets the budget).
BUDGETS = {
    "gcegnn": fitting.TrainingBudget(max_epochs=20, max_minutes=180),
    "hide": fitting.TrainingBudget(max_epochs=20, max_minutes=180),
    "mcprn": fitting.TrainingBudget(max_epochs=20, max_minutes=240),
    "attenmixer": fitting.TrainingBudget(max_epochs=20, max_minutes=90),
}


@dataclass
class SessionRecommender:
    """One session model (by its key in ARCHITECTURES), trained on the training users and scored on any history."""

    name: str
    budget: fitting.TrainingBudget = fitting.TrainingBudget()
    seed: int = 42
    params: dict = field(default_factory=dict)  # fields of the model's options that override PO4ISR's tuned ones
    use_cache: bool = True  # reuse (and keep) the model trained with the same data and settings
    training: dict = field(default_factory=dict, init=False)  # what fit() did: epochs, seconds, validation scores
    model: nn.Module | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.name not in ARCHITECTURES:
            raise DualrecError(f"Unknown session model {self.name!r}; choose from {', '.join(ARCHITECTURES)}.")
        self.architecture = ARCHITECTURES[self.name]
        known = [item.name for item in dataclasses.fields(self.architecture.module.PO4ISR_ML1M)]
        unknown = [name for name in self.params if name not in known]
        if unknown:
            raise ConfigError(
                f"Unknown {self.architecture.title} option {', '.join(map(repr, unknown))}; choose from {', '.join(known)}."
            )
        self.model_options = dataclasses.replace(self.architecture.module.PO4ISR_ML1M, **self.params)  # checks the values

    @property
    def settings(self) -> dict:
        """What decides the trained model (with the data): the cache key."""
        return {
            "model": self.architecture.title,
            "options": dataclasses.asdict(self.model_options),
            "tuned": "PO4ISR ML-1M" + (f", overridden: {', '.join(self.params)}" if self.params else ""),
            "seed": self.seed,
            "budget": dataclasses.asdict(self.budget),
        }

    @property
    def options(self) -> dict:
        """The settings and what training did, for results files."""
        return self.settings | {"training": self.training}

    @property
    def device(self) -> torch.device:
        return fitting.torch_device()

    def cache_file(self, dataset: Dataset) -> Path:
        """Where the model trained on this data with these settings is kept."""
        return fitting.baseline_file(self.name, dataset, self.settings, CACHE_VERSION)

    def fit(self, dataset: Dataset) -> None:
        cached = self.cache_file(dataset)
        if self.use_cache and cached.is_file():
            self.load(cached, dataset)
            log.info("%s loaded from %s (trained in %s s)", self.name, cached, self.training.get("seconds"))
            return
        started = time.monotonic()
        samples, layout, optimizer, schedule = self.start_training(dataset)
        shuffler = np.random.default_rng(self.seed)

        def run_epoch(deadline: float) -> float:
            loss = fitting.gradient_steps(optimizer, self.training_batches(samples, layout, shuffler), self.batch_loss, deadline)
            schedule.step()
            return loss

        self.training = fitting.early_stopping(
            self.name, self.model, self.budget, run_epoch, fitting.validation_ndcg(self, dataset)
        )
        self.training.update(
            samples=len(samples), seconds=round(time.monotonic() - started, 1), device=fitting.device_name(self.device)
        )
        log.info("%s trained: %s", self.name, self.training)
        if self.use_cache:
            self.save(cached, dataset)

    def start_training(self, dataset: Dataset) -> tuple[Windows, Any, torch.optim.Optimizer, Any]:
        """A new model (seeded) on the device; the training prefixes, their padding, the optimiser and its schedule."""
        samples = prefix_windows(dataset, dataset.split_users["train"])
        torch.manual_seed(self.seed)
        self.model = self.architecture.build(dataset, self.model_options).to(self.device)
        optimizer, schedule = self.architecture.module.build_optimizer(self.model)
        return samples, self.layout(samples.histories), optimizer, schedule

    def training_batches(
        self, samples: Windows, layout: Any, shuffler: np.random.Generator
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """The samples in a new shuffled order, a batch of the model's inputs and targets at a time."""
        shuffled = shuffler.permutation(len(samples))
        for start in range(0, len(shuffled), self.model_options.batch_size):
            rows = shuffled[start : start + self.model_options.batch_size]
            targets = torch.from_numpy(samples.targets[rows].astype(np.int64)).to(self.device)
            yield self.inputs(samples.histories[rows], layout), targets

    def batch_loss(self, batch: tuple[Any, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(*batch)

    def layout(self, histories: np.ndarray) -> Any:
        """How batches of these histories are padded (every history checked: the messages number them in the whole)."""
        return self.architecture.layout(model_ids(histories, self.model.n_items, self.architecture.title), self.model_options)

    def inputs(self, histories: np.ndarray, layout: Any) -> Any:
        """The model's inputs for a batch of histories, on its device."""
        return self.architecture.batch(histories, self.model.n_items, self.model_options, layout).to(self.device)

    def score(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise DualrecError(f"{self.architecture.title} has not been trained: call fit(dataset) first.")
        layout = self.layout(histories)
        self.model.eval()
        with torch.no_grad():
            parts = [
                self.model.scores(self.inputs(histories[start : start + SCORE_BATCH], layout)).cpu().numpy()
                for start in range(0, len(histories), SCORE_BATCH)
            ]
        return np.concatenate(parts)

    def save(self, file: Path, dataset: Dataset) -> None:
        """The trained model (pickled whole), what training did and which data it was trained on."""
        file.parent.mkdir(parents=True, exist_ok=True)
        staging = file.with_suffix(".part")
        data = {"fingerprint": dataset.fingerprint, "config": dataset.config.as_dict()}
        torch.save({"model": self.model, "training": self.training, "settings": self.settings, "data": data}, staging)
        os.replace(staging, file)

    def load(self, file: Path, dataset: Dataset) -> None:
        """A model saved by `save`; refused when it was trained on other data or split options than `dataset`'s."""
        state = torch.load(file, weights_only=False, map_location=self.device)  # our own cache file, written by save()
        trained = state["data"]
        differences = []
        if trained["fingerprint"] != dataset.fingerprint:
            differences.append(f"data files (fingerprint {trained['fingerprint'][:8]} vs {dataset.fingerprint[:8]})")
        if not dataset.config.trains_like(trained["config"]):
            differences.append("data options (split, windows)")
        if differences:
            raise ModelMismatchError(
                f"{file} holds {self.architecture.title} trained on other {' and '.join(differences)}, so its training "
                f"users may include these test users; train it on this data (fit with use_cache=False)."
            )
        self.model = state["model"].eval()
        self.training = state["training"] | {"loaded_from": str(file)}


def session_recommender(name: str, **options) -> SessionRecommender:
    """The Recommender for one of ARCHITECTURES' keys, with (unless given) its budget."""
    options.setdefault("budget", BUDGETS.get(name, fitting.TrainingBudget()))
    return SessionRecommender(name, **options)
