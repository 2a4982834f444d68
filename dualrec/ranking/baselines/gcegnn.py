"""GCE-GNN, the Global Context Enhanced Graph Neural Network (Wang et al., "Global Context Enhanced Graph Neural
Networks for Session-based Recommendation", SIGIR 2020), in plain PyTorch.

It follows the authors' code, github.com/CCIIPLab/GCE-GNN@212575302e42 (`build_graph.py`, `utils.py`, `model.py`,
`aggregator.py`, defaults of `main.py`), and is checked against that code's own numbers, for one and two hops, in
tests/test_gcegnn_reference.py.

The model: each session is a graph of its distinct items with four edge kinds (self, in, out, in-out); a local
aggregator attends over each node's session neighbours; a global aggregator attends, with the session's mean item as
context, over each item's neighbours in one item graph built from all training sessions; the two are added, gathered
back to the positions, and a position-aware soft attention reads the session vector S out; scores = S . e_v.

Quirks of the reference, all reproduced (the fixture's README names none of them a plain bug, so none has an option):
- Sessions are reversed, then right-padded: position 0 is the most recent item and takes position embedding row 0.
- The session graph's nodes are the sorted distinct ids of the padded reversed sequence, so a padded session has the
  padding id as its first node; the node list is padded with id 0 to the batch width and `alias` maps positions to
  nodes. Edge codes walk the reversed sequence: 1 = self loop of every visited node, 2 at [i, j] when j is i's
  chronological predecessor, 3 when it is i's successor, 4 on both [i, j] and [j, i] once the transition has been seen
  both ways; a consecutive repeat adds no edge. A one-position batch gets no self loop (its softmax has one entry).
- The local aggregator has no weight matrix, bias or activation: e_ij = LeakyReLU(alpha)(a_code . (h_i * h_j)), -9e15
  where there is no edge, a row softmax, then sum_j a_ij h_j (padding nodes, with no edges, average every node slot).
- The global graph counts, in every training session, the pairs at distance 1..3 in both directions, self pairs
  included; per item the top 12 by count are kept (ties in first-seen order), then a fixed table of exactly 12 slots
  is drawn once with numpy's legacy RandomState (`choice`, with replacement when an item has fewer than 12 neighbours;
  none: id 0, count 0). The raw count enters the neighbour attention unnormalised.
- The global aggregator runs on the node slots, not the positions: its session context is the mean item embedding
  over the real positions (repeats counted); a neighbour's logit is w_2 . LeakyReLU(0.2)([s * h_n ; count] W_1) (the
  slope 0.2 is fixed, `alpha` only reaches the local aggregator), softmax over the 12 slots, then
  act(dropout_gcn([h_self ; sum a_n h_n]) W_3). With k hops the table is chained (12, 144, ... neighbours); iteration
  k applies the one aggregator k to every remaining level, all with the same session context.
- h = dropout(h_local, dropout_local) + dropout(h_global, dropout_global): no gate; dropout_global is 0.5 by default.
- Readout: s = mean of the position states; z_i = tanh([p_i ; h_i] W_1); beta_i = w_2 . sigmoid(glu1(z_i) + glu2(s)),
  masked, no softmax; S = sum_i beta_i h_i; scores = S . E[1:] with no normalisation or scaling; loss = cross-entropy.
- Every parameter starts uniform(+-1/sqrt(dim)), the padding row included. Adam with coupled L2 (`weight_decay`),
  the learning rate times `lr_dc` every `lr_dc_step` epochs. The reference's `local_agg.bias`, `agg_gcn_*.bias` and
  `linear_transform` are never used, so this module does not have them (REFERENCE_UNUSED).

Items are catalogue positions 0..n_items-1 (PAD_ITEM entries of a history are dropped); node id i + 1 is item i and 0
is the padding id, as in the reference. Use: `model = build_model(n_items, training_sessions, options)`, `inputs =
session_batch(histories, n_items)`, then `model.scores(inputs)` -> (batch, n_items), `model.loss(inputs, targets)`,
and `build_optimizer(model)`. The training budget (the reference: 20 epochs, patience 3) is the trainer's.
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

from dualrec.config import AT_LEAST_1, DROPOUT, SEED, Bounds, check_options, option
from dualrec.errors import DualrecError
from dualrec.ranking.baselines.sessions import PADDING_ID, TrainingOptions, model_ids, right_padded
from dualrec.ranking.baselines.sessions import build_optimizer as build_optimizer  # the reference's Adam and decay

NO_EDGE_LOGIT = -9e15
GLOBAL_SLOPE = 0.2  # the global aggregator's LeakyReLU slope, fixed in the reference
SELF, IN, OUT, IN_OUT = 1, 2, 3, 4  # session-graph edge codes
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}
REFERENCE_UNUSED = ("local_agg.bias", "linear_transform.weight")  # plus agg_gcn_<k>.bias: declared, never used


@dataclass(frozen=True)
class GCEGNNOptions(TrainingOptions):
    """GCE-GNN's settings; the defaults are the reference's (`main.py` for an unnamed dataset)."""

    dim: int = option(100, bounds=AT_LEAST_1)  # hiddenSize
    hops: int = option(1, bounds=AT_LEAST_1)  # n_iter: global aggregation hops (diginetica 2)
    neighbours: int = option(12, bounds=AT_LEAST_1)  # n_sample_all = n_sample = build_graph's sample_num
    graph_distance: int = option(3, bounds=AT_LEAST_1)  # global graph: pairs at most this many steps apart
    dropout_gcn: float = option(0.0, bounds=DROPOUT)  # inside the global aggregator
    dropout_local: float = option(0.0, bounds=DROPOUT)
    dropout_global: float = option(0.5, bounds=DROPOUT)
    alpha: float = option(0.2, bounds=Bounds(0))  # the local aggregator's LeakyReLU slope
    activation: str = option("relu", choices=tuple(ACTIVATIONS))  # the global aggregator's output
    positions: int = option(200, bounds=AT_LEAST_1)  # position embedding rows: the longest history it reads
    seed: int = option(2020, bounds=SEED)  # main.py's init_seed: the neighbour table draw and the initial weights

    def __post_init__(self) -> None:
        check_options(self, "GCE-GNN")


# PO4ISR's tuned MovieLens-1M setting (llm4sr/PO4ISR, Non-LLM-Baselines/config.py, Best_setting['GCE-GNN']['ml-1m']).
PO4ISR_ML1M = GCEGNNOptions(dim=32, hops=1, dropout_gcn=0.0, dropout_local=0.5, learning_rate=1e-3, batch_size=64)


class GlobalGraph(NamedTuple):
    """Per node id (row 0 = padding), its neighbours in the global item graph and their co-occurrence counts."""

    neighbours: np.ndarray  # (n_items + 1, width) int64 node ids
    counts: np.ndarray  # (n_items + 1, width) int64


class SessionBatch(NamedTuple):
    """A batch of sessions as the model reads them (the reference's `Data` tensors); width = the longest history."""

    inputs: torch.Tensor  # (batch, width) node ids, most recent first, right-padded with 0
    mask: torch.Tensor  # (batch, width) 1 at real positions
    items: torch.Tensor  # (batch, width) the session graph's node ids, padded with 0
    alias: torch.Tensor  # (batch, width) each position's node slot
    adjacency: torch.Tensor  # (batch, width, width) edge codes (0 none, SELF, IN, OUT, IN_OUT)

    def to(self, device: torch.device | str) -> SessionBatch:
        return SessionBatch(*(tensor.to(device) for tensor in self))


def cooccurrence_neighbours(sessions: Sequence[Sequence[int]], n_items: int, options: GCEGNNOptions) -> GlobalGraph:
    """build_graph.py: per node id its `neighbours` most frequent partners within `graph_distance` steps (both
    directions, self pairs included), most frequent first, ties in first-seen order; -1 marks an empty slot."""
    sources, partners = [], []
    for nodes in model_ids(sessions, n_items, "GCE-GNN", "training session"):
        for step in range(1, options.graph_distance + 1):
            earlier, later = nodes[:-step], nodes[step:]
            sources.append(np.stack([earlier, later], axis=1).reshape(-1))  # (earlier, later) then (later, earlier)
            partners.append(np.stack([later, earlier], axis=1).reshape(-1))
    source, partner = np.concatenate(sources), np.concatenate(partners)
    pairs, first_seen, counts = np.unique(source * (n_items + 1) + partner, return_index=True, return_counts=True)
    order = np.lexsort((first_seen, -counts, pairs // (n_items + 1)))
    pairs, counts = pairs[order], counts[order]
    source = pairs // (n_items + 1)
    rank = np.arange(len(pairs)) - np.searchsorted(source, source)
    kept = rank < options.neighbours
    neighbours = np.full((n_items + 1, options.neighbours), -1, dtype=np.int64)
    table_counts = np.full((n_items + 1, options.neighbours), -1, dtype=np.int64)
    neighbours[source[kept], rank[kept]] = pairs[kept] % (n_items + 1)
    table_counts[source[kept], rank[kept]] = counts[kept]
    return GlobalGraph(neighbours, table_counts)


def sample_neighbour_table(graph: GlobalGraph, rng: np.random.RandomState) -> GlobalGraph:
    """utils.handle_adj: a fixed table filling every slot of each node from its neighbours (drawn without
    replacement when it has enough, with replacement otherwise); a node with none keeps id 0 and count 0."""
    width = graph.neighbours.shape[1]
    neighbours = np.zeros_like(graph.neighbours)
    counts = np.zeros_like(graph.counts)
    for node in range(1, len(neighbours)):
        found = int((graph.neighbours[node] >= 0).sum())
        if found:
            picks = rng.choice(found, size=width, replace=found < width)
            neighbours[node], counts[node] = graph.neighbours[node, picks], graph.counts[node, picks]
    return GlobalGraph(neighbours, counts)


def global_graph(sessions: Sequence[Sequence[int]], n_items: int, options: GCEGNNOptions) -> GlobalGraph:
    """The fixed global neighbour table of the training sessions, drawn with RandomState(options.seed)."""
    return sample_neighbour_table(cooccurrence_neighbours(sessions, n_items, options), np.random.RandomState(options.seed))


def session_edges(alias: list[int], length: int, adjacency: np.ndarray) -> None:
    """Fill one session's edge codes (module docstring) from the node slot of each reversed position."""
    for position in range(len(alias) - 1):
        node = alias[position]
        adjacency[node, node] = SELF
        if position + 1 >= length:
            break
        earlier = alias[position + 1]
        if earlier == node or adjacency[node, earlier] == IN_OUT:
            continue
        adjacency[earlier, earlier] = SELF
        if adjacency[earlier, node] == IN:
            adjacency[node, earlier] = adjacency[earlier, node] = IN_OUT
        else:
            adjacency[node, earlier], adjacency[earlier, node] = IN, OUT


def session_batch(histories: Sequence[Sequence[int]], n_items: int, width: int | None = None) -> SessionBatch:
    """The model's inputs for catalogue histories (oldest first): reversed sessions, masks and session graphs.

    `width` pads further than the longest history (the scores do not depend on it). PAD_ITEM entries are dropped; an
    empty batch, a history with no catalogue item or an item outside 0..n_items-1 is refused with a DualrecError."""
    sequences = model_ids(histories, n_items, "GCE-GNN")
    inputs = right_padded([sequence[::-1] for sequence in sequences], "GCE-GNN", width)
    width = inputs.shape[1]
    items = np.zeros_like(inputs)
    alias = np.zeros_like(inputs)
    adjacency = np.zeros((len(sequences), width, width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        nodes, alias[row] = np.unique(inputs[row], return_inverse=True)
        items[row, : len(nodes)] = nodes
        session_edges(alias[row].tolist(), len(sequence), adjacency[row])
    mask = (np.arange(width) < np.array([len(sequence) for sequence in sequences])[:, None]).astype(np.int64)
    return SessionBatch(*(torch.from_numpy(array) for array in (inputs, mask, items, alias, adjacency)))


class LocalAggregator(nn.Module):
    """Attention over the session graph, one attention vector per edge code (`a_0`..`a_3` in the reference)."""

    def __init__(self, dim: int, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.a_self = nn.Parameter(torch.empty(dim, 1))
        self.a_in = nn.Parameter(torch.empty(dim, 1))
        self.a_out = nn.Parameter(torch.empty(dim, 1))
        self.a_in_out = nn.Parameter(torch.empty(dim, 1))

    def forward(self, nodes: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """(batch, slots, dim) node states from their embeddings and the edge codes."""
        pairs = nodes.unsqueeze(2) * nodes.unsqueeze(1)
        vectors = torch.cat([self.a_self, self.a_in, self.a_out, self.a_in_out], dim=1)
        logits = F.leaky_relu(pairs @ vectors, self.alpha)
        edge_logits = logits.gather(-1, (adjacency - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
        edge_logits = edge_logits.masked_fill(adjacency == 0, NO_EDGE_LOGIT)
        return torch.softmax(edge_logits, dim=-1) @ nodes


class GlobalAggregator(nn.Module):
    """Session-aware attention over the global neighbours (`agg_gcn_<k>` in the reference: w_1, w_2, w_3)."""

    def __init__(self, dim: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.dropout = dropout
        self.activation = ACTIVATIONS[activation]
        self.attention = nn.Parameter(torch.empty(dim + 1, dim))
        self.attention_vector = nn.Parameter(torch.empty(dim, 1))
        self.aggregate = nn.Parameter(torch.empty(2 * dim, dim))

    def forward(self, own: torch.Tensor, neighbours: torch.Tensor, counts: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
        """own (batch, m, dim), neighbours (batch, m, slots, dim), counts (batch, m, slots), session (batch, dim)."""
        context = session[:, None, None, :] * neighbours
        hidden = F.leaky_relu(torch.cat([context, counts.unsqueeze(-1)], dim=-1) @ self.attention, GLOBAL_SLOPE)
        weights = torch.softmax((hidden @ self.attention_vector).squeeze(-1), dim=-1)
        pooled = (weights.unsqueeze(-1) * neighbours).sum(dim=-2)
        joined = F.dropout(torch.cat([own, pooled], dim=-1), self.dropout, training=self.training)
        return self.activation(joined @ self.aggregate)


class Readout(nn.Module):
    """The position-aware soft attention (reference: w_1, w_2, glu1, glu2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.transform = nn.Parameter(torch.empty(2 * dim, dim))
        self.query = nn.Parameter(torch.empty(dim, 1))
        self.item_gate = nn.Linear(dim, dim)
        self.session_gate = nn.Linear(dim, dim, bias=False)

    def forward(self, states: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The session vector S (batch, dim) and the attention weights beta (batch, width, 1)."""
        mask = mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(dim=1) / mask.sum(dim=1)
        positions = positions.unsqueeze(0).expand(states.shape[0], -1, -1)
        hidden = torch.tanh(torch.cat([positions, states], dim=-1) @ self.transform)
        beta = (torch.sigmoid(self.item_gate(hidden) + self.session_gate(mean).unsqueeze(1)) @ self.query) * mask
        return (beta * states).sum(dim=1), beta


class GCEGNN(nn.Module):
    """The session graph, the global graph, their sum and the soft-attention readout (module docstring)."""

    def __init__(self, n_items: int, graph: GlobalGraph, options: GCEGNNOptions) -> None:
        super().__init__()
        expected = (n_items + 1, options.neighbours)
        if graph.neighbours.shape != expected or graph.counts.shape != expected:
            raise DualrecError(f"GCE-GNN's neighbour table must be {expected}, not {graph.neighbours.shape}.")
        self.n_items = n_items
        self.options = options
        self.register_buffer("neighbour_table", torch.as_tensor(graph.neighbours, dtype=torch.long))
        self.register_buffer("neighbour_counts", torch.as_tensor(graph.counts, dtype=torch.float32))
        self.item_embedding = nn.Embedding(n_items + 1, options.dim)
        self.position_embedding = nn.Embedding(options.positions, options.dim)
        self.local = LocalAggregator(options.dim, options.alpha)
        self.global_layers = nn.ModuleList(
            GlobalAggregator(options.dim, options.dropout_gcn, options.activation) for _ in range(options.hops)
        )
        self.readout = Readout(options.dim)
        generator = torch.Generator().manual_seed(options.seed)
        bound = 1.0 / math.sqrt(options.dim)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound, generator=generator)

    def local_states(self, inputs: SessionBatch) -> torch.Tensor:
        """(batch, width, dim) the session-graph aggregation of each node slot."""
        return self.local(self.item_embedding(inputs.items), inputs.adjacency)

    def global_states(self, inputs: SessionBatch) -> torch.Tensor:
        """(batch, width, dim) the global-graph aggregation of each node slot over `hops` hops."""
        batch, slots = inputs.items.shape
        levels, counts = [inputs.items], []
        for _ in range(self.options.hops):
            counts.append(self.neighbour_counts[levels[-1]].view(batch, -1, self.options.neighbours))
            levels.append(self.neighbour_table[levels[-1]].view(batch, -1))
        mask = inputs.mask.unsqueeze(-1).float()
        session = (self.item_embedding(inputs.inputs) * mask).sum(dim=1) / mask.sum(dim=1)
        vectors = [self.item_embedding(level) for level in levels]
        for layer in self.global_layers:
            vectors = [
                layer(vectors[level], vectors[level + 1].view(batch, -1, self.options.neighbours, self.options.dim),
                      counts[level], session)
                for level in range(len(vectors) - 1)
            ]  # fmt: skip
        return vectors[0]

    def forward(self, inputs: SessionBatch) -> torch.Tensor:
        """(batch, width, dim) each node slot's state: dropout(local) + dropout(global)."""
        local = F.dropout(self.local_states(inputs), self.options.dropout_local, training=self.training)
        outer = F.dropout(self.global_states(inputs), self.options.dropout_global, training=self.training)
        return local + outer

    def session_vectors(self, inputs: SessionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The session vectors S (batch, dim) and the readout weights beta (batch, width, 1)."""
        width = inputs.inputs.shape[1]
        if width > self.options.positions:
            raise DualrecError(f"GCE-GNN reads at most {self.options.positions} items per history (positions), not {width}.")
        nodes = self(inputs)
        states = nodes.gather(1, inputs.alias.unsqueeze(-1).expand(-1, -1, nodes.shape[-1]))
        return self.readout(states, self.position_embedding.weight[:width], inputs.mask)

    def scores(self, inputs: SessionBatch) -> torch.Tensor:
        """(batch, n_items): the score of every catalogue item (column j = item j)."""
        return self.session_vectors(inputs)[0] @ self.item_embedding.weight[PADDING_ID + 1 :].T

    def loss(self, inputs: SessionBatch, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the scores against the target catalogue items."""
        if len(targets) != len(inputs.inputs) or bool(((targets < 0) | (targets >= self.n_items)).any()):
            raise DualrecError(f"GCE-GNN needs one target per history, each a catalogue item 0..{self.n_items - 1}.")
        return F.cross_entropy(self.scores(inputs), targets)


def build_model(n_items: int, sessions: Sequence[Sequence[int]], options: GCEGNNOptions | None = None) -> GCEGNN:
    """GCE-GNN over catalogue items 0..n_items-1, its global graph built from the training `sessions` (item lists,
    oldest first), initialised as the reference does."""
    options = options or GCEGNNOptions()
    if n_items < 1:
        raise DualrecError(f"GCE-GNN needs a catalogue of at least one item, not {n_items}.")
    return GCEGNN(n_items, global_graph(sessions, n_items, options), options)


def reference_names(hops: int) -> dict[str, str]:
    """The reference's parameter names (`CombineGraph.state_dict()`) -> this module's, for the used parameters.
    Matrices keep the reference's (in, out) layout; glu1/glu2 are nn.Linear in both."""
    names = {
        "embedding.weight": "item_embedding.weight",
        "pos_embedding.weight": "position_embedding.weight",
        "local_agg.a_0": "local.a_self",
        "local_agg.a_1": "local.a_in",
        "local_agg.a_2": "local.a_out",
        "local_agg.a_3": "local.a_in_out",
        "w_1": "readout.transform",
        "w_2": "readout.query",
        "glu1.weight": "readout.item_gate.weight",
        "glu1.bias": "readout.item_gate.bias",
        "glu2.weight": "readout.session_gate.weight",
    }
    for hop in range(hops):
        for theirs, ours in (("w_1", "attention"), ("w_2", "attention_vector"), ("w_3", "aggregate")):
            names[f"agg_gcn_{hop}.{theirs}"] = f"global_layers.{hop}.{ours}"
    return names
