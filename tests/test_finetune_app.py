"""The sidebar's quick LoRA adapter (issue 18) through streamlit.testing.v1.AppTest: the button trains it off the UI
thread with a progress bar, column B switches to it; Cancel keeps what was done and a restart resumes it; a second
training, another process's training and a data folder changed meanwhile are refused with a message. The base is a
tiny local Llama (tests.finetune_fixtures) so a training takes seconds; everything else is the app's own path."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.app import adapter_training
from dualrec.app.tables import model_description
from dualrec.config import paths
from dualrec.data.dataset import load_dataset
from dualrec.finetune.progress import training_lock
from dualrec.llm.adapters import ADAPTER_CONFIG, METADATA_FILE
from tests.conftest import app_folders
from tests.finetune_fixtures import tiny_llama
from tests.test_app_pages import run, texts

TINY_TRAINING = ("--batch-size", "2", "--val-examples", "2", "--max-length", "2048")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture
def app_home(ml_dir, tiny_lstm_dir, tiny, tmp_path, monkeypatch):
    """A DUALREC_HOME with the tiny LSTM and no adapter; the app trains the tiny Llama; no job left from another test."""
    app_folders(monkeypatch, tmp_path, ml_dir, tiny_lstm_dir)
    monkeypatch.setattr(adapter_training, "BASE", tiny)
    steps(monkeypatch, 4)
    adapter_training._jobs.clear()
    yield tmp_path
    job = adapter_training.current_job()
    if job is not None and not job.done:
        job.process.kill()
        job.process.wait()


def steps(monkeypatch, count: int, save: int = 2) -> None:
    options = ("--steps", str(count), "--eval-steps", str(count), "--save-steps", str(save), *TINY_TRAINING)
    monkeypatch.setattr(adapter_training, "EXTRA_OPTIONS", options)


def button(at: AppTest, start: str):
    return next((b for b in at.sidebar.button if b.label.startswith(start)), None)


def until(at: AppTest, done, seconds: float = 240) -> AppTest:
    """The app run again every second until `done(at)` holds."""
    deadline = time.monotonic() + seconds
    while not done(at):
        assert time.monotonic() < deadline, texts(at.sidebar.caption) + texts(at.sidebar.error)
        time.sleep(1)
        at = run(at)
    return at


def progress_text(at: AppTest) -> str:
    bars = at.sidebar.get("progress")
    return bars[0].proto.text if bars else ""


def spec(ml_dir: Path) -> str:
    return adapter_training.adapter_model(load_dataset(ml_dir))


def test_the_button_trains_the_quick_adapter_with_progress_and_column_b_switches_to_it(app_home, ml_dir):
    at = run()
    hint = next(line for line in texts(at.sidebar.caption).splitlines() if line.startswith("No LoRA adapter"))
    button(at, "Train the quick LoRA adapter now").click()
    progress = []

    def switched(at: AppTest) -> bool:
        progress.append(bool(at.sidebar.get("progress")))
        return at.selectbox(key="model_b").value == spec(ml_dir)

    at = until(run(at), switched)
    assert any(progress)
    assert spec(ml_dir) in at.selectbox(key="model_b").options and at.selectbox(key="model_a").value != spec(ml_dir)
    assert "trained for generation: the list-k answer of 5 movies" in texts(at.sidebar.caption)
    assert button(at, "Train the quick LoRA adapter") is None and not at.sidebar.error
    metadata = json.loads((adapter_training.adapter_folder(load_dataset(ml_dir)) / METADATA_FILE).read_text())
    assert metadata["status"] == "completed" and metadata["steps"] == 4
    command = adapter_training.current_job().command  # python -m dualrec ARGUMENTS EXTRA_OPTIONS
    shown = shlex.split(hint.split("`")[1])  # the hint's command: what the button ran, into the same folder
    assert shown == ["dualrec", *command[3 : len(command) - len(adapter_training.EXTRA_OPTIONS)]]
    assert shown[shown.index("--out") + 1] == adapter_training.adapter_name(load_dataset(ml_dir))


def test_the_progress_bar_says_step_loss_and_time_left(app_home, ml_dir, monkeypatch):
    steps(monkeypatch, 400, save=400)
    at = run()
    button(at, "Train the quick LoRA adapter now").click()
    at = until(run(at), lambda at: "loss" in progress_text(at))
    text = progress_text(at)
    assert text.startswith("Training the quick LoRA adapter. Step ") and " of 400, loss " in text and " left" in text
    button(at, "Cancel").click()
    run(at)


def test_cancel_keeps_what_was_done_and_a_restart_resumes_from_its_checkpoint(app_home, ml_dir, monkeypatch):
    steps(monkeypatch, 400)
    folder = adapter_training.adapter_folder(load_dataset(ml_dir))
    at = run()
    button(at, "Train the quick LoRA adapter now").click()
    at = until(run(at), lambda at: adapter_training.folder_state(folder).checkpoint is not None)
    button(at, "Cancel").click()
    at = until(run(at), lambda at: button(at, "Resume the quick LoRA adapter's training") is not None)
    stopped = adapter_training.folder_state(folder)
    assert stopped.status == "interrupted" and json.loads((folder / METADATA_FILE).read_text())["status"] == "interrupted"
    assert f"stopped at step {stopped.checkpoint}; what was done is kept" in texts(at.sidebar.caption)

    adapter_training._jobs.clear()  # the server restarts: no job in memory, the folder's checkpoints on disk
    steps(monkeypatch, stopped.checkpoint + 4, save=400)
    at = run()  # a new session, as a reopened tab
    button(at, "Resume the quick LoRA adapter's training").click()
    at = until(run(at), lambda at: at.selectbox(key="model_b").value == spec(ml_dir))
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["status"] == "completed" and metadata["resumed_from_step"] == stopped.checkpoint


def test_a_second_training_and_another_processs_training_are_refused(app_home, ml_dir, monkeypatch):
    dataset = load_dataset(ml_dir)
    with training_lock(adapter_training.adapter_folder(dataset)):  # as `dualrec finetune` running into the same folder
        at = run()
        assert button(at, "Train the quick LoRA adapter") is None and at.sidebar.get("progress")
        assert "Another process" in adapter_training.start(str(ml_dir), dataset)
    steps(monkeypatch, 400, save=400)
    at = run()
    button(at, "Train the quick LoRA adapter now").click()
    at = run(at)
    assert adapter_training.start(str(ml_dir), dataset).startswith("An adapter training is already running")
    second = run()  # another browser tab sees the same training, and no second button
    assert second.sidebar.get("progress") and button(second, "Train the quick LoRA adapter") is None


def test_a_data_folder_changed_during_training_leaves_the_training_on_its_data(app_home, ml_dir, namesakes_dir, monkeypatch):
    steps(monkeypatch, 400, save=400)
    at = run()
    button(at, "Train the quick LoRA adapter now").click()
    at = run(at)
    at.sidebar.text_input(key="data_dir").set_value(str(namesakes_dir))
    at = run(at)
    assert f"An adapter is training for {ml_dir}, not this data folder: one training at a time." in texts(at.sidebar.caption)
    assert button(at, "Train the quick LoRA adapter") is None
    job = adapter_training.current_job()
    assert (
        job.folder
        == adapter_training.adapter_folder(load_dataset(ml_dir))
        != adapter_training.adapter_folder(load_dataset(namesakes_dir))
    )


def test_a_failed_training_is_one_message_in_the_sidebar(app_home, ml_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(adapter_training, "EXTRA_OPTIONS", ("--lstm-dir", str(tmp_path / "no-lstm"), *TINY_TRAINING))
    at = run()
    button(at, "Train the quick LoRA adapter now").click()
    at = until(run(at), lambda at: bool(at.sidebar.error))
    assert texts(at.sidebar.error).startswith("The adapter's training failed: No trained LSTM in")
    assert "Traceback" not in texts(at.sidebar.error) and button(at, "Train the quick LoRA adapter now") is not None


def test_the_caption_says_what_an_adapter_was_trained_for(app_home):
    for task, said in (("rerank", "trained for ranking: the hybrid's labels scorer"), ("generate", "trained for generation")):
        folder = paths().models / "adapters" / task
        folder.mkdir(parents=True)
        (folder / ADAPTER_CONFIG).write_text("{}")
        examples = {"scorer": "labels"} if task == "rerank" else {"template": "list-k", "targets": 5}
        (folder / METADATA_FILE).write_text(json.dumps({"task": task, "status": "interrupted", "steps": 7, "examples": examples}))
        assert said in model_description(f"smollm2-135m+adapters/{task}")
        assert model_description(f"smollm2-135m+adapters/{task}").endswith("its training stopped at step 7")
