"""Any OpenAI-compatible chat endpoint (DeepSeek, Mistral, vLLM, Ollama, llama.cpp's server) over HTTP.

Answers stream as server-sent events. The `openai` client retries connection errors, timeouts, 429 and 5xx
with exponential backoff (honouring Retry-After). The API key never appears in repr(), logs or error messages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import openai

from dualrec.llm.base import GenerationSettings, LLMBackend, Message
from dualrec.llm.errors import LLMHTTPError, LLMTimeoutError

NO_KEY = "EMPTY"  # what local servers without authentication are sent


class OpenAIBackend(LLMBackend):
    """Chat completions from `base_url` for the API model `model`."""

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

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        try:
            with self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                max_tokens=settings.max_new_tokens,
                temperature=settings.temperature if settings.sampling else 0.0,
                top_p=settings.top_p,
                seed=openai.omit if settings.seed is None else settings.seed,
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

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret != NO_KEY else text

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"
