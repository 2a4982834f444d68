"""Several models answering one prompt side by side, off the caller's thread: live (and recorded) or replayed.

Each column streams in its own worker (dualrec.app.streaming.ParallelStreams). A live column's chunks pass through
`recordings.record`, so every generation is saved; in presentation mode a column whose model already answered this
exact prompt replays that recording at its recorded pace instead, without loading the model.

Models are shared by every browser session (loading one per session would not fit in memory), so each loaded model
sits in a `SharedModel`: the backend's own lock is the queue (one generation at a time per model, in arrival order),
and `SharedModel.active` lets a column say that it is waiting for another session's answer. Two columns of one
session that name the same model get separate replicas, so both stream at once. A base model beside its own LoRA
adapter ('P' and 'P+A'), when both would run on transformers, is the adapter model's base view: one copy of the
weights, the two answers one after the other. A GGUF base and its adapter both run on llama.cpp (the adapter as a
GGUF LoRA), each its own small copy, so the two stream at once.

A column asked for grounded answers (`Column.grounded`) writes only real, unwatched catalogue movies
(dualrec.grounding.grounded); `Column.grounding` then says which engine grounded it, or why it is a free answer.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from dualrec.app.recordings import Recording, RecordingStore, record, recording_key, replay
from dualrec.app.streaming import LiveAnswer, ParallelStreams
from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError
from dualrec.grounding.grounded import Grounding, answer_constraint, grounded_answer
from dualrec.grounding.pipeline import Stage2Prompt, Stage2Result, interpret
from dualrec.llm import GenerationSettings, LLMBackend, LLMError, adapter_on, resolve_preset
from dualrec.llm.constraint import AnswerConstraint
from dualrec.llm.presets import engine_for


class SharedModel:
    """A loaded backend that several sessions use; counts the generations running or waiting on it."""

    def __init__(self, backend: LLMBackend) -> None:
        self.backend = backend
        self.active = 0
        self._count = threading.Lock()

    @contextmanager
    def _in_use(self) -> Iterator[None]:
        with self._count:
            self.active += 1
        try:
            yield
        finally:
            with self._count:
                self.active -= 1

    def stream(
        self, prompt: str, settings: GenerationSettings, stop: threading.Event, constraint: AnswerConstraint | None = None
    ) -> Iterator[str]:
        """The backend's stream; it waits on the backend's lock while another generation runs."""
        with self._in_use():
            yield from self.backend.stream(prompt, settings, stop=stop, constraint=constraint)


@dataclass
class Column:
    """One model's side of a comparison: what runs it, and what to say about it."""

    label: str  # "A", "B": the stream's name
    spec: str  # preset name, 'preset+adapter' or path
    settings: GenerationSettings
    model: SharedModel | None = None  # None when replaying or when the model failed to load
    recording: Recording | None = None  # replayed instead of generating
    error: str | None = None  # why the model could not be loaded
    queued: bool = False  # another generation was using the model when this one started
    grounded: bool = False  # asked for a grounded answer
    grounding: Grounding | None = None  # set as it streams: who grounded the answer, or why it is not grounded

    @property
    def runs(self) -> bool:
        return self.error is None


def column_settings(settings: GenerationSettings, index: int) -> GenerationSettings:
    """Column i samples with seed + i, so one model in two columns gives two different (repeatable) answers."""
    return settings if settings.seed is None else dataclasses.replace(settings, seed=settings.seed + index)


def find_recording(
    store: RecordingStore, spec: str, prompt: str, settings: GenerationSettings, grounded: bool = False
) -> Recording | None:
    """The latest recording of this model answering this prompt (grounded or not), preferring one with the same seed."""
    matches = [r for r in store.all() if r.key == recording_key(spec, prompt) and r.settings.get("grounded", False) == grounded]
    same_seed = [r for r in matches if r.settings.get("seed") == settings.seed]
    return (same_seed or matches or [None])[-1]


def adapter_partner(spec: str, specs: Sequence[str]) -> str | None:
    """The 'spec+ADAPTER' among `specs` whose base view serves the base model `spec` when both run on transformers, or
    None (on llama.cpp the base loads its own copy: small, and it streams beside the adapter instead of after it)."""
    adapter = adapter_on(spec, specs)
    try:
        on_transformers = adapter is not None and engine_for(resolve_preset(spec)) == "transformers"
    except LLMError:
        return None
    return adapter if on_transformers else None


def plan_columns(
    specs: Sequence[str],
    prompt: str,
    settings: GenerationSettings,
    load: Callable[[str, int], SharedModel],
    store: RecordingStore,
    presenting: bool,
    grounded: bool = False,
) -> list[Column]:
    """A column per model: its recording (presentation mode), else its loaded model, else the load error."""
    columns = []
    for index, spec in enumerate(specs):
        column = Column(chr(ord("A") + index), spec, column_settings(settings, index), grounded=grounded)
        column.recording = find_recording(store, spec, prompt, column.settings, grounded) if presenting else None
        if column.recording is None:
            try:
                if partner := adapter_partner(spec, specs):
                    column.model = SharedModel(load(partner, 0).backend.base())
                else:
                    column.model = load(spec, list(specs[:index]).count(spec))  # replica: same model twice, two copies
            except Exception as error:  # noqa: BLE001  (any failure to load is its column's message, never a traceback)
                column.error = f"{spec} could not be loaded: {error}"
        columns.append(column)
    return columns


@dataclass(frozen=True)
class _KeepUnlessStopped:
    """The store `record` saves into, except for answers cut short by Stop (a replay must be a whole answer)."""

    store: RecordingStore
    stop: threading.Event

    def add(self, recording: Recording) -> None:
        if not self.stop.is_set():
            self.store.add(recording)


def column_stream(
    column: Column, prompt: Stage2Prompt, store: RecordingStore, speed: float, stop: threading.Event, dataset: Dataset | None
) -> Callable[[], Iterator[str]]:
    """The column's chunk stream: its recording at `speed`, or its model's answer (grounded when the column asks),
    recorded as it goes."""
    if column.recording is not None:
        return lambda: replay(column.recording, speed, stop)
    model = column.model
    column.queued = model.active > 0
    recording = Recording(column.spec, prompt.text, dataclasses.asdict(column.settings) | {"grounded": column.grounded})
    answer = partial(model.stream, prompt.text, column.settings, stop)

    def chunks() -> Iterator[str]:  # runs in the column's worker: a failure is this column's message
        if not column.grounded:
            return answer()
        if dataset is None:
            raise DualrecError("a grounded column needs the dataset: start_comparison(..., dataset=...)")
        constraint = answer_constraint(dataset, prompt.history, prompt.k)
        return grounded_answer(answer, constraint, model.backend.grounding, partial(setattr, column, "grounding"))

    return lambda: record(chunks(), recording, _KeepUnlessStopped(store, stop))


@dataclass
class Comparison:
    """A running (or finished) side-by-side generation for one prompt."""

    prompt: Stage2Prompt
    columns: list[Column]
    streams: ParallelStreams
    results: dict[str, Stage2Result | None] = field(default_factory=dict)

    @property
    def answers(self) -> dict[str, LiveAnswer]:
        return self.streams.answers

    @property
    def stopped(self) -> bool:
        return self.streams.stop_event.is_set()

    @property
    def done(self) -> bool:
        return self.streams.done or self.stopped

    def stop(self) -> None:
        self.streams.stop()

    def finish(self, dataset: Dataset) -> dict[str, Stage2Result | None]:
        """Each column's answer read and matched once the streams are over (None: no text)."""
        if not self.results:
            grounding = {column.label: column.grounding for column in self.columns}
            for label, answer in self.answers.items():
                text, seconds = answer.text, answer.finished_s or 0.0
                self.results[label] = interpret(dataset, self.prompt, text, seconds, grounding[label]) if text.strip() else None
        return self.results


def start_comparison(
    prompt: Stage2Prompt, columns: list[Column], store: RecordingStore, speed: float = 1.0, dataset: Dataset | None = None
) -> Comparison:
    """Start every runnable column's stream in its own thread; one shared event stops them all. Grounded columns
    need the `dataset` (its catalogue)."""
    stop = threading.Event()
    streams = {c.label: column_stream(c, prompt, store, speed, stop, dataset) for c in columns if c.runs}
    return Comparison(prompt, columns, ParallelStreams(streams, stop))
