"""The exceptions the LLM layer raises on purpose; each message says what to do next."""

from __future__ import annotations

from dualrec.errors import DualrecError

FOUR_BIT_FALLBACK = "run without --4bit, use the GGUF preset 'smollm2-135m', or use an API preset such as 'deepseek-v3'"


class LLMError(DualrecError):
    """Base of every error of `dualrec.llm` (a DualrecError: the CLI and the app show its message, no traceback)."""


class UnknownPresetError(LLMError):
    """A model name that is neither a preset, 'custom', nor a local path."""


class MissingAPIKeyError(LLMError):
    """An HTTP preset whose API key is neither passed nor in its environment variable."""


class LLMTimeoutError(LLMError):
    """The endpoint did not answer in time, retries included."""


class LLMHTTPError(LLMError):
    """The endpoint could not be reached or kept failing after the retries; `status` is None when unreachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FourBitUnavailableError(LLMError):
    """4-bit NF4 quantisation was asked for on a machine without CUDA or bitsandbytes."""


class ModelLoadError(LLMError):
    """The model files are missing or could not be loaded."""


class EmptyAnswerError(LLMError):
    """The model finished without producing any text."""
