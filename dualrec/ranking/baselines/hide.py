"""HIDE (Li et al., SIGIR 2022: "Enhancing Hypergraph Neural Networks with Intent Disentanglement for Session-based
Recommendation") in plain PyTorch.

It follows the authors' code, github.com/yf-li15/HIDE at commit 531c89954f9c (sessionG.py, layers.py, utils.py), as
its run scripts train it (`--sw_edge --item_edge --disen`), and is checked against that code's own numbers
(tests/test_hide_reference.py, fixture in ../shared/reference/hide/).

Histories and targets are catalogue items 0..n_items-1 (PAD_ITEM entries of a history are dropped); inside the
model item i is id i + 1 and 0 pads, as in the reference, and `scores` column j is item j. A session is read most
recent first, right-padded with 0 to the width of its split, and becomes a hypergraph over its distinct items
(`session_batch`):
- sliding-window hyperedges: every complete contiguous window of 2..max_window items, ordered by size and then from
  the most recent end; each occurrence of a member adds 1 (code 1; a node twice in a window has 2, the item code, and
  three times 3, the intent code: the entry is attended with that code's vectors);
- item hyperedges, one per distinct item x in ascending id order: x (2) and each item that follows an occurrence of x
  (2 per occurrence, so a consecutive repeat has 4; an entry of 4 or more counts in the edge sum but takes part in
  no attention softmax);
- per factor k, an intent hyperedge (code 3), built in the forward pass: the nodes whose factor-k slice is most
  cosine-similar (x10) to slice k of the mean of all item embeddings; floor(intent_share * real nodes) + 1 of them.

The model (`HIDE`): each factor slice of the node embeddings goes through the hypergraph attention layer (node ->
hyperedge softmax over the members of each edge on LeakyReLU((edge sum * node) . a1[code]); hyperedge -> node softmax
over the node's edges on LeakyReLU((edge * (node + session mean)) . a2[code]); no weight matrix, activation or
residual; with `layers` > 1 the layers' outputs are summed), is gated by h + h * sigmoid(h * prototype slice), and
the factors are concatenated. A soft-attention readout over positions (reversed position embeddings, the mean and the
most recent state) gives the session vector S; scores = 10 * S . E^T. Training minimises cross-entropy plus
intent_loss_weight times the intent discrimination loss
(a classifier told to recognise each factor from its mean node state).

Quirks of the reference reproduced here, and what they do:
- Padding width: node slots and incidence columns are fixed per split (`split_widths`), not per batch; padding
  slots hold the zero vector (a zero row is put before the embedding table), and an all-zero incidence column, as a
  node with no hyperedge, is averaged over all slots / all columns (the reference's -9e15 logits). Pass the split's
  widths to `session_batch` to reproduce the reference.
- The reference counts a session's columns as Sum_w (length - w + 1) + distinct items, negative terms included
  when a window is longer than the session (a bug). That count is never above the real one, so the bug shows only
  where it is below the real count for the split's widest session: there the reference fails (scipy refuses an
  entry past the matrix), and here the columns every session needs are counted.
- Padding nodes have similarity 0 and are ranked with the real nodes, so a padding node joins an intent hyperedge when
  real nodes have negative similarity (a bug; `intent_edges_take_padding=False` leaves them out).
- The intent hyperedges accumulate: factor k attends over its own intent edge and those of factors k-1..0 (a bug;
  `intent_edges_accumulate=False` gives each factor its own).
- The intent loss reads the mean over all node slots, padding included, so the training loss depends on the padding
  width and the column count (`intent_mean_over_padding=False` averages the real nodes only). Through padding nodes
  in intent edges, the scores can depend on the padding width too.
- Every parameter starts uniform(+-1/sqrt(dim)); Adam with coupled L2 (weight_decay) and StepLR, as the reference.
- No dropout: the reference stores dropout_gcn/local/global but never applies them, so there are no such options.
- Without disentangling (`disentangle=False`, PO4ISR's copy's default) there is one hypergraph layer over the whole
  dimension, no intent edges, gating or intent loss, and no x10 on the scores.
With the three bug options off (and item edges on), the scores and the loss no longer depend on the padding width.
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

from dualrec.config import AT_LEAST_0, AT_LEAST_1, Bounds, check_options, fits, option
from dualrec.errors import DualrecError
from dualrec.ranking.baselines.sessions import PADDING_ID, TrainingOptions, model_ids, right_padded
from dualrec.ranking.baselines.sessions import build_optimizer as build_optimizer  # the reference's Adam and decay

POSITIONS = 200  # rows of the reference's position table: the widest padded session the model reads
INTENT_SIMILARITY_SCALE = 10.0  # DisentangleGraph's t (it only ranks the nodes)
SCORE_SCALE = 10.0  # the reference's w_k on the disentangled session vector
EXCLUDED = -9e15  # the reference's logit for an incidence entry outside an attention softmax
INTENT = 3.0  # incidence code of an intent hyperedge (1: sliding window, 2: item)
ATTENDED_CODES = 3  # codes 1, 2, 3 each have their attention vectors; any other entry is not attended


@dataclass(frozen=True)
class HIDEOptions(TrainingOptions):
    """HIDE's settings; the defaults are the reference's (main.py's argparse with its run scripts' flags). The last
    three reproduce the reference's bugs when True (see the module's docstring)."""

    dim: int = option(100, bounds=AT_LEAST_1)  # hiddenSize
    factors: int = option(5, bounds=AT_LEAST_1)  # n_factor: intents; dim is split evenly between them
    max_window: int = option(6, bounds=Bounds(2))  # w: sliding windows of 2..max_window items
    window_edges: bool = option(True)  # sw_edge
    item_edges: bool = option(True)  # item_edge
    disentangle: bool = option(True)  # disen
    intent_share: float = option(0.4, bounds=Bounds(0, 1, open_high=True))  # e: floor(e * nodes) + 1 in an intent edge
    layers: int = option(1, bounds=AT_LEAST_1)  # hypergraph layers (their outputs are summed)
    leaky_slope: float = option(0.2, bounds=AT_LEAST_0)  # alpha
    intent_loss_weight: float = option(1e-4, bounds=AT_LEAST_0)  # lamda
    intent_edges_take_padding: bool = option(True)
    intent_edges_accumulate: bool = option(True)
    intent_mean_over_padding: bool = option(True)

    def __post_init__(self) -> None:
        uneven = self.disentangle and isinstance(self.dim, int) and isinstance(self.factors, int) and self.dim % self.factors
        check_options(self, "HIDE", f"dim ({self.dim}) must be a multiple of factors ({self.factors})" if uneven else None)

    @property
    def window_sizes(self) -> range:
        """The sizes of the sliding windows that become hyperedges."""
        return range(2, self.max_window + 1) if self.window_edges else range(0)


REFERENCE_OPTIONS = HIDEOptions()
# PO4ISR's tuned ML-1M setting (Non-LLM-Baselines/config.py, Best_setting), as its copy of HIDE runs it: dim 128,
# batch 64, lr 1e-3, weight decay 1e-5 (its `l2`; the tuned `reg` is read by nothing), disentangling off (its config's
# `disen: False`, "need to be fixed"), so its tuned n_factor 1 and lamda 1e-3 are kept here but have no effect, nor do
# its dropouts; its `w: 5` builds windows of range(2, w), i.e. 2..4.
PO4ISR_ML1M = HIDEOptions(
    dim=128, factors=1, max_window=4, disentangle=False, intent_loss_weight=1e-3, batch_size=64, learning_rate=1e-3
)


class Widths(NamedTuple):
    """The padded shape of a split's inputs: positions (= node slots) and incidence columns."""

    positions: int
    edges: int


class HIDEInputs(NamedTuple):
    """A batch of sessions as the model reads them (B sessions, P positions, C incidence columns)."""

    sequence: torch.Tensor  # (B, P) model ids (item + 1), most recent first, right-padded with 0
    mask: torch.Tensor  # (B, P) 1 on real positions
    nodes: torch.Tensor  # (B, P) the distinct ids of each padded session in ascending order (0 first when padded), 0-padded
    alias: torch.Tensor  # (B, P) the node slot of each position
    incidence: torch.Tensor  # (B, P, C) float codes: window edges (1 per occurrence) then item edges (2 per occurrence)

    def to(self, device: torch.device | str) -> HIDEInputs:
        """The same batch on `device`."""
        return HIDEInputs(*(tensor.to(device) for tensor in self))


class Encoding(NamedTuple):
    """What the hypergraph encoder makes of a batch."""

    intent_edges: torch.Tensor | None  # (B, P, K) code 3 where a node is in factor k's intent edge; None without intents
    hypergraph: torch.Tensor  # (B, K, P, d) each factor's node states after the hypergraph layers, before the gating
    nodes: torch.Tensor  # (B, P, K * d) node states, factors concatenated
    intent_loss: torch.Tensor  # the intent discrimination loss (0 without intents)


class HIDEOutput(NamedTuple):
    scores: torch.Tensor  # (B, n_items) column j = catalogue item j
    intent_loss: torch.Tensor


def window_counts(lengths: np.ndarray, options: HIDEOptions) -> np.ndarray:
    """The sliding-window hyperedges of sessions of these lengths."""
    return sum((np.maximum(0, lengths - size + 1) for size in options.window_sizes), np.zeros_like(lengths))


def edge_counts(lengths: np.ndarray, distinct: np.ndarray, options: HIDEOptions) -> np.ndarray:
    """The hyperedges of sessions of these lengths and numbers of distinct items: windows, then items."""
    return window_counts(lengths, options) + (distinct if options.item_edges else 0)


def split_widths(histories: Sequence[Sequence[int]], n_items: int, options: HIDEOptions) -> Widths:
    """The widths the reference pads a whole split to: its longest history, and the most hyperedges a history of it
    has (at least one column)."""
    return widths_of(model_ids(histories, n_items, "HIDE"), options)


def widths_of(arrays: list[np.ndarray], options: HIDEOptions) -> Widths:
    """`split_widths` of histories already turned into model ids."""
    lengths = np.array([len(items) for items in arrays])
    distinct = np.array([len(np.unique(items)) for items in arrays])
    return Widths(int(lengths.max()), max(int(edge_counts(lengths, distinct, options).max()), 1))


def node_lists(sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per padded session, its distinct ids in ascending order (0-padded), each position's slot among them, and how many
    slots are used (0 counts when the session is padded)."""
    ordered = np.sort(sequence, axis=1)
    first = np.ones_like(ordered, dtype=bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    used = np.arange(sequence.shape[1]) < first.sum(1, keepdims=True)
    nodes = np.where(used, np.take_along_axis(ordered, np.argsort(~first, axis=1, kind="stable"), axis=1), 0)
    alias = ((nodes[:, None, :] < sequence[:, :, None]) & used[:, None, :]).sum(-1)
    return nodes, alias, used.sum(1)


def window_entries(alias: np.ndarray, lengths: np.ndarray, sizes: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session, node slot, column) of every member occurrence of every complete window, columns by size then start."""
    width = alias.shape[1]
    counts = np.stack([np.maximum(0, lengths - size + 1) for size in sizes], axis=1)  # (B, sizes)
    offsets = np.cumsum(counts, axis=1) - counts
    size_index, start, member = [], [], []  # one entry per member of every window that fits in `width`
    for index, size in enumerate(sizes):
        starts = np.repeat(np.arange(max(0, width - size + 1)), size)
        size_index.append(np.full(len(starts), index))
        start.append(starts)
        member.append(starts + np.tile(np.arange(size), len(starts) // size))
    size_index, start, member = (np.concatenate(parts) for parts in (size_index, start, member))
    last = start + np.asarray(sizes)[size_index] - 1
    rows, entry = np.nonzero(last[None, :] < lengths[:, None])  # a window is complete when its last member is real
    return rows, alias[rows, member[entry]], offsets[rows, size_index[entry]] + start[entry]


def item_entries(
    alias: np.ndarray, lengths: np.ndarray, distinct: np.ndarray, first_column: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session, node slot, column) of each distinct item in its own edge, and of each item that follows an occurrence."""
    width = alias.shape[1]
    padded = (lengths < width).astype(np.int64)  # the 0 node takes slot 0
    column = first_column[:, None] + alias - padded[:, None]  # each position's item edge
    own_rows, own_slots = np.nonzero((np.arange(width) >= padded[:, None]) & (np.arange(width) < (padded + distinct)[:, None]))
    own_columns = first_column[own_rows] + own_slots - padded[own_rows]
    rows, position = np.nonzero((np.arange(width) >= 1) & (np.arange(width) < lengths[:, None]))
    return (
        np.concatenate([own_rows, rows]),
        np.concatenate([own_slots, alias[rows, position - 1]]),  # position - 1 is the next item in time
        np.concatenate([own_columns, column[rows, position]]),
    )


def session_batch(
    histories: Sequence[Sequence[int]], n_items: int, options: HIDEOptions, widths: Widths | None = None
) -> HIDEInputs:
    """A batch of histories (catalogue items, oldest first) as the model's inputs, padded to `widths` (the split's
    `split_widths` reproduces the reference; by default the batch's own). A history longer than the widths keeps its
    most recent items."""
    arrays = model_ids(histories, n_items, "HIDE")
    widths = widths_of(arrays, options) if widths is None else widths
    if not 1 <= widths.positions <= POSITIONS or widths.edges < 1:
        raise DualrecError(f"HIDE pads to 1..{POSITIONS} positions and at least one hyperedge column, not {tuple(widths)}.")
    arrays = [items[-widths.positions :] for items in arrays]
    lengths = np.array([len(items) for items in arrays])
    sequence = right_padded([items[::-1] for items in arrays], "HIDE", widths.positions)
    nodes, alias, slots = node_lists(sequence)
    distinct = slots - (lengths < widths.positions)
    needed = edge_counts(lengths, distinct, options).max()
    if needed > widths.edges:
        raise DualrecError(f"A history needs {needed} hyperedges; the widths given allow {widths.edges}.")
    entries = []
    if options.window_edges:
        entries.append((*window_entries(alias, lengths, options.window_sizes), 1.0))
    if options.item_edges:
        entries.append((*item_entries(alias, lengths, distinct, window_counts(lengths, options)), 2.0))
    cells = len(arrays) * widths.positions * widths.edges
    incidence = np.zeros(cells)
    for rows, slots_of, columns, value in entries:
        flat = (rows * widths.positions + slots_of) * widths.edges + columns
        incidence += value * np.bincount(flat, minlength=cells)
    return HIDEInputs(
        torch.from_numpy(sequence),
        torch.from_numpy((sequence != PADDING_ID).astype(np.int64)),
        torch.from_numpy(nodes),
        torch.from_numpy(alias),
        torch.from_numpy(incidence.reshape(len(arrays), widths.positions, widths.edges).astype(np.float32)),
    )


class HIDE(nn.Module):
    """HIDE over catalogue items 0..n_items-1 (see the module's docstring). Parameters, and the reference's names:
    item_embedding.weight (embedding.weight), position_embedding.weight (pos_embedding.weight), to_edge_attention[k, c]
    and to_node_attention[k, c] (disen_aggs.k.a1c / a2c, or local_agg.* without intents; c = code - 1), position_mix,
    query and readout_weight (w_1, w_s, w_2, applied as x @ W: the Linear weights are their transposes), gate_position,
    gate_query, gate_match (glu1, glu2, glu3), intent_classifier (classifier). The reference's disenG.w, disenG.w1 and
    disen_aggs.k.w1 / w2 are never used, so they are not here."""

    def __init__(self, n_items: int, options: HIDEOptions = REFERENCE_OPTIONS) -> None:
        super().__init__()
        if not fits(n_items, int) or n_items < 1:
            raise DualrecError(f"HIDE needs a catalogue of at least one item, not {n_items!r}.")
        self.n_items, self.options = int(n_items), options
        dim = options.dim
        self.factors = options.factors if options.disentangle else 1
        factor_dim = dim // self.factors
        self.item_embedding = nn.Embedding(n_items, dim)
        self.position_embedding = nn.Embedding(POSITIONS, dim)
        self.to_edge_attention = nn.Parameter(torch.empty(self.factors, ATTENDED_CODES, factor_dim))
        self.to_node_attention = nn.Parameter(torch.empty(self.factors, ATTENDED_CODES, factor_dim))
        self.position_mix = nn.Linear(2 * dim, dim, bias=False)
        self.query = nn.Linear(2 * dim, dim, bias=False)
        self.gate_position = nn.Linear(dim, dim)
        self.gate_query = nn.Linear(dim, dim)
        self.gate_match = nn.Linear(dim, dim)
        self.readout_weight = nn.Linear(3 * dim, 1, bias=False)
        self.intent_classifier = nn.Linear(factor_dim, self.factors) if options.disentangle else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation: every parameter uniform(+-1/sqrt(dim))."""
        bound = 1.0 / math.sqrt(self.options.dim)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, inputs: HIDEInputs) -> HIDEOutput:
        encoded = self.encode(inputs)
        positions = encoded.nodes.gather(1, inputs.alias.unsqueeze(-1).expand(-1, -1, encoded.nodes.shape[-1]))
        session = self.readout(positions, inputs.mask)
        scale = SCORE_SCALE if self.options.disentangle else 1.0
        return HIDEOutput(scale * session @ self.item_embedding.weight.T, encoded.intent_loss)

    def scores(self, inputs: HIDEInputs) -> torch.Tensor:
        """(B, n_items) scores; column j is catalogue item j."""
        return self(inputs).scores

    def loss_terms(self, inputs: HIDEInputs, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-entropy of the targets (catalogue items) and the intent discrimination loss."""
        if targets.shape != inputs.sequence.shape[:1] or bool(((targets < 0) | (targets >= self.n_items)).any()):
            raise DualrecError(f"HIDE needs one target per history, each a catalogue item 0..{self.n_items - 1}.")
        output = self(inputs)
        return F.cross_entropy(output.scores, targets), output.intent_loss

    def loss(self, inputs: HIDEInputs, targets: torch.Tensor) -> torch.Tensor:
        """The training loss: cross-entropy + intent_loss_weight * intent loss."""
        cross_entropy, intent = self.loss_terms(inputs, targets)
        return cross_entropy + self.options.intent_loss_weight * intent

    def encode(self, inputs: HIDEInputs) -> Encoding:
        """The node states of each session's hypergraph (with the intent edges and the intent loss when disentangling)."""
        table = F.pad(self.item_embedding.weight, (0, 0, 1, 0))  # PADDING_ID -> the zero vector, item i -> row i + 1
        batch, width = inputs.nodes.shape
        split = (batch, width, self.factors, -1)
        nodes = table[inputs.nodes].view(split).transpose(1, 2)  # (B, K, P, d)
        mask = inputs.mask.unsqueeze(-1).to(table.dtype)
        center = ((table[inputs.sequence] * mask).sum(1) / mask.sum(1)).view(batch, self.factors, 1, -1)
        if not self.options.disentangle:
            states = self.hypergraph(nodes, inputs.incidence, center)
            return Encoding(None, states, states.transpose(1, 2).reshape(batch, width, -1), table.new_zeros(()))
        prototype = self.item_embedding.weight.mean(0).view(self.factors, -1)
        real = inputs.nodes != PADDING_ID
        intent = self.intent_edges(nodes, prototype, real)
        incidence = torch.cat([intent, inputs.incidence], -1)
        states = self.hypergraph(nodes, incidence, center, self.visible_columns(incidence.shape[-1], incidence.device))
        gated = states + states * torch.sigmoid(states * prototype.unsqueeze(1))
        return Encoding(intent, states, gated.transpose(1, 2).reshape(batch, width, -1), self.intent_loss(gated, real))

    @torch.no_grad()
    def intent_edges(self, nodes: torch.Tensor, prototype: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(B, P, K): code 3 on the floor(intent_share * real nodes) + 1 nodes most similar to each factor's prototype."""
        similarity = INTENT_SIMILARITY_SCALE * F.cosine_similarity(nodes, prototype[None, :, None, :], dim=-1)  # (B, K, P)
        if self.options.intent_edges_take_padding:
            similarity = similarity * real.unsqueeze(1)
        else:
            similarity = similarity.masked_fill(~real.unsqueeze(1), -math.inf)
        rank = similarity.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
        quota = torch.floor(self.options.intent_share * real.sum(1))
        return INTENT * (rank <= quota[:, None, None]).transpose(1, 2).to(nodes.dtype)

    def visible_columns(self, columns: int, device: torch.device) -> torch.Tensor:
        """(K, columns): the incidence columns each factor attends over: intent edges first (its own, and with the
        reference's accumulation those of the factors before it), then all the session's edges."""
        factor = torch.arange(self.factors, device=device)
        column = torch.arange(columns, device=device)
        own = column[None, :] == factor[:, None]
        earlier = column[None, :] <= factor[:, None] if self.options.intent_edges_accumulate else own
        return earlier | (column[None, :] >= self.factors)

    def hypergraph(
        self, nodes: torch.Tensor, incidence: torch.Tensor, center: torch.Tensor, visible: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, K, P, d) node states after the hypergraph attention layers (summed), every factor at once: nodes (B, K, P, d),
        incidence (B, P, C) codes, center (B, K, 1, d) the session's mean embedding, visible (K, C) or None for all."""
        member = (incidence > 0).to(nodes.dtype).unsqueeze(1)  # (B, 1, P, C)
        code = incidence.long() - 1
        entries = ((code >= 0) & (code < ATTENDED_CODES)).nonzero(as_tuple=True)  # the attended (session, node, edge)
        codes = code[entries]
        total, states = 0, nodes
        for _ in range(self.options.layers):
            edge_sums = member.transpose(-1, -2) @ states  # (B, K, C, d)
            to_edge = self.attention_logits(states, self.to_edge_attention, edge_sums, entries, codes)
            edges = to_edge.softmax(2).transpose(-1, -2) @ states
            to_node = self.attention_logits(states + center, self.to_node_attention, edges, entries, codes)
            if visible is not None:
                to_node = to_node.masked_fill(~visible[None, :, None, :], -math.inf)
            states = to_node.softmax(3) @ edges
            total = total + states
        return total

    def attention_logits(
        self,
        queries: torch.Tensor,
        vectors: torch.Tensor,
        keys: torch.Tensor,
        entries: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        codes: torch.Tensor,
    ) -> torch.Tensor:
        """(B, K, P, C) LeakyReLU((key * query) . vector[code]) at each attended entry (session, node, edge) of code
        `codes` + 1, EXCLUDED elsewhere: queries (B, K, P, d), vectors (K, codes, d), keys (B, K, C, d)."""
        session, node, edge = entries
        products = queries[session, :, node] * keys[session, :, edge] * vectors[:, codes].transpose(0, 1)  # (E, K, d)
        batch, factors, width = queries.shape[:3]
        logits = queries.new_full((batch, factors, width, keys.shape[2]), EXCLUDED)
        logits[session, :, node, edge] = F.leaky_relu(products.sum(-1), self.options.leaky_slope)
        return logits

    def intent_loss(self, gated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the classifier told which factor each factor's mean node state comes from."""
        if self.options.intent_mean_over_padding:
            features = gated.mean(2)
        else:
            weights = real.to(gated.dtype)[:, None, :, None]
            features = (gated * weights).sum(2) / weights.sum(2)
        logits = self.intent_classifier(features)  # (B, K, K)
        labels = torch.arange(self.factors, device=gated.device).expand(gated.shape[0], -1)
        return F.cross_entropy(logits.reshape(-1, self.factors), labels.reshape(-1))

    def readout(self, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, D) session vectors from the position states (B, P, D): a gated soft attention over the real positions."""
        mask = mask.unsqueeze(-1).to(positions.dtype)
        position = self.position_embedding.weight[: positions.shape[1]].expand_as(positions)
        mean = (positions * mask).sum(1) / mask.sum(1)
        query = self.query(torch.cat([mean, positions[:, 0]], -1)).unsqueeze(1)  # position 0: the most recent item
        mixed = torch.tanh(self.position_mix(torch.cat([position, positions], -1)))
        gates = [self.gate_position(mixed), self.gate_query(query).expand_as(positions), self.gate_match(query * positions)]
        weights = self.readout_weight(torch.sigmoid(torch.cat(gates, -1))) * mask
        return (weights * positions).sum(1)


def build_model(n_items: int, options: HIDEOptions | None = None) -> HIDE:
    """HIDE over catalogue items 0..n_items-1, initialised as the reference does (its defaults unless `options`)."""
    return HIDE(n_items, options or REFERENCE_OPTIONS)
