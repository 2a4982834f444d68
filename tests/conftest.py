"""Shared test set-up: isolated DUALRec folders, the generated MovieLens fixture, and the opt-in markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dualrec.config import LSTMConfig
from tests.movielens_fixture import write_movielens

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m-full-order"
TINY_LSTM = LSTMConfig(item_dim=8, title_dim=4, lstm_units=(16, 8), epochs=2, batch_size=64, seed=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption("--run-realdata", action="store_true", help="also run tests on the real MovieLens folder")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds; run with --run-slow")
    config.addinivalue_line("markers", "realdata: needs ../shared/data/ml-1m-full-order; run with --run-realdata")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
        if "realdata" in item.keywords and not config.getoption("--run-realdata"):
            item.add_marker(pytest.mark.skip(reason="real data: run with --run-realdata"))


@pytest.fixture(scope="session", autouse=True)
def isolated_folders(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session gets its own DUALREC_HOME and cache; the user's folders are never touched."""
    base = tmp_path_factory.mktemp("dualrec")
    os.environ["DUALREC_HOME"] = str(base / "home")
    os.environ.setdefault("DUALREC_CACHE_DIR", str(base / "cache"))
    os.environ.pop("DUALREC_DATA_DIR", None)
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def ml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated MovieLens-format folder (300 users, 1,100 movies)."""
    return write_movielens(tmp_path_factory.mktemp("ml-fixture"))


@pytest.fixture(scope="session")
def tiny_lstm_dir(ml_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real LSTM (the poster's layers, narrow) trained 2 epochs on the fixture, saved once per session."""
    from dualrec.data.dataset import load_dataset
    from dualrec.ranking.lstm import train_lstm  # TensorFlow loads only for the tests that ask

    folder = tmp_path_factory.mktemp("tiny-lstm") / "lstm"
    train_lstm(load_dataset(ml_dir), TINY_LSTM, verbose=0).save(folder)
    return folder


@pytest.fixture(scope="session")
def dataset(ml_dir: Path):
    """The generated folder's Dataset, shared by the session (tests must not change it; a module may define its own)."""
    from dualrec.data.dataset import load_dataset

    return load_dataset(ml_dir)


@pytest.fixture(scope="session")
def lstm(dataset, tiny_lstm_dir: Path):
    """The tiny LSTM, loaded on the shared Dataset."""
    from dualrec.ranking.lstm import load_lstm

    return load_lstm(tiny_lstm_dir, dataset)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"{REAL_DATA} is not here")
    return REAL_DATA
