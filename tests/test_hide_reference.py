"""HIDE is the authors' model: the reference code's own numbers on a tiny fixture (../shared/reference/hide/: the
sessions, the initial weights, the preprocessing tensors, the scores before and after one Adam step, the losses and
every gradient) are reproduced by dualrec.ranking.baselines.hide; plus its options, bug switches and bad input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pytest
import torch

from dualrec.data.dataset import PAD_ITEM
from dualrec.errors import ConfigError, DualrecError
from dualrec.ranking.baselines.hide import (
    HIDE,
    PO4ISR_ML1M,
    HIDEInputs,
    HIDEOptions,
    Widths,
    build_model,
    build_optimizer,
    session_batch,
    split_widths,
)
from tests.reference_fixtures import catalogue, read_arrays, read_fixture, reference_folder

REFERENCE = reference_folder("hide")
FIXTURE_OPTIONS = HIDEOptions(dim=20)  # the fixture's run: the reference's defaults with hiddenSize 20
N_ITEMS = 12  # the fixture's ids 1..12 are our catalogue items 0..11
FACTORS = FIXTURE_OPTIONS.factors
ATOL = 1e-5
BUG_FIXES = {
    "intent_edges_take_padding": False,
    "intent_edges_accumulate": False,
    "intent_mean_over_padding": False,
}
READOUT_GATES = {"glu1": "gate_position", "glu2": "gate_query", "glu3": "gate_match"}


def ours_from_reference(arrays: Mapping[str, np.ndarray], factors: int = FACTORS) -> dict[str, np.ndarray]:
    """The name map: the reference's parameters (or their gradients, or their values after a step) under our names.
    a1c / a2c of each factor stack into the attention tensors; w_1, w_s, w_2 are used as x @ W there, so transposed."""

    def attention(prefix: str) -> np.ndarray:
        return np.stack([[arrays[f"disen_aggs.{factor}.{prefix}{code}"][:, 0] for code in range(3)] for factor in range(factors)])

    mapped = {
        "item_embedding.weight": arrays["embedding.weight"],
        "position_embedding.weight": arrays["pos_embedding.weight"],
        "to_edge_attention": attention("a1"),
        "to_node_attention": attention("a2"),
        "position_mix.weight": arrays["w_1"].T,
        "query.weight": arrays["w_s"].T,
        "readout_weight.weight": arrays["w_2"].T,
        "intent_classifier.weight": arrays["classifier.weight"],
        "intent_classifier.bias": arrays["classifier.bias"],
    }
    for theirs, name in READOUT_GATES.items():
        mapped |= {f"{name}.weight": arrays[f"{theirs}.weight"], f"{name}.bias": arrays[f"{theirs}.bias"]}
    return {name: np.ascontiguousarray(array) for name, array in mapped.items()}


def prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name.removeprefix(prefix): array for name, array in arrays.items() if name.startswith(prefix)}


def assert_matches(ours: torch.Tensor | float, theirs: np.ndarray, what: str) -> None:
    """Equal within atol 1e-5, and within 1e-4 of the reference's own scale (gradients far below 1e-5 are checked too)."""
    ours = ours.detach().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL, err_msg=what)
    scale = float(np.abs(theirs).max())
    assert float(np.abs(ours - theirs).max()) <= 1e-4 * scale, f"{what}: off by more than 1e-4 of its scale {scale}"


def factor_incidence(inputs: HIDEInputs, intent_edges: torch.Tensor, factor: int) -> np.ndarray:
    """What the reference feeds factor k: the intent columns of factors k..0, newest first, then the session's edges."""
    return torch.cat([intent_edges[..., list(range(factor, -1, -1))], inputs.incidence], -1).numpy()


def catalogue_examples(examples: dict) -> dict:
    """The fixture's examples (reference ids 1..12) as catalogue items 0..11."""
    return {"inputs": catalogue(examples["inputs"]), "targets": catalogue([examples["targets"]])[0]}


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.is_dir():
        pytest.skip(f"the HIDE reference fixture is missing (expected at {REFERENCE})")
    fixture = read_fixture(REFERENCE)["fixture"]
    return {
        "train": catalogue_examples(fixture["train_examples"]),
        "test": catalogue_examples(fixture["test_examples"]),
        "weights": read_arrays(REFERENCE, "weights.npz"),
        "outputs": read_arrays(REFERENCE, "outputs.npz"),
    }


def reference_model(reference: dict, options: HIDEOptions = FIXTURE_OPTIONS) -> HIDE:
    model = build_model(N_ITEMS, options)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in ours_from_reference(reference["weights"]).items()})
    return model


def split_inputs(reference: dict, split: str, options: HIDEOptions = FIXTURE_OPTIONS) -> HIDEInputs:
    """A split's examples padded as the reference pads them: to the split's widths."""
    histories = reference[split]["inputs"]
    return session_batch(histories, N_ITEMS, options, split_widths(histories, N_ITEMS, options))


# ---- preprocessing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["test", "train"])
def test_split_widths_are_the_references(reference: dict, split: str) -> None:
    assert split_widths(reference[split]["inputs"], N_ITEMS, FIXTURE_OPTIONS) == Widths(positions=5, edges=15)


@pytest.mark.parametrize("split", ["test", "train"])
def test_inputs_are_the_references(reference: dict, split: str) -> None:
    inputs = split_inputs(reference, split)
    outputs = reference["outputs"]
    for ours, theirs in [("sequence", "inputs"), ("mask", "mask"), ("nodes", "items"), ("alias", "alias_inputs")]:
        np.testing.assert_array_equal(getattr(inputs, ours).numpy(), outputs[f"{split}_{theirs}"], err_msg=ours)
    np.testing.assert_array_equal(inputs.incidence.numpy(), outputs[f"{split}_Hs"])


@pytest.mark.parametrize(("split", "key"), [("test", "test_before_H_factor{}"), ("train", "train_H_factor{}")])
def test_intent_hyperedges_are_the_references(reference: dict, split: str, key: str) -> None:
    inputs = split_inputs(reference, split)
    intent_edges = reference_model(reference).encode(inputs).intent_edges
    for factor in range(FACTORS):
        np.testing.assert_array_equal(
            factor_incidence(inputs, intent_edges, factor), reference["outputs"][key.format(factor)], err_msg=f"factor {factor}"
        )


def test_reference_intent_edges_take_padding_nodes(reference: dict) -> None:
    """The reference's bug: in the fixture's training batch padding nodes join intent edges, 14 times, which the
    accumulation feeds to the factors 57 times (the README's count: a padding node in factor j's edge is in the
    incidence of factors j..4)."""
    inputs = split_inputs(reference, "train")
    intent_edges = reference_model(reference).encode(inputs).intent_edges
    padding = (intent_edges > 0) & (inputs.nodes == 0).unsqueeze(-1)  # (B, P, K)
    assert int(padding.sum()) == 14
    assert sum(int(padding[..., : factor + 1].sum()) for factor in range(FACTORS)) == 57


# ---- the forward pass, the loss, the gradients, one Adam step -------------------------------------------------------


def test_node_states_and_scores_are_the_references(reference: dict) -> None:
    model, inputs, outputs = reference_model(reference), split_inputs(reference, "test"), reference["outputs"]
    encoded = model.encode(inputs)
    for factor in range(FACTORS):
        assert_matches(encoded.hypergraph[:, factor], outputs[f"test_before_h_factor{factor}_hgat"], f"factor {factor} states")
    assert_matches(encoded.nodes, outputs["test_before_hidden_nodes"], "node states")
    assert_matches(model.scores(inputs), outputs["test_before_scores"], "scores")


def test_loss_gradients_and_one_adam_step_are_the_references(reference: dict) -> None:
    model, outputs = reference_model(reference), reference["outputs"]
    train = split_inputs(reference, "train")
    targets = torch.tensor(reference["train"]["targets"])
    cross_entropy, intent = model.loss_terms(train, targets)
    assert_matches(cross_entropy, outputs["train_ce_loss"], "cross-entropy")
    assert_matches(intent, outputs["train_intent_loss"], "intent loss")
    loss = model.loss(train, targets)
    assert_matches(loss, outputs["train_loss"], "loss")

    optimizer, _ = build_optimizer(model)
    optimizer.zero_grad()
    loss.backward()
    parameters = dict(model.named_parameters())
    gradients = ours_from_reference(prefixed(outputs, "grad/"))
    assert gradients.keys() == parameters.keys()  # every parameter of ours has the reference's gradient to match
    for name, gradient in gradients.items():
        assert_matches(parameters[name].grad, gradient, f"gradient of {name}")

    optimizer.step()
    for name, value in ours_from_reference(prefixed(outputs, "after_step/")).items():
        assert_matches(parameters[name], value, f"{name} after the step")
    with torch.no_grad():
        assert_matches(model.scores(split_inputs(reference, "test")), outputs["test_after_scores"], "scores after the step")


# ---- the bug switches ----------------------------------------------------------------------------------------------


def scores_and_losses(model: HIDE, histories: list[list[int]], targets: list[int], widths: Widths) -> tuple:
    inputs = session_batch(histories, N_ITEMS, model.options, widths)
    cross_entropy, intent = model.loss_terms(inputs, torch.tensor(targets))
    return model.scores(inputs).detach(), cross_entropy.item(), intent.item()


def test_reference_results_depend_on_the_padding_width(reference: dict) -> None:
    model, train = reference_model(reference), reference["train"]
    split = scores_and_losses(model, train["inputs"], train["targets"], Widths(5, 15))
    wider = scores_and_losses(model, train["inputs"], train["targets"], Widths(9, 60))
    assert not torch.allclose(split[0], wider[0], atol=ATOL)
    assert abs(split[2] - wider[2]) > 1e-4


def test_with_the_bugs_fixed_the_padding_width_changes_nothing(reference: dict) -> None:
    options = replace(FIXTURE_OPTIONS, **BUG_FIXES)
    model, train = reference_model(reference, options), reference["train"]
    own = split_widths(train["inputs"], N_ITEMS, options)
    split = scores_and_losses(model, train["inputs"], train["targets"], own)
    wider = scores_and_losses(model, train["inputs"], train["targets"], Widths(own.positions + 4, own.edges + 45))
    torch.testing.assert_close(split[0], wider[0], rtol=0, atol=1e-6)
    assert split[1:] == pytest.approx(wider[1:], abs=1e-6)
    inputs = session_batch(train["inputs"], N_ITEMS, options, own)
    intent_edges = model.encode(inputs).intent_edges
    assert not ((intent_edges > 0) & (inputs.nodes == 0).unsqueeze(-1)).any()


def test_without_accumulation_each_factor_sees_only_its_own_intent_edge() -> None:
    model = build_model(N_ITEMS, replace(FIXTURE_OPTIONS, intent_edges_accumulate=False))
    visible = model.visible_columns(FACTORS + 3, torch.device("cpu"))
    expected = torch.cat([torch.eye(FACTORS, dtype=torch.bool), torch.ones(FACTORS, 3, dtype=torch.bool)], 1)
    assert torch.equal(visible, expected)


def test_split_widths_count_the_hyperedges_each_history_needs() -> None:
    """Where the reference's count (negative terms for windows longer than a session) is short, and it fails, the
    columns the widest session needs are counted."""
    assert split_widths([[1, 2, 3, 4], [5, 6]], N_ITEMS, FIXTURE_OPTIONS) == Widths(4, (3 + 2 + 1) + 4)  # the reference: 9
    assert split_widths([[1, 2]], N_ITEMS, FIXTURE_OPTIONS) == Widths(2, 1 + 2)  # the reference: 1 + 0 - 1 - 2 - 3 + 2 = -3
    assert split_widths([[1, 2, 3, 4, 5, 6], [7, 8]], N_ITEMS, FIXTURE_OPTIONS).edges == (5 + 4 + 3 + 2 + 1) + 6
    assert split_widths([[4, 4, 4]], N_ITEMS, FIXTURE_OPTIONS).edges == (2 + 1) + 1
    no_edges = replace(FIXTURE_OPTIONS, window_edges=False, item_edges=False)
    assert split_widths([[1, 2]], N_ITEMS, no_edges).edges == 1  # one empty column, never none


# ---- the hypergraph of one session, by hand ------------------------------------------------------------------------


def test_a_session_hypergraph_by_hand() -> None:
    """Items [4, 4, 10] are ids [5, 5, 11], read [11, 5, 5]; nodes [5, 11]. Windows: {11, 5}, {5, 5} (5 twice: 2),
    {11, 5, 5}; item edges: 5 with what follows it (11 after the second 5, and 5 itself after the first: 2 + 2 = 4),
    then 11 alone. PAD_ITEM entries are dropped."""
    inputs = session_batch([[PAD_ITEM, 4, 4, 10]], N_ITEMS, FIXTURE_OPTIONS)
    assert inputs.sequence.tolist() == [[11, 5, 5]]
    assert inputs.nodes.tolist() == [[5, 11, 0]]
    assert inputs.alias.tolist() == [[1, 0, 0]]
    expected = [[1, 2, 2, 4, 0], [1, 0, 1, 2, 2], [0, 0, 0, 0, 0]]
    assert inputs.incidence[0].tolist() == expected
    only_windows = session_batch([[4, 4, 10]], N_ITEMS, replace(FIXTURE_OPTIONS, item_edges=False))
    assert only_windows.incidence[0].tolist() == [row[:3] for row in expected]
    only_items = session_batch([[4, 4, 10]], N_ITEMS, replace(FIXTURE_OPTIONS, window_edges=False))
    assert only_items.incidence[0].tolist() == [row[3:] for row in expected]


def test_a_history_longer_than_the_widths_keeps_its_most_recent_items() -> None:
    inputs = session_batch([list(range(8))], N_ITEMS, FIXTURE_OPTIONS, Widths(5, 40))
    assert inputs.sequence.tolist() == [[8, 7, 6, 5, 4]]  # items 7..3 as ids


def test_two_layers_sum_the_states_of_each_layer() -> None:
    torch.manual_seed(0)
    one = build_model(N_ITEMS, FIXTURE_OPTIONS)
    two = build_model(N_ITEMS, replace(FIXTURE_OPTIONS, layers=2))
    two.load_state_dict(one.state_dict())
    inputs = session_batch([[1, 2, 3, 2], [4, 5]], N_ITEMS, FIXTURE_OPTIONS)
    nodes = torch.randn(2, FACTORS, 4, 4)
    center = torch.randn(2, FACTORS, 1, 4)
    first = one.hypergraph(nodes, inputs.incidence, center)
    second = one.hypergraph(first, inputs.incidence, center)
    torch.testing.assert_close(two.hypergraph(nodes, inputs.incidence, center), first + second)


# ---- PO4ISR's ML-1M setting -----------------------------------------------------------------------------------------


def test_po4isr_setting_trains_without_intents() -> None:
    torch.manual_seed(0)
    model = build_model(30, PO4ISR_ML1M)
    assert model.intent_classifier is None and model.to_edge_attention.shape == (1, 3, 128)
    inputs = session_batch([[1, 2, 3, 4, 5, 6], [7, 8], [9]], 30, PO4ISR_ML1M)
    assert inputs.incidence.shape == (3, 6, (5 + 4 + 3) + 6)  # windows of 2..4, then the item edges
    targets = torch.tensor([7, 9, 29])
    cross_entropy, intent = model.loss_terms(inputs, targets)
    assert intent.item() == 0.0 and model.loss(inputs, targets).item() == pytest.approx(cross_entropy.item())
    optimizer, schedule = build_optimizer(model)
    before = model.scores(inputs).detach()
    assert before.shape == (3, 30) and torch.isfinite(before).all()
    optimizer.zero_grad()
    model.loss(inputs, targets).backward()
    optimizer.step()
    assert not torch.equal(model.scores(inputs).detach(), before)
    for epoch in range(3):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3), epoch
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # decayed by 0.1 after 3 epochs


# ---- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("histories", "message"),
    [
        ([], "no history at all"),
        ([[1], []], "History 1 has no catalogue movie"),
        ([[1], [PAD_ITEM, PAD_ITEM]], "History 1 has no catalogue movie"),
        ([[-2, 3]], "holds item -2, outside the catalogue's 0..11"),
        ([[12]], "holds item 12, outside the catalogue's 0..11"),
        ([["Heat"]], "a list of catalogue items"),
    ],
)
def test_bad_histories_are_refused(histories: list, message: str) -> None:
    with pytest.raises(DualrecError, match=message):
        session_batch(histories, N_ITEMS, FIXTURE_OPTIONS)
    with pytest.raises(DualrecError, match=message):
        split_widths(histories, N_ITEMS, FIXTURE_OPTIONS)


def test_widths_too_small_or_too_wide_are_refused() -> None:
    with pytest.raises(DualrecError, match="needs 21 hyperedges; the widths given allow 15"):
        session_batch([[1, 2, 3, 4, 5, 6]], N_ITEMS, FIXTURE_OPTIONS, Widths(6, 15))
    for widths in (Widths(201, 1), Widths(0, 1), Widths(1, 0)):
        with pytest.raises(DualrecError, match="pads to 1..200 positions and at least one hyperedge column"):
            session_batch([[1]], N_ITEMS, FIXTURE_OPTIONS, widths)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": 10, "factors": 3}, "dim \\(10\\) must be a multiple of factors \\(3\\)"),
        ({"intent_share": 1.0}, "intent_share must be from 0 to below 1"),
        ({"max_window": 1}, "max_window must be at least 2"),
        ({"layers": 0}, "layers must be at least 1"),
        ({"disentangle": "yes"}, "disentangle must be true or false"),
    ],
)
def test_bad_options_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        replace(FIXTURE_OPTIONS, **changes)


def test_a_catalogue_without_items_and_unknown_targets_are_refused() -> None:
    for n_items in (0, 2.5, True):
        with pytest.raises(DualrecError, match="a catalogue of at least one item"):
            build_model(n_items, FIXTURE_OPTIONS)
    assert build_model(np.int64(N_ITEMS), FIXTURE_OPTIONS).n_items == N_ITEMS
    model = build_model(N_ITEMS, FIXTURE_OPTIONS)
    inputs = session_batch([[1, 2]], N_ITEMS, FIXTURE_OPTIONS)
    for targets in (torch.tensor([-1]), torch.tensor([12]), torch.tensor([1, 2]), torch.tensor(1)):
        with pytest.raises(DualrecError, match="one target per history, each a catalogue item 0..11"):
            model.loss(inputs, targets)
