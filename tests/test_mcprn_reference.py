"""MCPRN against the reference code's own numbers (../shared/reference/mcprn: README.md, fixture.json)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dualrec.errors import DualrecError
from dualrec.ranking.baselines.mcprn import (
    PO4ISR_ML1M,
    MCPRNOptions,
    build_model,
    session_batch,
    target_batch,
)
from tests.reference_fixtures import catalogue, missing, one_adam_step, read_arrays, read_fixture, reference_folder

REFERENCE = reference_folder("mcprn")
ATOL = 1e-5
N_ITEMS = 12
# The reference's parameter names -> this module's (the PSRU weights have GRUCell's layout, so GRUCell's names).
EMBEDDING_NAMES = {"emb.weight": "item_embedding.weight", "embPurpose.weight": "purpose_embedding.weight"}
PSRU_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}

pytestmark = missing(REFERENCE, "MCPRN")


def our_name(reference_name: str) -> str:
    if reference_name in EMBEDDING_NAMES:
        return EMBEDDING_NAMES[reference_name]
    _, channel, weight = reference_name.split(".")  # purpose_layers.<k>.<weight>
    return f"channels.{channel}.{PSRU_NAMES[weight]}"


def by_our_names(outputs: dict[str, np.ndarray], group: str) -> dict[str, np.ndarray]:
    """The arrays of one group of outputs.npz (grad/, after_step/) under this module's parameter names."""
    return {our_name(key.removeprefix(group)): value for key, value in outputs.items() if key.startswith(group)}


@pytest.fixture(scope="module")
def fixture() -> dict:
    return read_fixture(REFERENCE)


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    return read_arrays(REFERENCE, "outputs.npz")


def reference_model(fixture: dict, tau: float) -> torch.nn.Module:
    hyper = fixture["hyperparameters"]
    options = MCPRNOptions(dim=hyper["item_embedding_dim"], purposes=hyper["purposes"], tau=tau)
    model = build_model(N_ITEMS, options)
    state = {our_name(name): torch.from_numpy(weight) for name, weight in read_arrays(REFERENCE, "weights.npz").items()}
    model.load_state_dict(state, strict=True)
    return model


def check_scores(got: torch.Tensor, expected: np.ndarray) -> None:
    """Scores match to ATOL and rank the items the same way (the README: |s| < 0.06, so the ranking is checked too)."""
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(np.argsort(-got.detach().numpy(), axis=1), np.argsort(-expected, axis=1))


def held_out_inputs(fixture: dict) -> torch.Tensor:
    return session_batch(catalogue(fixture["fixture"]["test_examples"]["inputs"]), N_ITEMS)


def training_batch(fixture: dict) -> tuple[torch.Tensor, torch.Tensor]:
    examples = fixture["fixture"]["train_examples"]
    return session_batch(catalogue(examples["inputs"]), N_ITEMS), target_batch(catalogue([examples["targets"]])[0], N_ITEMS)


def test_options_defaults_are_the_references(fixture: dict) -> None:
    hyper = fixture["hyperparameters"]
    defaults = MCPRNOptions()
    assert (defaults.dim, defaults.purposes, defaults.tau) == (100, 1, 0.1)
    assert (defaults.learning_rate, defaults.l2, defaults.batch_size) == (
        hyper["learning_rate"],
        hyper["l2"],
        hyper["batch_size"],
    )
    assert (defaults.lr_dc_step, defaults.lr_dc) == (hyper["lr_dc_step"], hyper["lr_dc"])
    assert (PO4ISR_ML1M.dim, PO4ISR_ML1M.purposes, PO4ISR_ML1M.tau) == (128, 4, 0.1)


def test_name_map_covers_every_reference_parameter(fixture: dict) -> None:
    model = reference_model(fixture, fixture["hyperparameters"]["tau"])
    ours = dict(model.named_parameters())
    for parameter in fixture["parameters"]:
        assert tuple(ours[our_name(parameter["name"])].shape) == tuple(parameter["shape"])
    assert len(ours) == len(fixture["parameters"])


def test_session_batch_is_the_reference_training_batch(fixture: dict, outputs: dict) -> None:
    examples = fixture["fixture"]["train_examples"]
    batch = session_batch(catalogue(examples["inputs"]), N_ITEMS)
    np.testing.assert_array_equal(batch.numpy().T, outputs["train_seq_LxB"])
    np.testing.assert_array_equal((batch != 0).sum(1).numpy(), outputs["train_lens"])
    np.testing.assert_array_equal(np.array(examples["targets"]), outputs["train_target"].ravel())


def test_session_batch_drops_padding_and_refuses_bad_histories() -> None:
    batch = session_batch([np.array([-1, -1, 3, 0]), [5]], N_ITEMS)
    np.testing.assert_array_equal(batch.numpy(), [[4, 1], [6, 0]])
    with pytest.raises(DualrecError, match="no catalogue movie"):
        session_batch([[1], [-1, -1]], N_ITEMS)
    with pytest.raises(DualrecError, match="outside the catalogue"):
        session_batch([[12]], N_ITEMS)
    with pytest.raises(DualrecError, match="empty batch"):
        session_batch([], N_ITEMS)
    np.testing.assert_array_equal(session_batch([[3, 0]], N_ITEMS, width=4).numpy(), [[4, 1, 0, 0]])
    with pytest.raises(DualrecError, match="width of 1"):
        session_batch([[3, 0]], N_ITEMS, width=1)
    np.testing.assert_array_equal(target_batch(np.array([11, 0]), N_ITEMS).numpy(), [11, 0])
    with pytest.raises(DualrecError, match="Target 12 is outside"):
        target_batch([3, 12], N_ITEMS)


def test_bad_options_are_refused() -> None:
    with pytest.raises(DualrecError, match="tau"):
        MCPRNOptions(tau=0.0)
    with pytest.raises(DualrecError, match="purposes"):
        MCPRNOptions(purposes=0)
    with pytest.raises(DualrecError, match="at least one item"):
        build_model(0)


@torch.no_grad()
def test_router_channels_and_candidate_weights(fixture: dict, outputs: dict) -> None:
    model = reference_model(fixture, fixture["hyperparameters"]["tau"]).eval()
    inputs = held_out_inputs(fixture)
    router = model.router_weights(inputs)
    for number, length in enumerate((inputs != 0).sum(1).tolist()):
        expected = outputs[f"test_before_router_weight_session{number}"]
        np.testing.assert_allclose(router[number, :length].numpy(), expected, atol=ATOL)
    below_cut = (router[inputs != 0] < model.options.router_cut).sum()
    assert below_cut == outputs["n_router_weights_below_0.01_test"] == 31
    np.testing.assert_allclose(model.purpose_states(inputs).numpy(), outputs["test_before_purpose_hidden"], atol=ATOL)
    all_ids = torch.arange(N_ITEMS + 1)
    np.testing.assert_allclose(
        model.candidate_purpose_weights(all_ids).numpy(), outputs["test_before_target_purpose_weight"], atol=ATOL
    )


def test_the_router_cut_changes_the_channel_states(fixture: dict) -> None:
    model = reference_model(fixture, fixture["hyperparameters"]["tau"]).eval()
    uncut = build_model(N_ITEMS, dataclasses.replace(model.options, router_cut=0.0))
    uncut.load_state_dict(model.state_dict())
    with torch.no_grad():
        difference = (model.purpose_states(held_out_inputs(fixture)) - uncut.purpose_states(held_out_inputs(fixture))).abs()
    assert difference.max() > 1e-4


def test_padding_width_does_not_change_scores(fixture: dict) -> None:
    model = reference_model(fixture, fixture["hyperparameters"]["tau"]).eval()
    inputs = held_out_inputs(fixture)
    wider = torch.nn.functional.pad(inputs, (0, 3))
    with torch.no_grad():
        together = model.scores(wider)
        one_at_a_time = torch.cat([model.scores(row[row != 0].unsqueeze(0)) for row in inputs])
    np.testing.assert_allclose(together.numpy(), one_at_a_time.numpy(), atol=1e-7)


@pytest.mark.parametrize("tau", [0.01, 0.1])
def test_scores_before_and_after_one_adam_step(fixture: dict, outputs: dict, tau: float) -> None:
    prefix = "" if tau == fixture["hyperparameters"]["tau"] else f"tau{tau}/"
    model = reference_model(fixture, tau).eval()
    with torch.no_grad():
        check_scores(model.scores(held_out_inputs(fixture)), outputs[f"{prefix}test_before_scores"])
        states = model.purpose_states(held_out_inputs(fixture))
    np.testing.assert_allclose(states.numpy(), outputs[f"{prefix}test_before_purpose_hidden"], atol=ATOL)
    loss = one_adam_step(model, *training_batch(fixture))
    assert loss.item() == pytest.approx(float(outputs[f"{prefix}train_loss"]), abs=ATOL)
    with torch.no_grad():
        check_scores(model.scores(held_out_inputs(fixture)), outputs[f"{prefix}test_after_scores"])


def test_scores_cover_the_padding_id(fixture: dict, outputs: dict) -> None:
    model = reference_model(fixture, fixture["hyperparameters"]["tau"]).eval()
    with torch.no_grad():
        before = model.id_scores(held_out_inputs(fixture))
        np.testing.assert_allclose(before.numpy(), outputs["test_before_scores_all_ids"], atol=ATOL)
        np.testing.assert_array_equal(model.scores(held_out_inputs(fixture)).numpy(), before[:, 1:].numpy())
    one_adam_step(model, *training_batch(fixture))
    with torch.no_grad():
        after = model.id_scores(held_out_inputs(fixture))
    np.testing.assert_allclose(after.numpy(), outputs["test_after_scores_all_ids"], atol=ATOL)


@pytest.mark.parametrize("tau", [0.01, 0.1])
def test_in_batch_training_scores(fixture: dict, outputs: dict, tau: float) -> None:
    prefix = "" if tau == fixture["hyperparameters"]["tau"] else f"tau{tau}/"
    model = reference_model(fixture, tau)
    with torch.no_grad():
        scores = model.in_batch_scores(*training_batch(fixture))
    np.testing.assert_allclose(scores.numpy(), outputs[f"{prefix}train_scores_before_step"], atol=ATOL)


def test_every_gradient_and_parameter_after_the_step(fixture: dict, outputs: dict) -> None:
    model = reference_model(fixture, fixture["hyperparameters"]["tau"])
    one_adam_step(model, *training_batch(fixture))
    gradients, after_step = by_our_names(outputs, "grad/"), by_our_names(outputs, "after_step/")
    assert set(gradients) == set(after_step) == set(dict(model.named_parameters()))
    for name, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.grad.numpy(), gradients[name], atol=ATOL, err_msg=name)
        np.testing.assert_allclose(parameter.detach().numpy(), after_step[name], atol=ATOL, err_msg=name)
