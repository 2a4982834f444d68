"""Atten-Mixer against the reference code's own numbers (../shared/reference/attenmixer: README.md, fixture.json)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualrec.errors import DualrecError
from dualrec.ranking.baselines.attenmixer import (
    PO4ISR_ML1M,
    AttenMixer,
    AttenMixerOptions,
    SessionBatch,
    build_model,
    session_batch,
    target_batch,
    unit_rows,
)
from tests.reference_fixtures import catalogue, missing, one_adam_step, read_arrays, read_fixture, reference_folder

REFERENCE = reference_folder("attenmixer")
ATOL = 1e-5
N_ITEMS = 12
WIDTH = 6  # the longest input of each split (5) + 1
# The reference's module prefixes -> this module's; its three unused layers have no counterpart.
PREFIXES = {
    "model.embedding.": "embedding.",
    "model.mattn.linear_zero.": "attention.query.",
    "model.mattn.linear_one.": "attention.key.",
    "model.mattn.linear_two.": "attention.value.",
    "model.mattn.last_layernorm.": "attention.layer_norm.",
    "model.linear_q.": "level_queries.",
    "model.linear_transform.": "session_transform.",
}
UNUSED = ("model.mattn.linear_three.", "model.mattn.linear_four.", "model.mattn.linear_five.")
# The training step ran with every dropout at 0 (README); in eval dropout does nothing.
FIXTURE_OPTIONS = AttenMixerOptions(dim=16, dropout=0.0, attention_dropout=0.0)

pytestmark = missing(REFERENCE, "Atten-Mixer")


def our_name(reference_name: str) -> str | None:
    """This module's name of a reference parameter, None for the unused layers."""
    if reference_name.startswith(UNUSED):
        return None
    prefix = next(prefix for prefix in PREFIXES if reference_name.startswith(prefix))
    return PREFIXES[prefix] + reference_name.removeprefix(prefix)


def by_our_names(arrays: dict[str, np.ndarray], group: str = "") -> dict[str, np.ndarray]:
    """The arrays of one group (grad/, after_step/, or the weights) under this module's names, unused layers left out."""
    named = {our_name(key.removeprefix(group)): value for key, value in arrays.items() if key.startswith(group)}
    named.pop(None, None)
    return named


@pytest.fixture(scope="module")
def fixture() -> dict:
    return read_fixture(REFERENCE)


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    return read_arrays(REFERENCE, "outputs.npz")


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return read_arrays(REFERENCE, "weights.npz")


def reference_model(weights: dict[str, np.ndarray]) -> AttenMixer:
    model = build_model(N_ITEMS, FIXTURE_OPTIONS)
    model.load_state_dict({name: torch.from_numpy(value) for name, value in by_our_names(weights).items()}, strict=True)
    return model.eval()


def held_out_batch(fixture: dict, width: int = WIDTH) -> SessionBatch:
    return session_batch(catalogue(fixture["fixture"]["test_examples"]["inputs"]), N_ITEMS, width)


def training_batch(fixture: dict) -> tuple[SessionBatch, torch.Tensor]:
    examples = fixture["fixture"]["train_examples"]
    targets = target_batch(catalogue([examples["targets"]])[0], N_ITEMS)
    return session_batch(catalogue(examples["inputs"]), N_ITEMS, WIDTH), targets


@torch.no_grad()
def check_forward(model: AttenMixer, batch: SessionBatch, outputs: dict, stage: str) -> None:
    """Every intermediate the fixture holds for the held-out batch at one stage (before / after the step)."""
    states = model.position_states(batch)
    queries = model.multi_level_queries(states, batch.mask)
    readout, weights = model.attention(queries, states, batch.mask)
    session = model.session_representation(batch)
    expected = {
        "seq_hidden": states,
        "hts_normed": queries,
        "attn_alpha": weights,
        "attn_readout": readout,
        "session_repr": session,
        "session_repr_normed": unit_rows(session),
        "scores": model.scores(batch),
    }
    for key, got in expected.items():
        np.testing.assert_allclose(got.numpy(), outputs[f"test_{stage}_{key}"], atol=ATOL, err_msg=key)


def test_options_defaults_are_the_references(fixture: dict) -> None:
    hyper = fixture["hyperparameters"]
    defaults = AttenMixerOptions()
    assert defaults.dim == 256  # the fixture changed hiddenSize to 16
    assert (defaults.heads, defaults.last_k, defaults.l_p) == (hyper["heads"], hyper["last_k"], hyper["l_p"])
    assert (defaults.norm, defaults.scale, defaults.dropout) == (hyper["norm"], hyper["scale"], hyper["dropout"])
    assert (defaults.learning_rate, defaults.l2, defaults.batch_size) == (hyper["lr"], hyper["l2"], hyper["batchSize"])
    assert (defaults.lr_dc_step, defaults.lr_dc, defaults.attention_dropout) == (hyper["lr_dc_step"], hyper["lr_dc"], 0.1)
    assert (PO4ISR_ML1M.dim, PO4ISR_ML1M.heads, PO4ISR_ML1M.l_p, PO4ISR_ML1M.batch_size) == (32, 2, 10, 64)


def test_name_map_covers_every_used_reference_parameter(fixture: dict, weights: dict) -> None:
    model = reference_model(weights)
    ours = dict(model.named_parameters())
    mapped = [(our_name(parameter["name"]), parameter["shape"]) for parameter in fixture["parameters"]]
    assert sorted(name for name, _ in mapped if name) == sorted(ours)
    for name, shape in mapped:
        assert name is None or tuple(ours[name].shape) == tuple(shape)


def test_left_out_layers_are_untouched_by_the_step(outputs: dict, weights: dict) -> None:
    unused = [name for name in weights if name.startswith(UNUSED)]
    assert len(unused) == 3
    for name in unused:
        assert f"grad/{name}" not in outputs
        np.testing.assert_array_equal(outputs[f"after_step/{name}"], weights[name])


@pytest.mark.parametrize("split", ["test", "train"])
def test_session_batch_is_the_references(fixture: dict, outputs: dict, split: str) -> None:
    inputs = fixture["fixture"][f"{split}_examples"]["inputs"]
    batch = session_batch(catalogue(inputs), N_ITEMS)  # the default width is the longest + 1 = WIDTH here
    np.testing.assert_array_equal(batch.inputs.numpy(), outputs[f"{split}_inputs_padded"])
    np.testing.assert_array_equal(batch.mask.numpy(), outputs[f"{split}_mask"])
    np.testing.assert_array_equal(batch.items.numpy(), outputs[f"{split}_items"])
    np.testing.assert_array_equal(batch.alias_inputs.numpy(), outputs[f"{split}_alias_inputs"])
    np.testing.assert_array_equal((batch.items != 0).sum(1).numpy() + 1, outputs[f"{split}_n_node"])
    np.testing.assert_array_equal(np.array(fixture["fixture"][f"{split}_examples"]["targets"]), outputs[f"{split}_targets"])


def test_session_batch_refuses_bad_histories_and_widths() -> None:
    batch = session_batch([np.array([-1, 4, 2, 4]), [0]], N_ITEMS, width=5)
    np.testing.assert_array_equal(batch.inputs.numpy(), [[5, 3, 5, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.items.numpy(), [[3, 5, 0], [1, 0, 0]])
    np.testing.assert_array_equal(batch.alias_inputs.numpy(), [[1, 0, 1, 2, 2], [0, 1, 1, 1, 1]])
    with pytest.raises(DualrecError, match="no padding slot"):
        session_batch([[1, 2, 3]], N_ITEMS, width=3)
    with pytest.raises(DualrecError, match="cannot hold"):
        session_batch([[1, 2, 3]], N_ITEMS, width=2)
    with pytest.raises(DualrecError, match="no catalogue movie"):
        session_batch([[-1]], N_ITEMS)
    with pytest.raises(DualrecError, match="outside the catalogue"):
        session_batch([[N_ITEMS]], N_ITEMS)


def test_bad_options_are_refused() -> None:
    with pytest.raises(DualrecError, match="heads must divide dim"):
        AttenMixerOptions(dim=16, heads=3)
    with pytest.raises(DualrecError, match="dropout"):
        AttenMixerOptions(dropout=1.0)
    with pytest.raises(DualrecError, match="at least one item"):
        build_model(0)


def test_forward_before_the_step(fixture: dict, outputs: dict, weights: dict) -> None:
    check_forward(reference_model(weights), held_out_batch(fixture), outputs, "before")


def test_the_padding_width_changes_the_scores(fixture: dict, outputs: dict, weights: dict) -> None:
    model = reference_model(weights)
    with torch.no_grad():
        wider = model.scores(held_out_batch(fixture, WIDTH + 3))
    np.testing.assert_allclose(wider.numpy(), outputs["test_before_scores_extra_pad3"], atol=ATOL)
    assert np.abs(wider.numpy() - outputs["test_before_scores"]).max() > 1e-3


def test_training_scores_loss_and_every_gradient(fixture: dict, outputs: dict, weights: dict) -> None:
    model = reference_model(weights).train()
    batch, _ = training_batch(fixture)
    with torch.no_grad():
        np.testing.assert_allclose(model.scores(batch).numpy(), outputs["train_scores_before_step"], atol=ATOL)
    loss = one_adam_step(model, *training_batch(fixture))
    assert loss.item() == pytest.approx(float(outputs["train_loss"]), abs=ATOL)
    gradients = by_our_names(outputs, "grad/")
    assert set(gradients) == set(dict(model.named_parameters()))
    for name, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.grad.numpy(), gradients[name], atol=ATOL, err_msg=name)


def test_one_adam_step(fixture: dict, outputs: dict, weights: dict) -> None:
    model = reference_model(weights)
    one_adam_step(model, *training_batch(fixture))
    after_step = by_our_names(outputs, "after_step/")
    for name, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.detach().numpy(), after_step[name], atol=ATOL, err_msg=name)
    check_forward(model, held_out_batch(fixture), outputs, "after")


def test_dropout_acts_in_training_only(fixture: dict, weights: dict) -> None:
    model = build_model(N_ITEMS, AttenMixerOptions(dim=16))
    model.load_state_dict(reference_model(weights).state_dict())
    batch = held_out_batch(fixture)
    with torch.no_grad():
        evaluated = model.eval().scores(batch)
        torch.manual_seed(0)
        trained = model.train().scores(batch)
    np.testing.assert_allclose(evaluated.numpy(), reference_model(weights).scores(batch).detach().numpy(), atol=1e-7)
    assert not torch.allclose(evaluated, trained)
