"""The session models (GCE-GNN, HIDE, MCPRN, Atten-Mixer) trained and scored on the generated fixture: tiny models,
budgets of seconds (their faithfulness to the references is tests/test_<model>_reference.py's)."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable

import numpy as np
import pytest
import torch

from dualrec.config import DataConfig
from dualrec.data.dataset import PAD_ITEM, load_dataset
from dualrec.errors import ConfigError, DualrecError
from dualrec.evaluation.harness import evaluate, evaluate_system, top_lists, watched_before
from dualrec.ranking.baselines.fitting import TrainingBudget, early_stopping
from dualrec.ranking.baselines.session_models import (
    ARCHITECTURES,
    BUDGETS,
    SCORE_BATCH,
    ModelMismatchError,
    SessionRecommender,
    session_recommender,
)
from dualrec.ranking.registry import load_system, new_system, system_names

TINY = {
    "gcegnn": {"dim": 8},
    "hide": {"dim": 8},
    "mcprn": {"dim": 8, "purposes": 2, "batch_size": 64},
    "attenmixer": {"dim": 8},
}
A_FEW_STEPS = TrainingBudget(max_epochs=1, max_minutes=0.01)
ONE_EPOCH = TrainingBudget(max_epochs=1, max_minutes=5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(dataset) -> Callable[[str], SessionRecommender]:
    """Each model, tiny, fitted within A_FEW_STEPS when a test first asks for it (then kept for the module)."""

    @functools.cache
    def fitted(name: str) -> SessionRecommender:
        system = session_recommender(name, budget=A_FEW_STEPS, params=TINY[name])
        system.fit(dataset)
        return system

    return fitted


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_model_trains_within_its_budget_and_scores_the_catalogue(name, trained, dataset):
    system = trained(name)
    assert system.training["epochs"] == 1 and system.training["stopped_by"] in ("budget", "max_epochs")  # a fast machine
    assert system.training["device"] == ("cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name())
    assert len(system.training["val_ndcg@10"]) == 1 and system.training["samples"] > len(dataset.windows["train"])
    cases = dataset.cases["test"]
    scores = system.score(cases.histories, cases.users)
    assert scores.shape == (len(cases), dataset.catalogue_size) and np.isfinite(scores).all()
    assert (scores.std(axis=1) > 0).all()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_trained_model_is_cached_and_reloaded_with_the_same_scores(name, trained, dataset):
    cases = dataset.cases["test"]
    reloaded = session_recommender(name, budget=A_FEW_STEPS, params=TINY[name])
    reloaded.fit(dataset)
    assert reloaded.training["loaded_from"] == str(trained(name).cache_file(dataset))
    np.testing.assert_array_equal(reloaded.score(cases.histories, cases.users), trained(name).score(cases.histories, cases.users))
    others = [
        session_recommender(name, budget=A_FEW_STEPS, params=TINY[name], seed=1),
        session_recommender(name, budget=ONE_EPOCH, params=TINY[name]),
        session_recommender(name, budget=A_FEW_STEPS, params=TINY[name] | {"learning_rate": 0.01}),
    ]
    assert len({trained(name).cache_file(dataset), *(other.cache_file(dataset) for other in others)}) == 4


def test_short_histories_score_and_the_harness_excludes_watched_movies(trained, dataset):
    system = trained("mcprn")
    cases = dataset.cases["test"]
    short = np.where(np.arange(cases.histories.shape[1]) >= cases.histories.shape[1] - 2, cases.histories, PAD_ITEM)
    assert np.isfinite(system.score(short[:3], cases.users[:3])).all()
    scores = system.score(cases.histories, cases.users)
    watched = watched_before(dataset, cases)
    assert np.isfinite(scores[watched]).all()  # the system scores watched movies; the harness leaves them out
    lists = top_lists(scores, watched)
    assert not np.take_along_axis(watched, lists, axis=1).any()
    entries = evaluate_system(system, dataset, protocols=("full", "sampled-20"), samples=50)
    assert [entry["protocol"] for entry in entries] == ["full", "sampled-20"]
    assert entries[0]["options"]["model"] == "MCPRN" and entries[0]["options"]["options"]["dim"] == 8


def test_the_same_seed_gives_the_same_model(dataset):
    cases = dataset.cases["val"]
    scores = []
    for seed in (42, 42, 7):
        params = TINY["attenmixer"] | {"batch_size": 512}  # an epoch of 25 steps
        system = session_recommender("attenmixer", budget=ONE_EPOCH, params=params, seed=seed, use_cache=False)
        system.fit(dataset)
        assert system.training["stopped_by"] == "max_epochs"
        scores.append(system.score(cases.histories, cases.users))
    np.testing.assert_array_equal(scores[0], scores[1])
    assert not np.allclose(scores[0], scores[2])


def test_early_stopping_keeps_the_best_epoch_and_stops_on_patience_or_budget():
    model = torch.nn.Linear(1, 1)
    start = model.weight.item()
    validation = iter([0.1, 0.3, 0.2, 0.25, 0.9])

    def run_epoch(deadline: float) -> float:
        with torch.no_grad():
            model.weight += 1.0
        return 0.0

    record = early_stopping("toy", model, TrainingBudget(max_epochs=10, patience=2), run_epoch, lambda: next(validation))
    cpu_seconds = record.pop("cpu_seconds")
    assert record == {"epochs": 4, "best_epoch": 2, "stopped_by": "patience", "val_ndcg@10": [0.1, 0.3, 0.2, 0.25]}
    assert 0 <= cpu_seconds < 60
    assert model.weight.item() == pytest.approx(start + 2) and not model.training  # epoch 2's weights, in eval mode
    record = early_stopping("toy", model, TrainingBudget(max_epochs=10, max_minutes=0), run_epoch, lambda: 0.5)
    assert record["epochs"] == 1 and record["stopped_by"] == "budget" and model.weight.item() == pytest.approx(start + 3)


def test_registered_with_po4isr_settings_and_a_budget_from_the_command_line(dataset):
    assert {"gcegnn", "hide", "mcprn", "attenmixer"} <= set(system_names())
    mcprn = new_system("mcprn")
    assert mcprn.budget == BUDGETS["mcprn"] and mcprn.params == {}
    assert (mcprn.model_options.dim, mcprn.model_options.purposes, mcprn.model_options.tau) == (128, 4, 0.1)
    assert new_system("gcegnn").model_options.dropout_local == 0.5 and new_system("hide").model_options.dim == 128
    results = evaluate(["attenmixer"], dataset, protocols=["full"], samples=20, baseline_minutes=0)
    (entry,) = results["results"]
    assert entry["options"]["options"]["dim"] == 32 and entry["options"]["options"]["heads"] == 2
    assert entry["options"]["options"]["l_p"] == 10 and entry["options"]["tuned"] == "PO4ISR ML-1M"
    assert entry["options"]["budget"]["max_minutes"] == 0 and entry["options"]["training"]["stopped_by"] == "budget"
    assert load_system("attenmixer", dataset, budget_minutes=0).training["loaded_from"]  # the same settings: cached


def test_a_model_trained_on_other_data_is_refused(trained, dataset, ml_dir):
    other = load_dataset(ml_dir, DataConfig(split_seed=7))
    system = session_recommender("mcprn", budget=A_FEW_STEPS, params=TINY["mcprn"])
    assert system.cache_file(other) != trained("mcprn").cache_file(dataset)
    other_file = system.cache_file(other)
    other_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(trained("mcprn").cache_file(dataset), other_file)  # a file trained on `dataset`, where `other`'s goes
    try:
        with pytest.raises(ModelMismatchError, match="MCPRN trained on other data options .* train it on this data"):
            system.fit(other)
    finally:
        other_file.unlink()
    assert system.model is None


def test_bad_budgets_options_and_histories_are_refused_clearly(trained, dataset):
    with pytest.raises(ConfigError, match="Invalid training budget options: max_epochs must be at least 1, not 0"):
        TrainingBudget(max_epochs=0)
    with pytest.raises(ConfigError, match="max_minutes must be at least 0, not -1"):
        TrainingBudget(max_minutes=-1)
    with pytest.raises(ConfigError, match="Unknown MCPRN option 'dimension'; choose from .*lr_dc, dim, purposes, tau"):
        session_recommender("mcprn", params={"dimension": 8})
    with pytest.raises(ConfigError, match="Invalid GCE-GNN options: dim must be at least 1, not 0"):
        session_recommender("gcegnn", params={"dim": 0})
    with pytest.raises(DualrecError, match="Unknown session model 'sr-gnn'; choose from gcegnn, hide, mcprn, attenmixer"):
        SessionRecommender("sr-gnn")
    with pytest.raises(DualrecError, match="HIDE has not been trained: call fit"):
        session_recommender("hide").score(dataset.cases["test"].histories, dataset.cases["test"].users)
    histories = np.resize(dataset.cases["test"].histories, (SCORE_BATCH + 10, dataset.config.window))
    histories[SCORE_BATCH + 5] = PAD_ITEM
    for name, title in (("mcprn", "MCPRN"), ("gcegnn", "GCE-GNN")):
        with pytest.raises(DualrecError, match=f"History {SCORE_BATCH + 5} has no catalogue movie; {title} needs at least one"):
            trained(name).score(histories, np.zeros(len(histories), np.int32))
    histories[SCORE_BATCH + 5, -1] = dataset.catalogue_size
    with pytest.raises(DualrecError, match=f"History {SCORE_BATCH + 5} holds item 1000, outside the catalogue's 0..999"):
        trained("attenmixer").score(histories, np.zeros(len(histories), np.int32))
