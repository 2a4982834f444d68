"""Any OpenAI-compatible chat endpoint (DeepSeek, Mistral, vLLM, Ollama, llama.cpp's server) over HTTP.

Answers stream as server-sent events. The `openai` client retries connection errors, timeouts, 429 and 5xx
with exponential backoff (honouring Retry-After). The API key never appears in repr(), logs or error messages.

A grounded answer asks the server for guided decoding, one line per request: the GBNF grammar of the choices left
goes in `guided_grammar` (vLLM) and `grammar` (llama.cpp's servers), and the answer so far is the assistant message to
continue (vLLM's `continue_final_message`; llama.cpp's server prefills it or answers in a new turn). Every line that
comes back is checked: a server that refuses the request (HTTP 400/422) or ignores it (a line that is not an allowed
choice) raises GroundingUnsupportedError before anything is shown, so an answer is never silently ungrounded.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import openai

from dualrec.llm.base import GenerationSettings, LLMBackend, Message
from dualrec.llm.constraint import AnswerConstraint, GroundingError, GroundingUnsupportedError, write_lines
from dualrec.llm.errors import LLMHTTPError, LLMTimeoutError

NO_KEY = "EMPTY"  # what local servers without authentication are sent
GRAMMAR_FIELDS = ("guided_grammar", "grammar")  # vLLM's and llama.cpp's request fields for a GBNF grammar
REFUSED = (400, 422)  # how servers answer a request field they do not accept


class OpenAIBackend(LLMBackend):
    """Chat completions from `base_url` for the API model `model`."""

    grounding = "the server's guided decoding (a GBNF grammar of the choices left, line by line, every line checked)"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        name: str | None = None,
        settings: GenerationSettings | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        super().__init__(name or model, settings)
        self.base_url, self.model = base_url, model
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self._secret = api_key or NO_KEY
        self._client = openai.OpenAI(base_url=base_url, api_key=self._secret, timeout=timeout_s, max_retries=max_retries)

    def _stream(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, extra_body: dict | None = None
    ) -> Iterator[str]:
        try:
            with self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                max_tokens=settings.max_new_tokens,
                temperature=settings.temperature if settings.sampling else 0.0,
                top_p=settings.top_p,
                seed=openai.omit if settings.seed is None else settings.seed,
                extra_body=extra_body,
            ) as chunks:
                for chunk in chunks:
                    if stop.is_set():
                        return
                    text = chunk.choices[0].delta.content if chunk.choices else None
                    if text:
                        yield text
        except openai.APITimeoutError:  # also a stall mid-stream
            raise LLMTimeoutError(
                f"{self.name}: no answer from {self.base_url} within {self.timeout_s}s ({self.max_retries} retries)"
            ) from None
        except openai.APIStatusError as exc:
            raise LLMHTTPError(
                f"{self.name}: {self.base_url} answered HTTP {exc.status_code} after {self.max_retries} "
                f"retries: {self._redact(exc.message)}",
                status=exc.status_code,
            ) from None
        except openai.APIConnectionError as exc:
            raise LLMHTTPError(f"{self.name}: cannot reach {self.base_url}: {self._redact(str(exc))}") from None

    def _stream_grounded(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, constraint: AnswerConstraint
    ) -> Iterator[str]:
        line_settings = dataclasses.replace(settings, max_new_tokens=constraint.longest_choice_bytes() + 1)

        def decode_line(answer: str, used: frozenset[int]) -> Iterator[str]:
            gbnf = constraint.gbnf(used)
            request = dict.fromkeys(GRAMMAR_FIELDS, gbnf) | {"continue_final_message": True, "add_generation_prompt": False}
            try:
                line = "".join(self._stream([*messages, {"role": "assistant", "content": answer}], line_settings, stop, request))
            except LLMHTTPError as error:
                if error.status in REFUSED:
                    answered = str(error).removeprefix(f"{self.name}: {self.base_url} ")
                    raise GroundingUnsupportedError(
                        f"{self.name}: {self.base_url} refused guided decoding ({answered}), so its answers cannot be grounded"
                    ) from None
                raise
            if constraint.allowed(line, used) is None and not stop.is_set():
                unsupported = GroundingUnsupportedError if not used else GroundingError
                raise unsupported(
                    f"{self.name}: {self.base_url} ignored the guided-decoding request ({', '.join(GRAMMAR_FIELDS)}): it "
                    f"wrote {line.strip()[:80]!r}, not an allowed line, so its answers are not grounded"
                )
            yield line

        yield from write_lines(constraint, decode_line, stop)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret != NO_KEY else text

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"
