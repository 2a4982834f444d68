"""The one interface every LLM backend implements: `generate` and `stream` a chat answer to a prompt."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from dualrec.llm.constraint import AnswerConstraint, GroundingUnsupportedError
from dualrec.llm.errors import EmptyAnswerError

Message = dict[str, str]
Prompt = str | Sequence[Message]


@dataclass(frozen=True)
class GenerationSettings:
    """How to sample; `greedy` (or a temperature of 0) always picks the most likely token."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    greedy: bool = False

    @property
    def sampling(self) -> bool:
        return not self.greedy and self.temperature > 0


def to_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    """Chat messages for a user prompt string (with an optional system message) or a ready message list."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    return ([{"role": "system", "content": system}] if system else []) + messages


def looks_like_path(spec: str | Path) -> bool:
    """A local model (folder or .gguf file, present or not) rather than a hub id or preset name."""
    text = str(spec)
    return text.endswith(".gguf") or text.startswith((".", "/", "~")) or Path(text).expanduser().exists()


class LLMBackend(ABC):
    """A loaded model or endpoint that answers chat prompts.

    `stop` is a `threading.Event`: setting it from any thread ends a running `stream` or `generate` early
    (the text so far is kept). One generation runs at a time per backend; concurrent calls wait their turn.
    A `constraint` (dualrec.llm.constraint) grounds the answer: the engine can then write only its lines;
    `grounding` says how this engine does it (None: it cannot, and a grounded call raises GroundingUnsupportedError).
    """

    grounding: str | None = None

    def __init__(self, name: str, settings: GenerationSettings | None = None) -> None:
        self.name = name
        self.settings = settings or GenerationSettings()

    def stream(
        self,
        prompt: Prompt,
        settings: GenerationSettings | None = None,
        *,
        system: str | None = None,
        stop: threading.Event | None = None,
        constraint: AnswerConstraint | None = None,
    ) -> Iterator[str]:
        """Yield the answer as text chunks; raise `EmptyAnswerError` if the model says nothing."""
        stop = stop or threading.Event()
        answered = False
        messages, settings = to_messages(prompt, system), settings or self.settings
        if constraint is None:
            chunks = self._stream(messages, settings, stop)
        else:
            chunks = self._stream_grounded(messages, settings, stop, constraint)
        with closing(chunks):
            for chunk in chunks:
                if stop.is_set():
                    return
                answered = answered or bool(chunk.strip())
                yield chunk
        if not answered and not stop.is_set():
            raise EmptyAnswerError(f"{self.name} returned an empty answer")

    def generate(
        self,
        prompt: Prompt,
        settings: GenerationSettings | None = None,
        *,
        system: str | None = None,
        stop: threading.Event | None = None,
        constraint: AnswerConstraint | None = None,
    ) -> str:
        """The whole answer as one string (the joined `stream`)."""
        return "".join(self.stream(prompt, settings, system=system, stop=stop, constraint=constraint))

    def close(self) -> None:  # noqa: B027 (a hook: backends with nothing to release keep it)
        """Release the model or connection; the backend is unusable afterwards."""

    @abstractmethod
    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        """Yield answer chunks, checking `stop` between them and cleaning up when closed early."""

    def _stream_grounded(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, constraint: AnswerConstraint
    ) -> Iterator[str]:
        """`_stream`, writing only the constraint's lines; engines that can ground override it (and set `grounding`)."""
        raise GroundingUnsupportedError(
            f"{self.name} cannot ground its answers: {type(self).__name__} has no constrained decoding"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
