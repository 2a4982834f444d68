"""What the session models (gcegnn, hide, mcprn, attenmixer) share: histories read as the references' item ids,
right-padding, and the references' optimiser and its options.

Catalogue item i is the model id i + 1 and 0 pads, as in every reference; PAD_ITEM entries of a history are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dualrec.config import ABOVE_0, AT_LEAST_1, Bounds, option
from dualrec.data.dataset import PAD_ITEM
from dualrec.errors import DualrecError

PADDING_ID = 0


def model_ids(histories: Sequence[Sequence[int]], n_items: int, model: str, what: str = "history") -> list[np.ndarray]:
    """Each history's model ids (item + 1), oldest first, PAD_ITEM dropped. An empty batch, a history that is not a list
    of numbers, one with no catalogue item or one holding an item outside 0..n_items-1 is refused with a DualrecError
    naming the model (`model`) and the history (`what` and its number)."""
    try:
        arrays = [np.asarray(history, dtype=np.int64).reshape(-1) for history in histories]
    except (TypeError, ValueError) as error:
        raise DualrecError(f"{model} reads each {what} as a list of catalogue items ({error}).") from error
    if not arrays:
        raise DualrecError(f"{model} got no {what} at all (an empty batch).")
    for number, items in enumerate(arrays):
        items = items[items != PAD_ITEM]
        if not len(items):
            raise DualrecError(f"{what.capitalize()} {number} has no catalogue movie; {model} needs at least one.")
        outside = items[(items < 0) | (items >= n_items)]
        if len(outside):
            raise DualrecError(f"{what.capitalize()} {number} holds item {outside[0]}, outside the catalogue's 0..{n_items - 1}.")
        arrays[number] = items + 1
    return arrays


def right_padded(sequences: Sequence[np.ndarray], model: str, width: int | None = None) -> np.ndarray:
    """(batch, width) int64: each sequence at the start of its row, then PADDING_ID (default width: the longest); a
    width below the longest sequence is refused."""
    longest = max(map(len, sequences))
    if width is not None and width < longest:
        raise DualrecError(f"{model} cannot pad histories of {longest} items to a width of {width}: it cannot hold them.")
    batch = np.full((len(sequences), width or longest), PADDING_ID, dtype=np.int64)
    for row, sequence in zip(batch, sequences):
        row[: len(sequence)] = sequence
    return batch


@dataclass(frozen=True)
class TrainingOptions:
    """The optimiser options every reference has, under its argparse names; each model's options derive from it (its
    own defaults may differ: MCPRN's batch)."""

    learning_rate: float = option(1e-3, bounds=ABOVE_0)  # lr (Adam)
    l2: float = option(1e-5, bounds=Bounds(0))  # Adam's coupled weight decay
    batch_size: int = option(100, bounds=AT_LEAST_1)
    lr_dc_step: int = option(3, bounds=AT_LEAST_1)  # epochs between learning-rate decays
    lr_dc: float = option(0.1, bounds=Bounds(0, 1, open_low=True))  # learning-rate decay factor


def build_optimizer(model: nn.Module) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.StepLR]:
    """The references' optimiser from the model's options (a TrainingOptions): Adam with coupled L2 (`weight_decay =
    l2`), and its learning-rate decay, times `lr_dc` every `lr_dc_step` epochs (the scheduler is stepped per epoch)."""
    options = model.options
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate, weight_decay=options.l2)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=options.lr_dc_step, gamma=options.lr_dc)
