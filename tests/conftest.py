"""Shared test set-up: isolated DUALRec folders, the generated MovieLens fixture, and the markers (slow, realdata, llm)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dualrec.config import LSTMConfig
from tests.movielens_fixture import write_movielens

REAL_DATA_ENV = "DUALREC_TEST_DATA"
SIBLING_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m-full-order"
REAL_DATA = Path(os.environ.get(REAL_DATA_ENV) or SIBLING_DATA).expanduser()
NAMESAKES = {"Hamlet (1990)": 1101, "Hamlet (1996)": 1102}  # movies the `namesakes_dir` fixture adds
TINY_LSTM = LSTMConfig(item_dim=8, title_dim=4, lstm_units=(16, 8), epochs=2, batch_size=64, seed=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption("--run-realdata", action="store_true", help="also run tests on the real MovieLens folder")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds; run with --run-slow")
    config.addinivalue_line(
        "markers",
        f"realdata: reads the real MovieLens 1M folder (${REAL_DATA_ENV}, else {SIBLING_DATA}); run with --run-realdata",
    )
    config.addinivalue_line(
        "markers", "llm: loads the real embedded model (smollm2-135m); `make test-fast` leaves these out with -m 'not llm'"
    )


def real_data_skip_reason(config: pytest.Config) -> str | None:
    """Why the realdata tests cannot run in this session, or None when they can."""
    if not config.getoption("--run-realdata"):
        return "--run-realdata was not given"
    if not REAL_DATA.is_dir():
        return "the folder is missing"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real_data_skip = real_data_skip_reason(config)
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
        if "realdata" in item.keywords and real_data_skip:
            item.add_marker(pytest.mark.skip(reason=f"real data: {real_data_skip}"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Say how many real-data tests were skipped and why, naming the folder and the variable that sets it."""
    reason = real_data_skip_reason(config)
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if "realdata" in getattr(report, "keywords", {})]
    if reason and skipped:
        source = f"${REAL_DATA_ENV}" if os.environ.get(REAL_DATA_ENV) else f"the default; set ${REAL_DATA_ENV} to change it"
        terminalreporter.write_line(
            f"real data: {len(skipped)} tests skipped because {reason} (folder {REAL_DATA}, from {source})"
        )


@pytest.fixture(scope="session", autouse=True)
def isolated_folders(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session gets its own DUALREC_HOME and cache; the user's folders are never touched."""
    base = tmp_path_factory.mktemp("dualrec")
    os.environ["DUALREC_HOME"] = str(base / "home")
    os.environ.setdefault("DUALREC_CACHE_DIR", str(base / "cache"))
    os.environ.pop("DUALREC_DATA_DIR", None)
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: on a shared 2-core machine OpenMP's spinning makes two threads ~10x slower."""
    import torch  # only the modules that ask load it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated MovieLens-format folder (300 users, 1,100 movies)."""
    return write_movielens(tmp_path_factory.mktemp("ml-fixture"))


@pytest.fixture(scope="session")
def namesakes_dir(ml_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated folder plus two unrated movies of one title (NAMESAKES), so that title without a year is ambiguous."""
    folder = tmp_path_factory.mktemp("ml-namesakes")
    for name in ("ratings.dat", "users.dat", "movies.dat"):
        shutil.copy(ml_dir / name, folder / name)
    with open(folder / "movies.dat", "a", encoding="latin-1") as movies:
        movies.writelines(f"{movie_id}::{title}::Drama\n" for title, movie_id in NAMESAKES.items())
    return folder


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
    """The generated folder's Dataset, shared by the session (tests must not change it)."""
    from dualrec.data.dataset import load_dataset

    return load_dataset(ml_dir)


@pytest.fixture(scope="session")
def lstm(dataset, tiny_lstm_dir: Path):
    """The tiny LSTM, loaded on the shared Dataset."""
    from dualrec.ranking.lstm import load_lstm

    return load_lstm(tiny_lstm_dir, dataset)


def app_folders(patch: pytest.MonkeyPatch, home: Path, ml_dir: Path, tiny_lstm_dir: Path) -> Path:
    """Point DUALREC_HOME at `home`, holding a copy of the tiny trained LSTM, and the data folder at `ml_dir` (for the app
    tests: `patch` is their MonkeyPatch, which undoes both)."""
    from dualrec.config import paths

    patch.setenv("DUALREC_HOME", str(home))
    patch.setenv("DUALREC_DATA_DIR", str(ml_dir))
    shutil.copytree(tiny_lstm_dir, paths().models / "lstm")
    return home


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real MovieLens 1M folder, for tests marked realdata (they are skipped, with the reason, when it is missing)."""
    return REAL_DATA
