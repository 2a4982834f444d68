"""The Stage 1 LSTM on the generated fixture: shapes, masking, training (both engines), save/load, top-k, determinism;
the torch engine's mirror against the Keras model: outputs and every gradient."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from dualrec.config import DataConfig, LSTMConfig
from dualrec.data.dataset import load_dataset, pad_history
from dualrec.data.features import catalogue_features
from dualrec.errors import DualrecError
from dualrec.ranking.lstm import (
    MissingModelError,
    ModelMismatchError,
    StepFeatures,
    build_model,
    history_mask,
    load_lstm,
    train_lstm,
)

# Small enough to train in seconds; the shapes that matter (window, catalogue, features) are the real ones.
TINY = LSTMConfig(item_dim=8, title_dim=4, lstm_units=(16, 8), epochs=3, batch_size=32, seed=1)


@pytest.fixture(scope="module")
def two_window_dataset(ml_dir):
    """The generated folder with at most two training windows per user, so TINY trains in seconds."""
    return load_dataset(ml_dir, DataConfig(max_windows_per_user=2))


@pytest.fixture(scope="module")
def trained(two_window_dataset):
    return train_lstm(two_window_dataset, TINY, verbose=0)


def test_output_is_a_distribution_over_the_catalogue(trained, two_window_dataset):
    probabilities = trained.probabilities(two_window_dataset.cases["test"].histories)
    assert probabilities.shape == (len(two_window_dataset.cases["test"]), two_window_dataset.catalogue_size)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)


def test_a_short_history_scores_the_same_padded_or_not(trained):
    items = np.array([5, 17, 3, 99], dtype=np.int32)
    model = trained.model
    bare = model(items[None], training=False).numpy()
    for length in (10, 30):
        padded = model(pad_history(items, length)[None], training=False).numpy()
        np.testing.assert_allclose(bare, padded, atol=1e-6)
    assert trained.top_k(items, 1).items[0] == trained.top1(pad_history(items, 30)[None])[0]


def test_catalogue_tables_travel_inside_the_model(trained, two_window_dataset):
    layer = trained.model.get_layer("step_features")
    features = catalogue_features(two_window_dataset)
    assert isinstance(layer, StepFeatures)
    np.testing.assert_array_equal(layer.title_table.numpy(), features.title_tokens)
    np.testing.assert_array_equal(layer.genre_table.numpy(), features.genres)
    assert not any("title_tokens" in w.path or w.path.endswith("genres") for w in trained.model.trainable_weights)


def test_public_variant_adds_its_dense_layers(two_window_dataset):
    model = build_model(dataclasses.replace(TINY, variant="public"), catalogue_features(two_window_dataset))
    names = {layer.name for layer in model.layers}
    assert "hidden" in names and model.get_layer("step_features").genre_dense is not None
    assert model(pad_history([1, 2], 30)[None]).shape == (1, two_window_dataset.catalogue_size)


def test_training_lowers_the_loss_and_records_what_it_did(trained, two_window_dataset):
    losses = [epoch["loss"] for epoch in trained.metadata["history"]]
    assert losses[-1] < losses[0]
    meta = trained.metadata
    assert meta["data"]["fingerprint"] == two_window_dataset.fingerprint and meta["seed"] == TINY.seed
    assert (
        meta["train_windows"] == len(two_window_dataset.windows["train"])
        and 1 <= meta["best_epoch"] <= meta["epochs_run"] <= TINY.epochs
    )
    assert {"val_loss", "val_hr@5"} <= set(meta["val"])
    assert meta["lstm"]["engine"] == "torch" and meta["threads"] >= 1 and meta["versions"]["torch"]


def test_save_and_load_give_identical_outputs(trained, two_window_dataset, tmp_path):
    folder = trained.save(tmp_path / "lstm")
    assert {p.name for p in folder.iterdir()} == {"model.keras", "metadata.json", "vocabulary.json"}
    loaded = load_lstm(folder, two_window_dataset, strict=True)
    histories = two_window_dataset.cases["val"].histories
    np.testing.assert_array_equal(loaded.probabilities(histories), trained.probabilities(histories))
    assert loaded.metadata == trained.metadata and loaded.vocabulary == trained.vocabulary


def test_top_k_excludes_the_history_and_sorts_by_probability(trained, two_window_dataset):
    items = two_window_dataset.user_items(int(two_window_dataset.cases["test"].users[0]))
    ranking = trained.top_k(items, k=20)
    assert len(ranking.items) == 20 and not set(ranking.items) & set(items)
    assert np.all(np.diff(ranking.probabilities) <= 0)
    everything = trained.top_k(items, k=20, exclude_watched=False)
    assert everything.probabilities[0] >= ranking.probabilities[0]


def test_batched_top1_matches_single_histories(trained, two_window_dataset):
    histories = two_window_dataset.cases["test"].histories[:8]
    batched = trained.top1(histories)
    single = [trained.top_k(h[h >= 0], 1).items[0] for h in histories]
    np.testing.assert_array_equal(batched, single)
    assert not history_mask(histories, two_window_dataset.catalogue_size)[np.arange(8), batched].any()


def test_bad_histories_are_clear_errors(trained):
    with pytest.raises(DualrecError, match="empty"):
        trained.top_k([])
    with pytest.raises(DualrecError, match="catalogue positions"):
        trained.top_k([-1, 3])


def test_same_seed_same_model(trained, two_window_dataset):
    again = train_lstm(two_window_dataset, TINY, verbose=0)
    for a, b in zip(trained.model.get_weights(), again.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_time_budget_stops_after_one_epoch(two_window_dataset):
    quick = train_lstm(two_window_dataset, dataclasses.replace(TINY, max_minutes=1e-6), verbose=0)
    assert quick.metadata["epochs_run"] == 1 and quick.metadata["stopped_by"] == "time budget"


def test_missing_model_says_how_to_train(tmp_path):
    with pytest.raises(MissingModelError, match="dualrec train lstm"):
        load_lstm(tmp_path / "nothing")


def test_other_data_is_refused_or_warned(trained, two_window_dataset, caplog):
    trained.metadata["data"] = trained.metadata["data"] | {"fingerprint": "0" * 32}
    try:
        with pytest.raises(ModelMismatchError, match="retrain"):
            trained.check_data(two_window_dataset, strict=True)
        with caplog.at_level(logging.WARNING):
            trained.check_data(two_window_dataset, strict=False)
        assert "data files" in caplog.text
        with pytest.raises(ModelMismatchError, match="catalogue"):
            trained.check_data(
                dataclasses.replace(two_window_dataset, catalogue=two_window_dataset.catalogue[::-1]), strict=False
            )
    finally:
        trained.metadata["data"] = trained.metadata["data"] | {"fingerprint": two_window_dataset.fingerprint}


# ---- the torch engine ----------------------------------------------------------------------------------------------


def mixed_histories(dataset) -> np.ndarray:
    """Full windows, short left-padded histories and an empty one."""
    full = dataset.cases["test"].histories[:6]
    short = [pad_history(h[-n:], dataset.config.window) for h, n in zip(full, (1, 4, 29))]
    return np.concatenate([full, np.stack(short), pad_history([], dataset.config.window)[None]]).astype(np.int32)


@pytest.mark.parametrize("variant", ["poster", "public"])
def test_the_torch_mirror_computes_the_keras_model_and_its_gradients(two_window_dataset, variant):
    import tensorflow as tf
    import torch

    from dualrec.ranking.lstm_torch import TorchMirror

    model = build_model(dataclasses.replace(TINY, variant=variant), catalogue_features(two_window_dataset))
    histories = mixed_histories(two_window_dataset)
    targets = np.arange(len(histories), dtype=np.int32) * 7
    with tf.GradientTape() as tape:
        probabilities = model(histories, training=False)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(targets, probabilities))
    keras_gradients = dict(zip((w.path for w in model.trainable_weights), tape.gradient(loss, model.trainable_weights)))

    mirror = TorchMirror(model)
    logits = mirror(torch.from_numpy(histories).long())
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(targets).long()).backward()
    np.testing.assert_allclose(torch.softmax(logits, -1).detach().numpy(), probabilities.numpy(), atol=1e-6)
    mirrored = {
        "item_embedding/embeddings": mirror.item_embedding,
        "title_embedding/embeddings": mirror.title_embedding,
        "genre_dense/kernel": mirror.genre_dense and mirror.genre_dense.kernel,
        "genre_dense/bias": mirror.genre_dense and mirror.genre_dense.bias,
        "lstm_1/lstm_cell/kernel": mirror.lstm_1.kernel,
        "lstm_1/lstm_cell/recurrent_kernel": mirror.lstm_1.recurrent_kernel,
        "lstm_1/lstm_cell/bias": mirror.lstm_1.bias,
        "lstm_2/lstm_cell/kernel": mirror.lstm_2.kernel,
        "lstm_2/lstm_cell/recurrent_kernel": mirror.lstm_2.recurrent_kernel,
        "lstm_2/lstm_cell/bias": mirror.lstm_2.bias,
        "hidden/kernel": mirror.hidden and mirror.hidden.kernel,
        "hidden/bias": mirror.hidden and mirror.hidden.bias,
        "next_item/kernel": mirror.next_item.kernel,
        "next_item/bias": mirror.next_item.bias,
    }
    checked = 0
    for path, gradient in keras_gradients.items():
        name = next(key for key in mirrored if path.endswith(key))
        expected = tf.convert_to_tensor(gradient).numpy()
        np.testing.assert_allclose(mirrored[name].grad.numpy(), expected, atol=1e-6 * max(1.0, np.abs(expected).max()))
        checked += 1
    assert checked == len(model.trainable_weights) == sum(p is not None for p in mirrored.values())


def test_the_lstm_steps_backward_is_autograds():
    import torch

    from dualrec.ranking.lstm_torch import LstmSequence

    generator = torch.Generator().manual_seed(0)
    zx = torch.randn(5, 3, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    w_hh = torch.randn(2, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    keep = torch.tensor([[0, 1, 1], [0, 0, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=torch.float64)[..., None]
    for mask in (None, keep):
        assert torch.autograd.gradcheck(lambda z, w, m=mask: LstmSequence.apply(z, w, m), (zx, w_hh))


def test_sharded_steps_give_the_batchs_gradient(two_window_dataset):
    import torch

    from dualrec.ranking.lstm_torch import ShardedStep, TorchMirror

    model = build_model(dataclasses.replace(TINY, dropout=0.0), catalogue_features(two_window_dataset))
    windows = two_window_dataset.windows["train"]
    items, targets = torch.from_numpy(windows.histories[:33]).long(), torch.from_numpy(windows.targets[:33]).long()
    gradients = []
    for threads in (1, 3):
        step = ShardedStep(TorchMirror(model), threads, seed=0)
        step.gradients(items, targets)
        gradients.append([p.grad for p in step.net.parameters()])
    for one, three in zip(*gradients):
        torch.testing.assert_close(one, three, atol=1e-6, rtol=1e-5)


def test_the_keras_engine_trains_the_same_kind_of_model(two_window_dataset, tmp_path):
    keras_trained = train_lstm(two_window_dataset, dataclasses.replace(TINY, engine="keras", epochs=1), verbose=0)
    folder = keras_trained.save(tmp_path / "keras")
    loaded = load_lstm(folder, two_window_dataset, strict=True)
    assert loaded.metadata["lstm"]["engine"] == "keras" and loaded.metadata["threads"] is None
    assert set(loaded.metadata["val"]) == {"loss", "hr@5", "val_loss", "val_hr@5"}
