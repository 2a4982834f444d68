"""What the reference tests (tests/test_<model>_reference.py) share: the fixture folders under ../shared/reference,
their files, the fixture's item ids as catalogue items, and one step of the reference's training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dualrec.ranking.baselines.sessions import build_optimizer

REFERENCES = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_folder(model: str) -> Path:
    """../shared/reference/<model>: the tiny fixture run through the authors' code (README.md lists its quirks)."""
    return REFERENCES / model


def missing(folder: Path, title: str) -> pytest.MarkDecorator:
    """A module's mark: skip its tests when the fixture folder is not there."""
    return pytest.mark.skipif(not folder.is_dir(), reason=f"the {title} reference fixture is missing ({folder})")


def read_fixture(folder: Path) -> dict:
    return json.loads((folder / "fixture.json").read_text())


def read_arrays(folder: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(folder / name) as arrays:
        return dict(arrays)


def catalogue(sessions: list[list[int]]) -> list[list[int]]:
    """The fixture's item ids 1..n as catalogue items 0..n-1."""
    return [[item - 1 for item in session] for session in sessions]


def one_adam_step(model: torch.nn.Module, *inputs) -> torch.Tensor:
    """One step of the reference's training (its Adam) on `model.loss(*inputs)`; the loss it took (the gradients are
    left in the model, which is left in eval mode)."""
    model.train()
    optimizer, _ = build_optimizer(model)
    optimizer.zero_grad()
    loss = model.loss(*inputs)
    loss.backward()
    optimizer.step()
    model.eval()
    return loss
