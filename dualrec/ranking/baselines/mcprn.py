"""MCPRN, the Mixture-Channel Purpose Routing Network (Wang et al., "Modeling Multi-Purpose Sessions for Next-Item
Recommendations via Mixture-Channel Purpose Routing Networks", IJCAI 2019), in plain PyTorch.

The paper has no official code. This module follows the re-implementation the session-based benchmarks use:
github.com/qyin863/Understanding-Diversity-in-SBRSs@8715989dc357, `seren/model/mcprn_v4_block.py` with the data glue
of `seren/utils/functions.py` (PO4ISR copied the file verbatim into `Non-LLM-Baselines/sess/model/`). It is checked
against that code's own numbers in tests/test_mcprn_reference.py.

The model: a purpose router gives each item of a session a weight per purpose, w_{t,k} = softmax_k(e_t . P_k / tau);
one purpose-specific recurrent unit (PSRU) per purpose reads every item, its update gated by that weight; a candidate
item y is scored by s(y) = sum_k pi_{y,k} (h_k . e_y), with pi_y = softmax_k(e_y . P_k).

Quirks of the reference, all reproduced (none is a plain bug, so none has an option):
- Sessions are read in chronological order and right-padded with id 0; the padded positions get router weight 0, so
  the state passes through them unchanged and the padding width does not matter.
- The PSRU has the gate layout of `torch.nn.GRUCell` (blocks reset, update, new, the candidate's recurrent part inside
  the reset product) but its own update, h <- h - c z (h - n): z pulls toward the candidate n (the opposite of the GRU
  convention), scaled by c = w_{t,k} where w_{t,k} >= 0.01 and 0 below that cut (`router_cut`). The initial state is 0.
- The candidate side's purpose weights use no temperature; there is no output projection.
- Scores cover the padding id too (column 0, whose embedding row is not zero: `padding_idx=0` only blocks its gradient,
  weight decay still moves it); rankings use columns 1..n, which is what `scores` returns.
- Training is in-batch: the candidates of a batch are its own targets, in batch order, duplicates included (a
  repeated target is also a "negative" of the sessions it belongs to); loss = mean_b -log(clamp(softmax(row_b)[b],
  1e-9)), with no softmax over the whole catalogue (a batch of one has loss 0). The reference sorts a batch by
  length, longest first; the loss does not depend on the order.
- No dropout. Every parameter starts uniform(+-1/sqrt(dim)), the padding row included. Adam with coupled L2
  (`weight_decay = l2`), the learning rate times `lr_dc` every `lr_dc_step` epochs.

Items are catalogue positions 0..n_items-1 (PAD_ITEM entries of a history are dropped); embedding row i + 1 holds item
i and row 0 is the padding id, as in the reference. Use: `model = build_model(n_items, options)`, `inputs =
session_batch(histories, n_items)`, then `model.scores(inputs)` -> (batch, n_items) and `model.loss(inputs,
target_batch(targets, n_items))`. The optimiser: `build_optimizer(model)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dualrec.config import ABOVE_0, AT_LEAST_1, Bounds, check_options, option
from dualrec.errors import DualrecError
from dualrec.ranking.baselines.sessions import PADDING_ID, TrainingOptions, model_ids, right_padded
from dualrec.ranking.baselines.sessions import build_optimizer as build_optimizer  # the reference's Adam and decay

PROBABILITY_FLOOR = 1e-9  # the reference clamps the in-batch softmax before its log


@dataclass(frozen=True)
class MCPRNOptions(TrainingOptions):
    """MCPRN's settings; the defaults are the reference's (besttest.py's argparse defaults)."""

    dim: int = option(100, bounds=AT_LEAST_1)  # item (and purpose, and state) embedding size
    purposes: int = option(1, bounds=AT_LEAST_1)  # purpose channels
    tau: float = option(0.1, bounds=ABOVE_0)  # router temperature (the candidate side has none)
    router_cut: float = option(0.01, bounds=Bounds(0, 1))  # router weights below it do not update a channel
    batch_size: int = option(128, bounds=AT_LEAST_1)

    def __post_init__(self) -> None:
        check_options(self, "MCPRN")


# PO4ISR's tuned MovieLens-1M setting (its Non-LLM-Baselines config).
PO4ISR_ML1M = MCPRNOptions(dim=128, purposes=4, tau=0.1, learning_rate=1e-3, batch_size=256)


class PSRU(nn.Module):
    """One purpose channel's recurrent unit: GRUCell-shaped weights (gate blocks reset, update, new)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(3 * dim, dim))
        self.weight_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.bias_ih = nn.Parameter(torch.empty(3 * dim))
        self.bias_hh = nn.Parameter(torch.empty(3 * dim))


class MCPRN(nn.Module):
    """The purpose router, one PSRU per purpose and the purpose-weighted scores (module docstring)."""

    def __init__(self, n_items: int, options: MCPRNOptions) -> None:
        super().__init__()
        self.n_items = n_items
        self.options = options
        self.item_embedding = nn.Embedding(n_items + 1, options.dim, padding_idx=PADDING_ID)
        self.purpose_embedding = nn.Embedding(options.purposes, options.dim)
        self.channels = nn.ModuleList(PSRU(options.dim) for _ in range(options.purposes))
        bound = 1.0 / math.sqrt(options.dim)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def router_weights(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, length, purposes): softmax over purposes of e_t . P_k / tau, 0 at padding (before the cut)."""
        logits = self.item_embedding(inputs) @ self.purpose_embedding.weight.T / self.options.tau
        return torch.softmax(logits, dim=-1) * (inputs != PADDING_ID).unsqueeze(-1)

    def purpose_states(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, purposes, dim): each channel's state after the last position of the padded batch."""
        weights = self.router_weights(inputs)
        gates = weights * (weights >= self.options.router_cut)
        weight_ih = torch.stack([channel.weight_ih for channel in self.channels])
        weight_hh = torch.stack([channel.weight_hh for channel in self.channels])
        bias_hh = torch.stack([channel.bias_hh for channel in self.channels])
        bias_ih = torch.stack([channel.bias_ih for channel in self.channels])
        from_inputs = torch.einsum("bld,kgd->blkg", self.item_embedding(inputs), weight_ih) + bias_ih
        state = inputs.new_zeros((inputs.shape[0], self.options.purposes, self.options.dim), dtype=weight_ih.dtype)
        # unbind, not indexing: one backward per position would fill a zero gradient as large as the whole input
        for step_input, gate in zip(from_inputs.unbind(1), gates.unbind(1)):
            from_state = torch.einsum("bkd,kgd->bkg", state, weight_hh) + bias_hh
            input_reset, input_update, input_new = step_input.chunk(3, dim=-1)
            state_reset, state_update, state_new = from_state.chunk(3, dim=-1)
            reset = torch.sigmoid(input_reset + state_reset)
            update = torch.sigmoid(input_update + state_update)
            new = torch.tanh(input_new + reset * state_new)
            state = state - gate.unsqueeze(-1) * update * (state - new)
        return state

    def candidate_purpose_weights(self, candidates: torch.Tensor) -> torch.Tensor:
        """(candidates, purposes): softmax over purposes of e_y . P_k, no temperature (candidates: model ids)."""
        return torch.softmax(self.item_embedding(candidates) @ self.purpose_embedding.weight.T, dim=-1)

    def candidate_scores(self, inputs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(batch, candidates): sum_k pi_{y,k} (h_k . e_y) for each session and candidate model id y."""
        states = self.purpose_states(inputs)
        embeddings = self.item_embedding(candidates)
        return torch.einsum("bkd,cd,ck->bc", states, embeddings, self.candidate_purpose_weights(candidates))

    def id_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, n_items + 1): the reference's output, column 0 being the padding id."""
        return self.candidate_scores(inputs, torch.arange(self.n_items + 1, device=inputs.device))

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """(batch, n_items): the score of every catalogue item (column j = item j)."""
        return self.id_scores(inputs)[:, PADDING_ID + 1 :]

    def in_batch_scores(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(batch, batch): each session against the batch's targets (catalogue items), the diagonal being its own."""
        return self.candidate_scores(inputs, targets + 1)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The reference's in-batch training loss: mean -log(clamp(softmax(row)[own target], 1e-9))."""
        probabilities = torch.softmax(self.in_batch_scores(inputs, targets), dim=1).clamp(min=PROBABILITY_FLOOR)
        return -torch.log(probabilities.diagonal()).mean()


def build_model(n_items: int, options: MCPRNOptions | None = None) -> MCPRN:
    """MCPRN over catalogue items 0..n_items-1, initialised as the reference does."""
    if n_items < 1:
        raise DualrecError(f"MCPRN needs a catalogue of at least one item, not {n_items}.")
    return MCPRN(n_items, options or MCPRNOptions())


def session_batch(histories: Sequence[Sequence[int]], n_items: int, width: int | None = None) -> torch.Tensor:
    """(batch, width) model ids: each history in chronological order, item i as i + 1, right-padded with 0 to `width`
    (default: the longest history).

    PAD_ITEM entries are dropped; an empty batch, a history with no catalogue item, an item outside 0..n_items-1 or a
    width below the longest history is refused with a DualrecError."""
    return torch.from_numpy(right_padded(model_ids(histories, n_items, "MCPRN"), "MCPRN", width))


def target_batch(targets: Sequence[int], n_items: int) -> torch.Tensor:
    """(batch,) the targets of a training batch (catalogue items); one outside 0..n_items-1 is refused."""
    batch = torch.as_tensor(np.asarray(targets, dtype=np.int64).reshape(-1))
    outside = batch[(batch < 0) | (batch >= n_items)]
    if len(outside):
        raise DualrecError(f"Target {int(outside[0])} is outside the catalogue's 0..{n_items - 1}.")
    return batch
