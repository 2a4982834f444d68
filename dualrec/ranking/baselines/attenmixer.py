"""Atten-Mixer (Zhang et al., "Efficiently Leveraging Multi-level User Intent for Session-based Recommendation via
Atten-Mixer Network", WSDM 2023), in plain PyTorch.

Follows the authors' code, github.com/Peiyance/Atten-Mixer-torch@9547fb8bc696: `src/models/CCSGNN.py` (LastAttenion,
SessionGraphAttn), the glue of `src/main_area_semantic.py` (AreaAttnModel's steps and optimiser) and the padding and
node lists of `src/utils.py` (data_masks, Data.get_slice). It is checked against that code's own numbers in
tests/test_attenmixer_reference.py.

The model: unit-length item states; seven multi-level queries, query i a linear map of the states of the last i + 1
items; multi-head attention of the queries over the positions, the seven queries of a head mixed by LP pooling; a
LayerNorm-ed readout joined with the last item's state into the session vector; cosine scores against the item table,
times 16.

Quirks of the reference, all reproduced:
- Sessions in chronological order, right-padded with id 0 to one slot more than the longest session of the whole split
  (not of the batch), so there is always a padding slot at the end. The first attention softmax has no mask, so the
  padding width changes the scores: `session_batch` pads a batch to its longest history + 1 unless given the width
  (pass the split's longest history + 1 to reproduce the reference).
- Position states: each session's distinct items (its node list, `items`) are embedded, L2-normalised (+1e-12) and
  dropped out (so a repeated item shares its dropout mask), gathered per position (`alias_inputs`), zeroed at
  padding and L2-normalised again (which undoes dropout's rescaling; a zero row stays zero).
- Query i reads the states of the last i + 1 items, most recent first; a session shorter than that reads position -1,
  the last padding slot, so the missing items are zero blocks. The queries are then L2-normalised across the queries
  (for each feature), not across features.
- Heads by raw reshape: the (last_k, dim) query projections and the (length, dim) key projections of a session are
  cut memory-wise into `heads` consecutive chunks read as (last_k, dim / heads) and (length, dim / heads); the values
  are split properly (head m = features [m dim / heads, (m + 1) dim / heads)). Per chunk sigmoid(q k^T), softmax of
  twice that over positions with no mask (padding takes part with key = the key bias), LP pooling (power `l_p`) over
  the chunk's queries, padding set to -inf, softmax of twice that over positions, dropout 0.1 (`attention_dropout`,
  hard-coded in the reference).
- Readout: the weighted values summed over positions, LayerNorm(eps 1e-8) whose gain and bias start uniform like
  every other parameter (so the gain is not 1). Session vector = linear([readout; state of the last item]).
- `norm`: the session vector and the item table E[1:] L2-normalised (+1e-12); `scale`: scores times 16. In training
  the normalised item table is dropped out (`dropout`). Loss: cross-entropy over all items.
- Init uniform(+-1/sqrt(dim)) for every parameter (the reference's normal(0, 0.1) draw for the attention layer is
  overwritten). Adam with coupled L2 (`weight_decay = l2`), the learning rate times `lr_dc` every `lr_dc_step` epochs.
- Left out, having no effect: the reference's unused layers linear_three, linear_four and linear_five (no gradient,
  so Adam leaves them alone), its session graph `A` and `mask1` (never read), and the switch `use_lp_pool` (on in the
  reference and in PO4ISR; off, the reference's shapes do not fit and it fails).

Items are catalogue positions 0..n_items-1 (PAD_ITEM entries of a history are dropped); embedding row i + 1 holds item
i and row 0 is the padding id, as in the reference. Use: `model = build_model(n_items, options)`, `batch =
session_batch(histories, n_items, width)` (`batch.to(device)`), then `model.scores(batch)` -> (batch, n_items) and
`model.loss(batch, target_batch(targets, n_items))`. The optimiser: `build_optimizer(model)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dualrec.config import AT_LEAST_1, DROPOUT, check_options, option
from dualrec.errors import DualrecError
from dualrec.ranking.baselines.mcprn import target_batch as target_batch  # the same targets
from dualrec.ranking.baselines.sessions import PADDING_ID, TrainingOptions, model_ids, right_padded
from dualrec.ranking.baselines.sessions import build_optimizer as build_optimizer  # the reference's Adam and decay

NORM_EPSILON = 1e-12
LAYER_NORM_EPSILON = 1e-8
SCORE_SCALE = 16.0
ATTENTION_SHARPNESS = 2.0  # both attention softmaxes take twice their input


@dataclass(frozen=True)
class AttenMixerOptions(TrainingOptions):
    """Atten-Mixer's settings; the defaults are the reference's (main_area_semantic.py's argparse defaults)."""

    dim: int = option(256, bounds=AT_LEAST_1)  # hiddenSize
    heads: int = option(8, bounds=AT_LEAST_1)  # must divide dim
    last_k: int = option(7, bounds=AT_LEAST_1)  # query levels: the last 1..last_k items
    l_p: int = option(4, bounds=AT_LEAST_1)  # power of the LP pooling over a head's queries
    norm: bool = option(True)  # L2-normalise the session vector and the item table
    scale: bool = option(True)  # scores times 16
    dropout: float = option(0.1, bounds=DROPOUT)  # on the item states and on the item table, in training
    attention_dropout: float = option(0.1, bounds=DROPOUT)  # on the attention weights, in training

    def __post_init__(self) -> None:
        uneven = isinstance(self.dim, int) and isinstance(self.heads, int) and self.heads > 0 and self.dim % self.heads
        check_options(self, "Atten-Mixer", f"heads must divide dim ({self.dim}), not {self.heads}" if uneven else None)


# PO4ISR's tuned MovieLens-1M setting (its Non-LLM-Baselines config).
PO4ISR_ML1M = AttenMixerOptions(dim=32, heads=2, l_p=10, learning_rate=1e-3, batch_size=64)


class SessionBatch(NamedTuple):
    """A padded batch as the reference feeds it: ids (0 = padding), the mask of real positions, each session's node
    list (its distinct items sorted, then 0, then 0-padding) and the node of each position."""

    inputs: torch.Tensor  # (batch, width) model ids
    mask: torch.Tensor  # (batch, width) bool
    items: torch.Tensor  # (batch, most nodes) model ids
    alias_inputs: torch.Tensor  # (batch, width) index into items

    def to(self, device: torch.device | str) -> SessionBatch:
        return SessionBatch(*(tensor.to(device) for tensor in self))


def unit_rows(vectors: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Vectors divided by their L2 norm along `dim` plus 1e-12 (a zero vector stays zero)."""
    return vectors / (vectors.norm(p=2, dim=dim, keepdim=True) + NORM_EPSILON)


class MultiHeadMixer(nn.Module):
    """The reference's LastAttenion: the multi-level queries attend over the positions, mixed by LP pooling."""

    def __init__(self, options: AttenMixerOptions) -> None:
        super().__init__()
        self.options = options
        self.query = nn.Linear(options.dim, options.dim)
        self.key = nn.Linear(options.dim, options.dim)
        self.value = nn.Linear(options.dim, options.dim)
        self.layer_norm = nn.LayerNorm(options.dim, eps=LAYER_NORM_EPSILON)

    def forward(self, queries: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The LayerNorm-ed readout (batch, dim) and the attention weights (batch, width, heads)."""
        batch, width, dim = states.shape
        heads, levels = self.options.heads, queries.shape[1]
        head_dim = dim // heads
        query_chunks = self.query(queries).reshape(batch * heads, levels, head_dim)
        key_chunks = self.key(states).reshape(batch * heads, width, head_dim)
        affinity = torch.sigmoid(query_chunks @ key_chunks.transpose(1, 2))  # (batch * heads, levels, width)
        affinity = affinity.reshape(batch, heads * levels, width).transpose(1, 2)
        per_query = torch.softmax(ATTENTION_SHARPNESS * affinity, dim=1)
        pooled = F.lp_pool1d(per_query, self.options.l_p, levels, stride=levels)  # (batch, width, heads)
        pooled = pooled.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(ATTENTION_SHARPNESS * pooled, dim=1)
        weights = F.dropout(weights, self.options.attention_dropout, training=self.training)
        values = self.value(states).reshape(batch, width, heads, head_dim)
        mixed = (weights.unsqueeze(-1) * values).reshape(batch, width, dim) * mask.unsqueeze(-1)
        return self.layer_norm(mixed.sum(dim=1)), weights


class AttenMixer(nn.Module):
    """The reference's SessionGraphAttn with the position states of its training and test steps (module docstring)."""

    def __init__(self, n_items: int, options: AttenMixerOptions) -> None:
        super().__init__()
        self.n_items = n_items
        self.options = options
        self.embedding = nn.Embedding(n_items + 1, options.dim)
        self.attention = MultiHeadMixer(options)
        self.level_queries = nn.ModuleList(nn.Linear(level * options.dim, options.dim) for level in range(1, options.last_k + 1))
        self.session_transform = nn.Linear(2 * options.dim, options.dim)
        bound = 1.0 / math.sqrt(options.dim)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def normalised(self, vectors: torch.Tensor) -> torch.Tensor:
        return unit_rows(vectors) if self.options.norm else vectors

    def position_states(self, batch: SessionBatch) -> torch.Tensor:
        """(batch, width, dim): the node states gathered per position, zero at padding."""
        nodes = F.dropout(self.normalised(self.embedding(batch.items)), self.options.dropout, training=self.training)
        states = torch.gather(nodes, 1, batch.alias_inputs.unsqueeze(-1).expand(-1, -1, nodes.shape[-1]))
        return self.normalised(states * batch.mask.unsqueeze(-1))

    def multi_level_queries(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch, last_k, dim): query i from the last i + 1 states (most recent first; the last slot for missing ones),
        L2-normalised across the queries."""
        rows = torch.arange(states.shape[0], device=states.device)
        lengths = mask.sum(dim=1)
        recent = []
        for back in range(1, self.options.last_k + 1):
            positions = lengths - back
            recent.append(states[rows, torch.where(positions < 0, states.shape[1] - 1, positions)])
        queries = [layer(torch.cat(recent[: level + 1], dim=-1)) for level, layer in enumerate(self.level_queries)]
        return unit_rows(torch.stack(queries, dim=1), dim=1)

    def session_representation(self, batch: SessionBatch) -> torch.Tensor:
        """(batch, dim): linear([readout; last item's state]), before normalisation."""
        states = self.position_states(batch)
        readout, _ = self.attention(self.multi_level_queries(states, batch.mask), states, batch.mask)
        last = states[torch.arange(states.shape[0], device=states.device), batch.mask.sum(dim=1) - 1]
        return self.session_transform(torch.cat([readout, last], dim=1))

    def scores(self, batch: SessionBatch) -> torch.Tensor:
        """(batch, n_items): the score of every catalogue item (column j = item j)."""
        table = F.dropout(self.normalised(self.embedding.weight[1:]), self.options.dropout, training=self.training)
        scores = self.normalised(self.session_representation(batch)) @ table.T
        return SCORE_SCALE * scores if self.options.scale else scores

    def loss(self, batch: SessionBatch, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the scores over all items against the target catalogue items."""
        return F.cross_entropy(self.scores(batch), targets)


def build_model(n_items: int, options: AttenMixerOptions | None = None) -> AttenMixer:
    """Atten-Mixer over catalogue items 0..n_items-1, initialised as the reference does."""
    if n_items < 1:
        raise DualrecError(f"Atten-Mixer needs a catalogue of at least one item, not {n_items}.")
    return AttenMixer(n_items, options or AttenMixerOptions())


def node_lists(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each session's node list (distinct items sorted, then 0, then 0-padding) and each position's node index."""
    nodes = [np.unique(row) for row in inputs]  # every row holds a padding 0, so each starts with it
    items = np.zeros((len(inputs), max(map(len, nodes))), dtype=np.int64)
    alias = np.empty_like(inputs)
    for row, (session, node) in enumerate(zip(inputs, nodes)):
        items[row, : len(node) - 1] = node[1:]
        alias[row] = (np.searchsorted(node, session) - 1) % len(node)
    return items, alias


def session_batch(histories: Sequence[Sequence[int]], n_items: int, width: int | None = None) -> SessionBatch:
    """The reference's padded batch of histories (catalogue items, oldest first), `width` slots wide (default: the
    longest history + 1; it must leave at least one padding slot). Bad histories: sessions.model_ids's errors."""
    sequences = model_ids(histories, n_items, "Atten-Mixer")
    inputs = right_padded(sequences, "Atten-Mixer", width or max(map(len, sequences)) + 1)
    if inputs[:, -1].any():
        raise DualrecError(f"A padding width of {width} leaves no padding slot after the longest history; Atten-Mixer needs one.")
    items, alias = node_lists(inputs)
    return SessionBatch(*(torch.from_numpy(array) for array in (inputs, inputs != PADDING_ID, items, alias)))
