"""A fine-tuning folder's state, readable without torch (the app polls it): one training at a time (an OS lock held
by the training process), its progress file, its checkpoints.

    out/.training.lock        the pid of the training writing here; locked while it runs (`training_process`)
    out/progress.json         status, step of steps, losses, time used and left (`read_progress`)
    out/checkpoints/checkpoint-N   the Trainer's checkpoints; complete once trainer_state.json is written
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dualrec.errors import DualrecError

CHECKPOINTS = "checkpoints"
PROGRESS_FILE = "progress.json"
LOCK_FILE = ".training.lock"
SCRATCH_PREFIX = ".saving-"


def last_checkpoint(folder: Path) -> Path | None:
    """The latest complete checkpoint (the Trainer writes its state file last), or None."""
    done = [path for path in folder.glob("checkpoint-*") if (path / "trainer_state.json").is_file()]
    return max(done, key=checkpoint_step, default=None)


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.rpartition("-")[2])


@contextmanager
def training_lock(out: Path) -> Iterator[None]:
    """Hold out/.training.lock (an OS lock, gone with the process): a second training into `out` is refused."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as handle:
        if not locked(handle, tries=20):  # `training_process` holds it for a moment while it looks
            handle.seek(0)
            owner = handle.read().strip()
            raise DualrecError(
                f"Another training is writing into {out}{f' (process {owner})' if owner else ''}: wait for it to end or "
                f"stop it, then try again."
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        for scratch in out.glob(f"{SCRATCH_PREFIX}*"):  # a save cut short by a crash
            shutil.rmtree(scratch, ignore_errors=True)
        yield


def locked(handle, tries: int) -> bool:
    """Take the file's exclusive lock, trying `tries` times 50 ms apart; whether it was taken."""
    for attempt in range(tries):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < tries - 1:
                time.sleep(0.05)
    return False


def training_process(out: Path) -> int | None:
    """The process id of the training writing into `out` now (it holds the lock), or None."""
    lock = out / LOCK_FILE
    if not lock.is_file():
        return None
    with open(lock, "a+") as handle:
        if locked(handle, tries=1):
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
        handle.seek(0)
        return int(owner) if (owner := handle.read().strip()).isdigit() else -1


def write_json_atomically(file: Path, value: dict) -> None:
    scratch = file.with_name(f".{file.name}.{os.getpid()}")
    scratch.write_text(json.dumps(value))
    os.replace(scratch, file)


def read_progress(out: Path) -> dict:
    """out/progress.json ({} before any training there; a file cut short reads as {})."""
    try:
        return json.loads((out / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def describe_checkpoint(out: Path) -> str:
    last = last_checkpoint(out / CHECKPOINTS)
    return f"step {checkpoint_step(last)}" if last else "none yet: it starts again"
