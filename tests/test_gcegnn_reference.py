"""GCE-GNN against the authors' code's own numbers (../shared/reference/gcegnn: a tiny fixture run through
CCIIPLab/GCE-GNN@212575302e42, one and two hops): preprocessing, global graph, scores, loss, gradients, one Adam step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from dualrec.data.dataset import PAD_ITEM
from dualrec.errors import ConfigError, DualrecError
from dualrec.ranking.baselines.gcegnn import (
    GCEGNN,
    PO4ISR_ML1M,
    REFERENCE_UNUSED,
    GCEGNNOptions,
    GlobalGraph,
    build_model,
    build_optimizer,
    cooccurrence_neighbours,
    global_graph,
    reference_names,
    session_batch,
)
from tests.reference_fixtures import catalogue, read_arrays, read_fixture, reference_folder

REFERENCE = reference_folder("gcegnn")
if not REFERENCE.is_dir():
    pytest.skip(f"the GCE-GNN reference fixture is missing ({REFERENCE})", allow_module_level=True)

ATOL = 1e-5
N_ITEMS = 12
FIXTURE = read_fixture(REFERENCE)
OUTPUTS = {1: read_arrays(REFERENCE, "outputs.npz"), 2: read_arrays(REFERENCE, "outputs_hop2.npz")}
WEIGHTS = {1: read_arrays(REFERENCE, "weights.npz"), 2: read_arrays(REFERENCE, "weights_hop2.npz")}
# The fixture's settings (hidden 16, main.py defaults otherwise); the step ran with dropout_global 0, eval ignores it.
OPTIONS = GCEGNNOptions(dim=16, dropout_global=0.0)


TRAIN_INPUTS = catalogue(FIXTURE["fixture"]["train_examples"]["inputs"])
TRAIN_TARGETS = torch.tensor(FIXTURE["fixture"]["train_examples"]["targets"]) - 1
TEST_INPUTS = catalogue(FIXTURE["fixture"]["test_examples"]["inputs"])
TRAIN_SESSIONS = catalogue(FIXTURE["fixture"]["train_sessions_chronological"])


def reference_model(hops: int) -> GCEGNN:
    """Our module with the reference's initial weights and its sampled neighbour table (the same for both runs)."""
    graph = GlobalGraph(OUTPUTS[1]["global_adj_all"], OUTPUTS[1]["global_num_all"])
    model = GCEGNN(N_ITEMS, graph, replace(OPTIONS, hops=hops))
    with torch.no_grad():
        for theirs, ours in reference_names(hops).items():
            model.get_parameter(ours).copy_(torch.from_numpy(WEIGHTS[hops][theirs]))
    return model


def close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("hops", [1, 2])
def test_name_map_covers_every_used_reference_parameter(hops):
    names = reference_names(hops)
    unused = {*REFERENCE_UNUSED, *(f"agg_gcn_{hop}.bias" for hop in range(hops))}
    assert set(WEIGHTS[hops]) == set(names) | unused
    assert set(names.values()) == {name for name, _ in reference_model(hops).named_parameters()}
    assert all(f"grad/{name}" not in OUTPUTS[1] for name in unused)  # never used by the reference either


@pytest.mark.parametrize("split, histories", [("test", TEST_INPUTS), ("train", TRAIN_INPUTS)])
def test_session_graphs_match_reference(split, histories):
    inputs = session_batch(histories, N_ITEMS)
    expected = OUTPUTS[1]
    for ours, theirs in (("inputs", "inputs"), ("mask", "mask"), ("items", "items"), ("alias", "alias_inputs")):
        np.testing.assert_array_equal(getattr(inputs, ours).numpy(), expected[f"{split}_{theirs}"], err_msg=ours)
    np.testing.assert_array_equal(inputs.adjacency.numpy(), expected[f"{split}_adj"])


def test_cooccurrence_graph_matches_build_graph():
    raw = cooccurrence_neighbours(TRAIN_SESSIONS, N_ITEMS, OPTIONS)
    found = OUTPUTS[1]["global_raw_neighbors"].shape[1]
    np.testing.assert_array_equal(raw.neighbours[:, :found], OUTPUTS[1]["global_raw_neighbors"])
    np.testing.assert_array_equal(raw.counts[:, :found], OUTPUTS[1]["global_raw_weights"])
    assert (raw.neighbours[:, found:] == -1).all() and (raw.counts[:, found:] == -1).all()


def test_neighbour_table_draw_matches_handle_adj():
    """The fixture seeded numpy with 0 before handle_adj: the same seed draws the same table."""
    graph = global_graph(TRAIN_SESSIONS, N_ITEMS, replace(OPTIONS, seed=0))
    np.testing.assert_array_equal(graph.neighbours, OUTPUTS[1]["global_adj_all"])
    np.testing.assert_array_equal(graph.counts, OUTPUTS[1]["global_num_all"])


@pytest.mark.parametrize("hops", [1, 2])
def test_eval_scores_and_intermediates_match_reference(hops):
    model = reference_model(hops).eval()
    inputs = session_batch(TEST_INPUTS, N_ITEMS)
    expected = OUTPUTS[hops]
    with torch.no_grad():
        close(model.local_states(inputs), expected["test_before_h_local"])
        close(model.global_states(inputs), expected["test_before_h_global"])
        session, beta = model.session_vectors(inputs)
        close(session, expected["test_before_session_repr"])
        close(model.scores(inputs), expected["test_before_scores"])
    if hops == 1:
        close(beta, expected["test_before_beta"])


@pytest.mark.parametrize("hops", [1, 2])
def test_loss_gradients_and_one_adam_step_match_reference(hops):
    model = reference_model(hops).train()
    expected = OUTPUTS[hops]
    optimizer, _ = build_optimizer(model)
    inputs = session_batch(TRAIN_INPUTS, N_ITEMS)
    close(model.scores(inputs), expected["train_scores_before_step"])
    loss = model.loss(inputs, TRAIN_TARGETS)
    assert loss.item() == pytest.approx(float(expected["train_loss"]), abs=ATOL)
    assert loss.item() == pytest.approx(FIXTURE["training_step"][f"loss_value_hop{hops}"], abs=ATOL)
    loss.backward()
    names = reference_names(hops)
    for theirs, ours in names.items():
        if f"grad/{theirs}" in expected:
            close(model.get_parameter(ours).grad, expected[f"grad/{theirs}"])
    optimizer.step()
    for theirs, ours in names.items():
        if f"after_step/{theirs}" in expected:
            close(model.get_parameter(ours), expected[f"after_step/{theirs}"])
    with torch.no_grad():
        close(model.eval().scores(session_batch(TEST_INPUTS, N_ITEMS)), expected["test_after_scores"])


def test_hop1_fixture_keeps_every_gradient_and_step():
    """The hop-1 run holds a gradient and an after-step value for every used parameter (the test above reads all)."""
    names = reference_names(1)
    assert all(f"grad/{name}" in OUTPUTS[1] and f"after_step/{name}" in OUTPUTS[1] for name in names)


def test_scores_do_not_depend_on_padding_width_or_pad_items():
    model = reference_model(1).eval()
    padded = [[PAD_ITEM] * (9 - len(history)) + history for history in TEST_INPUTS]
    with torch.no_grad():
        narrow = model.scores(session_batch(TEST_INPUTS, N_ITEMS))
        wide = model.scores(session_batch(padded, N_ITEMS, width=9))
    torch.testing.assert_close(wide, narrow, rtol=0, atol=1e-6)
    assert session_batch(padded, N_ITEMS).inputs.shape == (4, 5)


def test_built_model_scores_every_item_and_trains():
    model = build_model(N_ITEMS, TRAIN_SESSIONS, replace(PO4ISR_ML1M, dim=8))
    inputs = session_batch(TRAIN_INPUTS, N_ITEMS)
    assert model.scores(inputs).shape == (len(TRAIN_INPUTS), N_ITEMS)
    optimizer, scheduler = build_optimizer(model)
    model.eval()
    before = model.loss(inputs, TRAIN_TARGETS).item()
    model.train()
    for _ in range(20):
        optimizer.zero_grad()
        model.loss(inputs, TRAIN_TARGETS).backward()
        optimizer.step()
    scheduler.step()
    assert model.eval().loss(inputs, TRAIN_TARGETS).item() < before
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # decays only every lr_dc_step epochs


def test_po4isr_setting_is_named_in_the_issue():
    assert (PO4ISR_ML1M.dim, PO4ISR_ML1M.hops, PO4ISR_ML1M.dropout_local, PO4ISR_ML1M.batch_size) == (32, 1, 0.5, 64)


@pytest.mark.parametrize(
    "histories, message",
    [
        ([], "no history at all"),
        ([[0, 1], [PAD_ITEM, PAD_ITEM]], "History 1 has no catalogue movie"),
        ([[0, 12]], "holds item 12, outside the catalogue's 0..11"),
        ([[0, -3]], "holds item -3"),
        ([[0, "Heat"]], "each history as a list of catalogue items"),
    ],
)
def test_bad_histories_are_refused_clearly(histories, message):
    with pytest.raises(DualrecError, match=message):
        session_batch(histories, N_ITEMS)


def test_bad_widths_targets_and_catalogues_are_refused_clearly():
    with pytest.raises(DualrecError, match="pad histories of 5 items to a width of 3"):
        session_batch(TEST_INPUTS, N_ITEMS, width=3)
    model = build_model(N_ITEMS, TRAIN_SESSIONS, replace(OPTIONS, positions=4))
    with pytest.raises(DualrecError, match="at most 4 items per history"):
        model.scores(session_batch(TEST_INPUTS, N_ITEMS))
    inputs = session_batch(TEST_INPUTS[:2], N_ITEMS)
    with pytest.raises(DualrecError, match="one target per history"):
        model.loss(inputs, torch.tensor([0, 12]))
    with pytest.raises(DualrecError, match="one target per history"):
        model.loss(inputs, torch.tensor([0]))
    with pytest.raises(DualrecError, match="at least one item"):
        build_model(0, TRAIN_SESSIONS)
    with pytest.raises(DualrecError, match="Training session 0 holds item 20"):
        build_model(N_ITEMS, [[20, 1]])
    with pytest.raises(DualrecError, match=r"neighbour table must be \(13, 12\)"):
        GCEGNN(N_ITEMS, GlobalGraph(np.zeros((13, 4), dtype=np.int64), np.zeros((13, 4), dtype=np.int64)), OPTIONS)


@pytest.mark.parametrize(
    "change, flag",
    [
        ({"dim": 0}, "dim"),
        ({"dropout_local": 1.0}, "dropout_local"),
        ({"activation": "gelu"}, "activation"),
        ({"hops": 0}, "hops"),
    ],
)
def test_bad_options_are_refused_clearly(change, flag):
    with pytest.raises(ConfigError, match=f"Invalid GCE-GNN options: {flag} must be"):
        GCEGNNOptions(**change)
