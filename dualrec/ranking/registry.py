"""The systems `dualrec evaluate --systems` can name, and how each is made ready to score.

SYSTEMS maps a name to "module:factory"; `factory(name)` returns an unfitted Recommender (or CandidateRanker), which
`load_system` fits on the training users. Modules are imported only when their system is asked for, so optional extras
(RecBole) load only when used. The LSTM is not here: it is trained by `dualrec train lstm` and loaded from its folder.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError
from dualrec.ranking.base import CandidateRanker, Recommender

LSTM = "lstm"
HYBRID = "hybrid"
NIR = "nir"
SYSTEMS: dict[str, str] = {
    "mostpop": "dualrec.ranking.baselines.mostpop:MostPop",
    "sknn": "dualrec.ranking.baselines.sknn:SKNN",  # PO4ISR's session-kNN (the source of the poster's "SLIM" row)
    **dict.fromkeys(
        ("slim", "fpmc", "narm", "stamp", "gru4rec", "sasrec"), "dualrec.ranking.baselines.recbole_models:recbole_recommender"
    ),
    **dict.fromkeys(("gcegnn", "hide", "mcprn", "attenmixer"), "dualrec.ranking.baselines.session_models:session_recommender"),
    "unisrec": "dualrec.ranking.baselines.unisrec_model:unisrec_recommender",  # item text + SASRec (RecBole), from scratch
    HYBRID: "dualrec.ranking.hybrid:registered",  # the LSTM's top N re-ranked by an LLM, on the LSTM of lstm_dir
    NIR: "dualrec.ranking.nir:registered",  # zero-shot prompting of an LLM over a candidate set (a CandidateRanker)
}


def system_names() -> list[str]:
    return [LSTM, *SYSTEMS]


def new_system(name: str) -> Recommender | CandidateRanker:
    """An unfitted registered system."""
    if name not in SYSTEMS:
        raise DualrecError(f"Unknown system {name!r}; choose from {', '.join(system_names())}.")
    module, factory = SYSTEMS[name].split(":")
    return getattr(importlib.import_module(module), factory)(name)


def load_system(
    name: str, dataset: Dataset, lstm_dir: str | Path | None = None, budget_minutes: float | None = None
) -> Recommender | CandidateRanker:
    """A system ready to score `dataset`'s cases: the trained LSTM (refused if trained on other data or another
    split), or a registered system fitted on the training users (a trained one within `budget_minutes`, if given)."""
    if name == LSTM:
        from dualrec.ranking.lstm import load_lstm  # TensorFlow loads only when needed

        return load_lstm(lstm_dir, dataset, strict=True)
    return fitted(new_system(name), dataset, lstm_dir, budget_minutes)


def fitted(
    system: Recommender | CandidateRanker,
    dataset: Dataset,
    lstm_dir: str | Path | None = None,
    budget_minutes: float | None = None,
) -> Recommender | CandidateRanker:
    """An unfitted registered system (new_system's, or one made with other options) fitted on the training users,
    within `budget_minutes` if given."""
    if hasattr(system, "lstm_dir"):  # a system built on the trained LSTM (the hybrid)
        system.lstm_dir = lstm_dir
    if budget_minutes is not None and hasattr(system, "budget"):
        system.budget = dataclasses.replace(system.budget, max_minutes=budget_minutes)
    system.fit(dataset)
    return system
