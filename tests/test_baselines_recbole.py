"""The RecBole baselines on the generated fixture: tiny models, one epoch each (RecBole is an optional extra)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("recbole") is None:
    pytest.skip("RecBole is an optional extra: pip install --no-deps -r requirements-baselines.txt", allow_module_level=True)

import torch  # noqa: E402

from dualrec.data.dataset import PAD_ITEM, prefix_windows  # noqa: E402
from dualrec.errors import DualrecError  # noqa: E402
from dualrec.ranking.baselines.recbole_data import write_benchmark  # noqa: E402
from dualrec.ranking.baselines.recbole_models import (  # noqa: E402
    BUDGETS,
    DATASET_NAME,
    MODELS,
    RecBoleRecommender,
    TrainingBudget,
    build_train_set,
    import_recbole,
    recbole_recommender,
)

TINY = {"embedding_size": 16, "hidden_size": 16, "inner_size": 32, "train_batch_size": 512}
ONE_EPOCH = TrainingBudget(max_epochs=1, max_minutes=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Fitted(dict):
    """Each baseline, fitted on first use and kept for the module."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def __missing__(self, name: str) -> RecBoleRecommender:
        self[name] = recbole_recommender(name, budget=ONE_EPOCH, params=TINY)
        self[name].fit(self.dataset)
        return self[name]


@pytest.fixture(scope="module")
def trained(dataset) -> Fitted:
    return Fitted(dataset)


FAST = ("gru4rec", "fpmc")  # a few seconds each; the others run with --run-slow
ALL_MODELS = [name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in MODELS]


def test_anomaly_detection_is_off_after_import():
    import_recbole()
    assert not torch.is_anomaly_enabled()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_each_model_scores_the_catalogue(name, trained, dataset):
    cases = dataset.cases["test"]
    scores = trained[name].score(cases.histories, cases.users)
    assert scores.shape == (len(cases), dataset.catalogue_size)
    assert np.isfinite(scores).all()
    assert trained[name].training["val_ndcg@10"]


def recbole_train_set(model: RecBoleRecommender, dataset, folder):
    """RecBole's own parsing of the training files, as fit() built it, and the samples written into them."""
    recbole = import_recbole()
    samples = prefix_windows(dataset, dataset.split_users["train"])
    write_benchmark(samples, dataset.catalogue_size, folder / DATASET_NAME, DATASET_NAME)
    return build_train_set(recbole, model.recbole_config(recbole, str(folder), dataset.config.window)), samples


@pytest.mark.parametrize("name", ["gru4rec", "fpmc", pytest.param("sasrec", marks=pytest.mark.slow)])
def test_scores_match_recbole_own_input_pipeline(name, trained, dataset, tmp_path):
    """Our histories, converted and mapped back to catalogue columns, score exactly as RecBole's own parsed samples."""
    model = trained[name]
    train_set, samples = recbole_train_set(model, dataset, tmp_path)
    rows = np.arange(0, len(samples), 97)  # short prefixes and full windows
    assert (samples.histories[rows] == PAD_ITEM).any() and (samples.histories[rows] != PAD_ITEM).all(axis=1).any()
    interaction = train_set[rows]
    with torch.no_grad():
        theirs = model.model.full_sort_predict(interaction).numpy()[:, model.item_ids]
    np.testing.assert_allclose(model.score(samples.histories[rows], samples.users[rows]), theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_slim_folds_a_history_in_as_recbole_scores_a_training_user(trained, dataset, tmp_path):
    model = trained["slim"]
    train_set, samples = recbole_train_set(model, dataset, tmp_path)
    recbole_users = np.arange(1, 6)
    users = train_set.id2token("user_id", recbole_users).astype(int)
    model.model.interaction_matrix = train_set.inter_matrix(form="csr").tolil()
    interaction = import_recbole().Interaction({"user_id": torch.from_numpy(recbole_users)})
    theirs = model.model.full_sort_predict(interaction).numpy().reshape(len(users), -1)[:, model.item_ids]
    items = [samples.targets[samples.users == user] for user in users]  # a user's row: every item after the first
    histories = np.stack([np.pad(row, (max(map(len, items)) - len(row), 0), constant_values=PAD_ITEM) for row in items])
    np.testing.assert_allclose(model.score(histories, users), theirs, rtol=1e-5, atol=1e-6)


def test_fpmc_scores_unseen_users_with_the_mean_user(trained, dataset):
    fpmc = trained["fpmc"].model
    cases = dataset.cases["test"]
    scores = trained["fpmc"].score(cases.histories, cases.users)
    unseen = trained["fpmc"].score(cases.histories, np.full(len(cases), 10**9))
    np.testing.assert_array_equal(scores, unseen)
    trained_user = trained["fpmc"].score(cases.histories[:1], dataset.split_users["train"][:1])
    assert not np.allclose(trained_user, scores[:1])
    mean_user = fpmc.UI_emb.weight[1:].mean(dim=0)
    with torch.no_grad():
        expected = (mean_user @ fpmc.IU_emb.weight.T).numpy()[trained["fpmc"].item_ids]
        last = trained["fpmc"].item_ids[cases.histories[:, -1]]
        expected = expected + (fpmc.LI_emb.weight[last] @ fpmc.IL_emb.weight.T).numpy()[:, trained["fpmc"].item_ids]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_short_and_empty_histories_score(name, trained, dataset):
    """Any history of 0 to `window` movies scores; watched movies are not excluded (the harness does that)."""
    history = dataset.cases["test"].histories[:1]
    short = np.where(np.arange(history.shape[1]) >= history.shape[1] - 3, history, PAD_ITEM)
    empty = np.full_like(history, PAD_ITEM)
    scores = trained[name].score(np.concatenate([short, empty]), np.array([-1, -1]))
    assert np.isfinite(scores).all() and len(np.unique(scores[0])) > 1


@pytest.mark.slow
def test_same_seed_same_scores_and_another_seed_differs(dataset, trained):
    cases = dataset.cases["val"]
    again = recbole_recommender("gru4rec", budget=ONE_EPOCH, params=TINY, use_cache=False)
    again.fit(dataset)
    np.testing.assert_array_equal(
        again.score(cases.histories, cases.users), trained["gru4rec"].score(cases.histories, cases.users)
    )
    other = recbole_recommender("gru4rec", budget=ONE_EPOCH, params=TINY, seed=7, use_cache=False)
    other.fit(dataset)
    assert not np.allclose(other.score(cases.histories, cases.users), trained["gru4rec"].score(cases.histories, cases.users))


@pytest.mark.parametrize("name", ["fpmc", pytest.param("slim", marks=pytest.mark.slow)])
def test_a_trained_model_is_cached_and_reloaded(name, trained, dataset):
    cases = dataset.cases["test"]
    reloaded = recbole_recommender(name, budget=ONE_EPOCH, params=TINY)
    reloaded.fit(dataset)
    assert reloaded.training["loaded_from"] == str(trained[name].cache_file(dataset))
    np.testing.assert_array_equal(reloaded.score(cases.histories, cases.users), trained[name].score(cases.histories, cases.users))
    assert recbole_recommender(name, budget=ONE_EPOCH, params=TINY, seed=1).cache_file(dataset) != trained[name].cache_file(
        dataset
    )


def test_budget_and_patience_stop_training(dataset):
    quick = recbole_recommender("fpmc", budget=TrainingBudget(max_epochs=10, max_minutes=0), params=TINY, use_cache=False)
    quick.fit(dataset)
    assert quick.training["epochs"] == 1 and quick.training["stopped_by"] == "budget"
    patient = recbole_recommender(
        "stamp",
        budget=TrainingBudget(max_epochs=4, max_minutes=5, patience=1),
        params=TINY | {"learning_rate": 0.0},
        use_cache=False,
    )
    patient.fit(dataset)
    assert patient.training["epochs"] == 2 and patient.training["stopped_by"] == "patience"


def test_prefix_windows_hold_every_training_window(dataset):
    users = dataset.split_users["train"]
    samples = prefix_windows(dataset, users)
    lengths = np.array([len(dataset.user_items(u)) for u in users])
    assert len(samples) == (lengths - 1).sum()
    assert ((samples.histories != PAD_ITEM).sum(axis=1) >= 1).all()
    windows = dataset.windows["train"]
    as_rows = {tuple(row) for row in np.column_stack([samples.users, samples.histories, samples.targets])}
    assert all(tuple(row) in as_rows for row in np.column_stack([windows.users, windows.histories, windows.targets]))


def test_unknown_and_untrained_models_fail_clearly():
    with pytest.raises(ValueError, match="gru4rec"):
        recbole_recommender("gcegnn")
    with pytest.raises(DualrecError, match="fit"):
        recbole_recommender("narm").score(np.zeros((1, 30), np.int32), np.array([1]))


def test_registered_for_the_harness(dataset):
    from dualrec.evaluation.harness import evaluate_system
    from dualrec.ranking.registry import new_system, system_names

    assert set(MODELS) <= set(system_names())
    fpmc = new_system("fpmc")
    assert fpmc.budget == BUDGETS["fpmc"] and new_system("sasrec").params == {"train_batch_size": 512}
    fpmc.budget, fpmc.params = ONE_EPOCH, TINY  # the registered defaults, made tiny for the fixture
    fpmc.fit(dataset)
    entries = evaluate_system(fpmc, dataset, protocols=("full", "sampled-20"), samples=50)
    assert [entry["protocol"] for entry in entries] == ["full", "sampled-20"]
    assert entries[0]["options"]["model"] == "FPMC" and entries[0]["options"]["training"]["epochs"] == 1


def test_a_budget_in_minutes_from_the_command_line_bounds_training(dataset):
    from dualrec.ranking.registry import load_system

    stamp = load_system("stamp", dataset, budget_minutes=0)  # one step of the first epoch, then the budget is spent
    assert stamp.budget == TrainingBudget(
        max_epochs=BUDGETS["stamp"].max_epochs, max_minutes=0, patience=BUDGETS["stamp"].patience
    )
    assert stamp.training["epochs"] == 1 and stamp.training["stopped_by"] == "budget" and stamp.training["device"] == "cpu"
    assert stamp.device.type == "cpu" and stamp.score(
        dataset.cases["test"].histories[:3], dataset.cases["test"].users[:3]
    ).shape == (3, dataset.catalogue_size)
