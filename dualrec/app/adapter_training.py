"""The app's first LoRA adapter (issue 18): `dualrec finetune --profile quick` for the sidebar's data, in a subprocess
off the UI thread, followed through the folder's progress file (dualrec.finetune.progress).

- One training at a time for the whole server (every session sees it); a folder another process trains into (a
  command line, or an app before a restart whose training went on) is shown, never trained into twice (its lock).
- Cancel sends the process what Ctrl-C sends: it stops after the current step with a checkpoint and saves the adapter
  as "interrupted"; so do Ctrl-C on the server and a restart. The next start resumes from the last complete checkpoint.
- The adapter's folder is named by the data's fingerprint (`adapters/smollm2-135m-quick-1a2b3c4d`): the data folder
  changing meanwhile leaves the training on the data it read, and the new data gets its own adapter.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dualrec.config import DEFAULT_PRESET, LSTM_MODEL_FILE, paths
from dualrec.data.dataset import Dataset
from dualrec.finetune.progress import CHECKPOINTS, checkpoint_step, last_checkpoint, read_progress, training_process
from dualrec.llm.adapters import adapter_dir, read_metadata
from dualrec.llm.presets import ADAPTER_SEPARATOR

BASE = DEFAULT_PRESET
PROFILE = "quick"
MINUTES = 7  # the quick profile's CPU time with one thread, measured on the loaded 2-core machine (docs/results.md)
EXTRA_OPTIONS: tuple[str, ...] = ()  # more `dualrec finetune` options for every app training (the tests' tiny model)
OUTPUT_LINES = 12
SWITCH_B = "switch_model_b"  # session state: the model column B takes on the next run (a quick adapter just trained)
SWITCHED = "switched_to_adapter"  # session state: the training (its job's id) whose adapter column B took


def adapter_name(dataset: Dataset) -> str:
    """The quick adapter's folder for this data, relative to the models folder."""
    return f"adapters/{Path(BASE).name}-{PROFILE}-{dataset.fingerprint[:8]}"


def finetune_arguments(data_dir: str, dataset: Dataset | None) -> list[str]:
    """The `dualrec finetune` arguments of this data's quick adapter: what the button runs and the hint shows (with no
    readable data, no folder: the command's default)."""
    folder = ["--data-dir", data_dir] if data_dir else []
    out = ["--out", adapter_name(dataset)] if dataset is not None else []
    return ["finetune", "--base", BASE, "--profile", PROFILE, *folder, *out]


def finetune_hint(models_dir: Path, data_dir: str, dataset: Dataset | None) -> str:
    """What to do when no LoRA adapter exists: the command that makes this data's quick adapter."""
    command = shlex.join(["dualrec", *finetune_arguments(data_dir, dataset)])
    return f"No LoRA adapter in {models_dir} yet. Make one with `{command}`; it then appears in these lists."


def adapter_folder(dataset: Dataset) -> Path:
    return adapter_dir(adapter_name(dataset))


def lstm_trained() -> bool:
    """Whether the models folder holds a trained LSTM (the examples' prompts need its picks)."""
    return (paths().lstm / LSTM_MODEL_FILE).is_file()


def adapter_model(dataset: Dataset) -> str:
    """The quick adapter's model spec for this data, as the model lists name it."""
    return f"{BASE}{ADAPTER_SEPARATOR}{adapter_name(dataset)}"


@dataclass(frozen=True)
class FolderState:
    """Where an adapter folder stands: `status` is "none", "running", "interrupted", "failed" or "completed"."""

    folder: Path
    status: str
    progress: dict  # the progress file
    checkpoint: int | None  # the last complete checkpoint's step
    pid: int | None  # the training process, while one runs

    @property
    def error(self) -> str | None:
        """Why its last training failed, as the training said."""
        return self.progress.get("message") if self.status == "failed" else None


def folder_state(folder: Path) -> FolderState:
    """The state of an adapter folder, from its lock, progress file, metadata and checkpoints."""
    progress, pid = read_progress(folder), training_process(folder)
    last = last_checkpoint(folder / CHECKPOINTS)
    step = checkpoint_step(last) if last else None
    status = read_metadata(folder).get("status") if folder.is_dir() else None
    if pid is not None:
        status = "running"
    elif progress.get("status") == "failed":
        status = "failed"
    elif status != "completed" and step is not None:
        status = "interrupted"
    return FolderState(folder, status or "none", progress, step, pid)


class AdapterJob:
    """`dualrec finetune` of the quick profile into one folder, in a subprocess followed from a thread."""

    def __init__(self, data_dir: str, dataset: Dataset, resume: bool) -> None:
        self.data_dir, self.name, self.model = data_dir, adapter_name(dataset), adapter_model(dataset)
        self.folder = adapter_folder(dataset)
        self.command = [sys.executable, "-m", "dualrec", *finetune_arguments(data_dir, dataset)]
        self.command += [*(["--resume"] if resume else []), *EXTRA_OPTIONS]
        self.lines: deque[str] = deque(maxlen=OUTPUT_LINES)
        self.returncode: int | None = None
        self.cancelled = False
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"}
        )
        threading.Thread(target=self._follow, daemon=True, name="train-adapter").start()

    def _follow(self) -> None:
        for line in self.process.stdout:
            if line.strip() and "\r" not in line:  # the progress bars redraw with carriage returns
                self.lines.append(line.rstrip())
        self.returncode = self.process.wait()

    @property
    def done(self) -> bool:
        return self.returncode is not None

    def cancel(self) -> None:
        """What Ctrl-C does: the training stops after the current step, with a checkpoint and the adapter so far."""
        if not self.done:
            self.cancelled = True
            self.process.send_signal(signal.SIGINT)

    def error(self) -> str | None:
        """Why the training failed (its one-line message), or None while it runs or when it ended well."""
        if not self.done or self.returncode == 0 or self.cancelled:
            return None
        said = [line.removeprefix("dualrec: error: ") for line in self.lines if line.startswith("dualrec: error: ")]
        return said[-1] if said else "\n".join(self.lines) or f"the training process ended with code {self.returncode}"


@st.cache_resource
def _jobs() -> dict[str, AdapterJob]:
    """The server's adapter training (at most one at a time), shared by every session."""
    return {}


def current_job() -> AdapterJob | None:
    return _jobs().get("adapter")


def start(data_dir: str, dataset: Dataset) -> str | None:
    """Start (or resume, from its checkpoints) the quick adapter's training for this data; why not, when it cannot."""
    running = current_job()
    if running is not None and not running.done:
        return f"An adapter training is already running (for {running.data_dir}): one at a time."
    state = folder_state(adapter_folder(dataset))
    if state.status == "running":
        return f"Another process (id {state.pid}) is training this adapter: its progress shows here until it ends."
    if state.status == "completed":
        return None
    _jobs()["adapter"] = AdapterJob(data_dir, dataset, resume=state.checkpoint is not None)
    return None


def cancel(dataset: Dataset) -> None:
    """Stop this data's adapter training after its current step (this server's job, or another process's)."""
    job = current_job()
    if job is not None and job.folder == adapter_folder(dataset):
        job.cancel()
    elif (pid := folder_state(adapter_folder(dataset)).pid) and pid > 0:
        os.kill(pid, signal.SIGINT)


def progress_line(progress: dict) -> tuple[float, str]:
    """The progress bar's share and text: step of steps, the last loss, time used and left."""
    step, steps = progress.get("step") or 0, progress.get("steps")
    if progress.get("status") == "preparing" or not steps:
        return 0.0, f"Preparing the examples and the model ({progress.get('elapsed_s') or 0:.0f} s)…"
    loss = f", loss {progress['loss']:.3f}" if progress.get("loss") is not None else ""
    left = f", about {format_seconds(progress['left_s'])} left" if progress.get("left_s") is not None else ""
    return min(step / steps, 1.0), f"Step {step} of {steps}{loss}{left}"


def format_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
