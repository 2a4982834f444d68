"""The app's glue to Streamlit: loaders cached for every session, the sidebar's settings, per-session state, the
background LSTM training, and errors shown as messages in the page instead of tracebacks."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from dualrec.app.comparison import Column, SharedModel, plan_columns
from dualrec.app.recordings import RecordingStore
from dualrec.app.streaming import BackgroundTask
from dualrec.app.tables import default_models, genre_counts, model_choices, popularity, ratings_per_user
from dualrec.config import ENV_DATA_DIR, ML1M_FILES, ML1M_FOLDER, paths
from dualrec.data.dataset import Dataset, load_dataset
from dualrec.data.download import download_movielens
from dualrec.errors import DualrecError
from dualrec.grounding.pipeline import load_trained_lstm
from dualrec.llm import GenerationSettings, load_backend

if TYPE_CHECKING:
    from dualrec.ranking.lstm import LSTMRecommender

# Session-state keys of the sidebar's widgets and of what a session keeps between reruns.
DATA_DIR, MODEL_A, MODEL_B, PRESENTING, SPEED = "data_dir", "model_a", "model_b", "presenting", "replay_speed"
BUILT_HISTORY, COMPARISON, IMPORTED = "built_history", "comparison", "imported_recordings"
HISTORY_FILE, HISTORY_IMPORT = "history_file_id", "history_import"  # the uploaded history file, and its import (or error)
QUICK_TRAIN = ("train", "lstm", "--profile", "quick")
FAST_LOAD_S = 0.1  # a load that ends this fast (no model to load) is waited for, so the page does not flicker


@dataclass(frozen=True)
class AppSettings:
    """What the sidebar chose."""

    data_dir: str
    models: tuple[str, str]
    presenting: bool
    speed: float


def default_data_dir() -> str:
    """$DUALREC_DATA_DIR, else the downloaded copy when it is there, else nothing."""
    downloaded = paths().downloads / ML1M_FOLDER
    if os.environ.get(ENV_DATA_DIR):
        return os.environ[ENV_DATA_DIR]
    return str(downloaded) if all((downloaded / name).is_file() for name in ML1M_FILES) else ""


def models() -> list[str]:
    return model_choices(paths().models)


def settings() -> AppSettings:
    choices = models()
    a, b = default_models(choices)
    state = st.session_state
    return AppSettings(
        state.get(DATA_DIR, default_data_dir()).strip(),
        (state.get(MODEL_A, a), state.get(MODEL_B, b)),
        state.get(PRESENTING, False),
        state.get(SPEED, 1.0),
    )


def recordings() -> RecordingStore:
    return RecordingStore()


def results_folders() -> list[Path]:
    """Where `dualrec evaluate` writes by default, and the project's results/ folder."""
    return list(dict.fromkeys([paths().home / "results", Path.cwd() / "results"]))


# ---- cached loaders ------------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner="Reading MovieLens…", max_entries=4)
def _dataset(folder: str) -> Dataset:
    return load_dataset(folder)


def download_data() -> None:
    """Button callback: download MovieLens 1M and point the data folder at it."""
    try:
        st.session_state[DATA_DIR] = str(download_movielens())
    except DualrecError as error:
        st.error(str(error))


def dataset_or_stop() -> Dataset:
    """The dataset of the sidebar's folder; otherwise a clear message (and a download offer) and the page stops."""
    folder = settings().data_dir
    try:
        if not folder:
            raise DualrecError(
                f"No MovieLens 1M folder is set. Type the folder that holds {', '.join(ML1M_FILES)} in the sidebar, or "
                f"download the dataset."
            )
        return _dataset(folder)
    except DualrecError as error:
        st.error(str(error), icon="📂")
        st.button("Download MovieLens 1M from GroupLens (6 MB)", on_click=download_data)
        st.stop()


def dataset_or_none() -> Dataset | None:
    """The dataset of the sidebar's folder, or None when it cannot be read (the page says why)."""
    folder = settings().data_dir
    try:
        return _dataset(folder) if folder else None
    except DualrecError:
        return None


@st.cache_data(show_spinner="Counting…", max_entries=4)
def _tables(_dataset: Dataset, fingerprint: str) -> dict:
    return {
        "stats": _dataset.stats(),
        "per_user": ratings_per_user(_dataset),
        "popularity": popularity(_dataset),
        "genres": genre_counts(_dataset),
    }


def dataset_tables(dataset: Dataset) -> dict:
    """The Data page's figures: stats, ratings per user, popularity and genre counts (cached per data)."""
    return _tables(dataset, dataset.fingerprint)


def settle_memory() -> None:
    """Collect garbage, then freeze what is left (the libraries a load imported) out of later collections. Streamlit
    collects after every script run, and also calls Keras's clear_session (another collection) once Keras is loaded:
    with TensorFlow in memory each took about 0.6 s of the interpreter's lock on the loaded 2-core machine, so every
    rerun, a 1-second status poll included, stalled the page and the loads behind it; frozen, they take ~0 ms."""
    gc.collect()
    gc.freeze()


def ready_lstm(dataset: Dataset) -> tuple[LSTMRecommender | None, str | None]:
    """The trained LSTM, loaded and its ranking step compiled (one ranking), or None and a note saying why there is none:
    not trained, trained on another catalogue, or a file that cannot be read."""
    try:
        model, note = load_trained_lstm(dataset)
        if model is not None:
            settle_memory()  # TensorFlow and the model, out of the collections of the reruns while it compiles
            model.top_k([0], k=1)  # compiles the step here, not on the page's first pick
            settle_memory()
    except DualrecError as error:
        return None, str(error)
    except Exception as error:  # noqa: BLE001  (a broken model file is a note on the page, never a traceback)
        return None, f"The LSTM in {paths().lstm} could not be loaded ({type(error).__name__}: {error}). Train it again."
    return model, note


@st.cache_resource(show_spinner=False, max_entries=4)
def _lstm(_dataset: Dataset, fingerprint: str, models_dir: str) -> BackgroundTask[tuple[LSTMRecommender | None, str | None]]:
    return BackgroundTask(partial(ready_lstm, _dataset), "load-lstm")


def lstm_task(dataset: Dataset) -> BackgroundTask[tuple[LSTMRecommender | None, str | None]]:
    """The LSTM's load in the background (TensorFlow imports there), one per data and models folder for every session."""
    return _lstm(dataset, dataset.fingerprint, str(paths().models))


def lstm(dataset: Dataset) -> tuple[LSTMRecommender | None, str | None] | None:
    """The trained LSTM (None and a note saying why there is none), or None while it is still loading."""
    task = lstm_task(dataset)
    return task.result() if task.wait(FAST_LOAD_S) else None


@st.cache_resource(show_spinner=False, max_entries=8)
def shared_model(spec: str, replica: int) -> SharedModel:
    """A loaded model, shared by every session (see dualrec.app.comparison for the lock)."""
    return SharedModel(load_backend(spec))


def _load_columns(specs: tuple[str, str], after: BackgroundTask) -> list[Column]:
    after.wait()  # the LSTM first: the two loads would share the cores
    load = lambda spec, replica: shared_model(spec, replica)  # noqa: E731  (the name looked up when called: tests replace it)
    columns = plan_columns(specs, "", GenerationSettings(), load, recordings(), presenting=False)
    settle_memory()
    return columns


@st.cache_resource(show_spinner=False, max_entries=4)
def _preload(specs: tuple[str, str], _after: BackgroundTask) -> BackgroundTask[list[Column]]:
    return BackgroundTask(partial(_load_columns, specs, _after), "load-models")


def preload_models(dataset: Dataset) -> BackgroundTask[list[Column]] | None:
    """The sidebar's two models loading in the background once the LSTM has loaded (None in presentation mode, which
    replays recordings): Generate then finds them loaded. A model that fails is its column's error."""
    chosen = settings()
    if chosen.presenting:
        return None
    return _preload(tuple(chosen.models), lstm_task(dataset))


# ---- the LSTM's first training -------------------------------------------------------------------------------------

_EPOCH = re.compile(r"^Epoch (\d+)/(\d+)")


class TrainingJob:
    """`dualrec train lstm --profile quick` in a subprocess, followed from a thread: its output and epoch count."""

    def __init__(self, data_dir: str) -> None:
        self.command = [sys.executable, "-m", "dualrec", *QUICK_TRAIN, "--data-dir", data_dir]
        self.lines: list[str] = []
        self.epoch, self.epochs = 0, 0
        self.returncode: int | None = None
        self.started = time.perf_counter()
        threading.Thread(target=self._run, daemon=True, name="train-lstm").start()

    def _run(self) -> None:
        with subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
            for line in process.stdout:
                self.lines.append(line.rstrip())
                if match := _EPOCH.match(line):
                    self.epoch, self.epochs = int(match[1]), int(match[2])
        self.returncode = process.returncode

    @property
    def done(self) -> bool:
        return self.returncode is not None

    @property
    def progress(self) -> float:
        """Share of epochs started (the last one counts once the job ends)."""
        if self.done:
            return 1.0
        return (self.epoch - 1) / self.epochs if self.epochs else 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@st.cache_resource
def _training() -> dict[str, TrainingJob]:
    """The one training job of the server (shared, so two sessions never train at once)."""
    return {}


def training_job() -> TrainingJob | None:
    return _training().get("lstm")


def start_training(data_dir: str) -> None:
    """Button callback: start the quick LSTM training unless one is running."""
    jobs = _training()
    if jobs.get("lstm") is None or jobs["lstm"].done:
        jobs["lstm"] = TrainingJob(data_dir)


def training_finished() -> None:
    """Forget a finished training and reload the LSTM on the next run."""
    _training().pop("lstm", None)
    _lstm.clear()


# ---- recordings ----------------------------------------------------------------------------------------------------


def export_recordings() -> bytes:
    """Every recording as one JSON-lines file."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "recordings.jsonl"
        recordings().export(target)
        return target.read_bytes()


def import_recordings(name: str, data: bytes, file_id: str) -> int | None:
    """Add an uploaded recordings file once per upload; the number added, or None when it was already imported."""
    done = st.session_state.setdefault(IMPORTED, set())
    if file_id in done:
        return None
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / Path(name).name
        source.write_bytes(data)
        count = recordings().import_file(source)
    done.add(file_id)
    return count
