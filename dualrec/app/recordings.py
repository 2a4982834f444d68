"""Presentation mode: every generation is recorded, and a recorded answer replays offline at its recorded pace.

Recordings live in one JSON-lines file (`paths().recordings / "recordings.jsonl"`), one generation a line, keyed by
the model and the exact prompt, so a replay is the answer that model gave to that same history and template.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dualrec.config import paths
from dualrec.errors import DualrecError

RECORDINGS_FILE = "recordings.jsonl"
_write_lock = threading.Lock()


class RecordingError(DualrecError):
    """A recordings file that cannot be read or imported."""


def recording_key(model: str, prompt: str) -> str:
    return hashlib.sha256(json.dumps([model, prompt]).encode()).hexdigest()[:20]


@dataclass
class Recording:
    """One generation: what was asked, of which model, and each chunk of the answer with its time since the start."""

    model: str
    prompt: str
    settings: dict = field(default_factory=dict)
    chunks: list[tuple[float, str]] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def key(self) -> str:
        return recording_key(self.model, self.prompt)

    @property
    def answer(self) -> str:
        return "".join(text for _, text in self.chunks)

    @property
    def first_token_s(self) -> float | None:
        return self.chunks[0][0] if self.chunks else None

    @property
    def total_s(self) -> float:
        return self.chunks[-1][0] if self.chunks else 0.0

    @classmethod
    def from_dict(cls, data: dict) -> Recording:
        return cls(
            data["model"],
            data["prompt"],
            dict(data.get("settings", {})),
            [(float(t), str(c)) for t, c in data["chunks"]],
            data["created"],
        )


class RecordingStore:
    """The recordings file: append, look up the latest for a model and prompt, export and import."""

    def __init__(self, folder: Path | None = None) -> None:
        self.file = (folder or paths().recordings) / RECORDINGS_FILE

    def add(self, recording: Recording) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with _write_lock, open(self.file, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(recording), ensure_ascii=False) + "\n")

    def all(self) -> list[Recording]:
        return read_recordings(self.file) if self.file.is_file() else []

    def find(self, model: str, prompt: str) -> Recording | None:
        """The most recent recording of this model answering this exact prompt."""
        key = recording_key(model, prompt)
        matches = [r for r in self.all() if r.key == key]
        return matches[-1] if matches else None

    def export(self, target: Path) -> int:
        """Write every recording to target (JSON lines); returns how many."""
        recordings = self.all()
        target.write_text("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in recordings), encoding="utf-8")
        return len(recordings)

    def import_file(self, source: Path) -> int:
        """Add every recording of an exported file (all are checked before any is added); returns how many."""
        recordings = read_recordings(source)
        for recording in recordings:
            self.add(recording)
        return len(recordings)


def read_recordings(source: Path) -> list[Recording]:
    """Recordings from a JSON-lines file; a malformed line is an error that names it."""
    recordings = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            recordings.append(Recording.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as error:
            raise RecordingError(f"{source}, line {number} is not a DUALRec recording ({error}); nothing was imported.") from None
    return recordings


def record(chunks: Iterator[str], recording: Recording, store: RecordingStore) -> Iterator[str]:
    """Pass chunks through while timing them; the recording is saved when the stream ends with text in it."""
    started = time.perf_counter()
    for chunk in chunks:
        recording.chunks.append((round(time.perf_counter() - started, 4), chunk))
        yield chunk
    if recording.chunks:
        store.add(recording)


def replay(recording: Recording, speed: float = 1.0, stop: threading.Event | None = None) -> Iterator[str]:
    """Yield a recording's chunks at their recorded pace (speed 2.0 = twice as fast), until stopped."""
    started = time.perf_counter()
    for at, chunk in recording.chunks:
        delay = at / speed - (time.perf_counter() - started)
        if delay > 0 and (stop.wait(delay) if stop else time.sleep(delay)):
            return
        if stop is not None and stop.is_set():
            return
        yield chunk
