"""Work off the caller's thread, so a UI stays live: several answer streams at once, side by side, and slow loads
(a model) in the background.

Each stream runs in its own worker thread and appends to a `LiveAnswer` that the UI reads whenever it redraws; one
shared `threading.Event` stops them all. Errors are kept on the answer as a message, never raised into the UI thread.
A `BackgroundTask` runs one function in a thread; the UI asks whether it is done and how long it has taken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dualrec.errors import DualrecError

T = TypeVar("T")


@dataclass
class LiveAnswer:
    """The text of one stream so far, with its timings; safe to read from another thread."""

    name: str
    chunks: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    first_chunk_s: float | None = None
    finished_s: float | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def done(self) -> bool:
        return self.finished_s is not None

    @property
    def chunks_per_s(self) -> float | None:
        """Streaming rate after the first chunk (a chunk is about one token for the local engines)."""
        if self.first_chunk_s is None or len(self.chunks) < 2:
            return None
        elapsed = (self.finished_s or time.perf_counter() - self.started) - self.first_chunk_s
        return (len(self.chunks) - 1) / elapsed if elapsed > 0 else None


def _consume(make_stream: Callable[[], Iterator[str]], answer: LiveAnswer, stop: threading.Event) -> None:
    try:
        for chunk in make_stream():
            if answer.first_chunk_s is None:
                answer.first_chunk_s = time.perf_counter() - answer.started
            answer.chunks.append(chunk)
            if stop.is_set():
                break
    except DualrecError as error:
        answer.error = str(error)
    except Exception as error:  # a failing model must not take the page down: report it on its column
        answer.error = f"{type(error).__name__}: {error}"
    finally:
        answer.finished_s = time.perf_counter() - answer.started


class ParallelStreams:
    """Start one worker per named stream; `answers` fill in as they run; `stop()` ends them all."""

    def __init__(self, streams: dict[str, Callable[[], Iterator[str]]], stop: threading.Event | None = None) -> None:
        self.stop_event = stop or threading.Event()
        self.answers = {name: LiveAnswer(name) for name in streams}
        self.threads = [
            threading.Thread(
                target=_consume, args=(make, self.answers[name], self.stop_event), daemon=True, name=f"stream-{name}"
            )
            for name, make in streams.items()
        ]
        for thread in self.threads:
            thread.start()

    @property
    def done(self) -> bool:
        return all(answer.done for answer in self.answers.values())

    def stop(self) -> None:
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every stream has finished (or the timeout passed); True when all are done."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        for thread in self.threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.perf_counter()))
        return self.done


class BackgroundTask(Generic[T]):
    """One function run in a daemon thread: `done`, `elapsed`, and `result()`, which waits and re-raises its error."""

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self.started = time.perf_counter()
        self.finished_s: float | None = None
        self._value: T | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()
        threading.Thread(target=self._run, args=(work,), daemon=True, name=name).start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._value = work()
        except BaseException as error:  # noqa: BLE001  (kept for the caller of result(), never lost in the thread)
            self._error = error
        finally:
            self.finished_s = time.perf_counter() - self.started
            self._finished.set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    @property
    def elapsed(self) -> float:
        return self.finished_s if self.finished_s is not None else time.perf_counter() - self.started

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work has finished (or the timeout passed); True when it has."""
        return self._finished.wait(timeout)

    def result(self) -> T:
        """The work's value, once it has finished (waiting for it); its exception re-raised when it failed."""
        self._finished.wait()
        if self._error is not None:
            raise self._error
        return self._value
