"""Stage 2's language models behind one interface: `load_backend(name)` then `generate` or `stream`.

Importing this package is cheap: torch, transformers, llama.cpp and openai load only with their backend.
"""

from dualrec.config import DEFAULT_PRESET
from dualrec.llm.base import GenerationSettings, LLMBackend, Message, Prompt, to_messages
from dualrec.llm.errors import (
    FOUR_BIT_FALLBACK,
    EmptyAnswerError,
    FourBitUnavailableError,
    LLMError,
    LLMHTTPError,
    LLMTimeoutError,
    MissingAPIKeyError,
    ModelLoadError,
    UnknownPresetError,
)
from dualrec.llm.loading import load_backend
from dualrec.llm.presets import (
    ADAPTER_SEPARATOR,
    PRESETS,
    Preset,
    adapter_on,
    build_backend,
    gguf_path,
    resolve_preset,
)
from dualrec.llm.reasoning import split_reasoning

__all__ = [
    "ADAPTER_SEPARATOR",
    "DEFAULT_PRESET",
    "FOUR_BIT_FALLBACK",
    "PRESETS",
    "EmptyAnswerError",
    "FourBitUnavailableError",
    "GenerationSettings",
    "LLMBackend",
    "LLMError",
    "LLMHTTPError",
    "LLMTimeoutError",
    "Message",
    "MissingAPIKeyError",
    "ModelLoadError",
    "Preset",
    "adapter_on",
    "Prompt",
    "UnknownPresetError",
    "build_backend",
    "gguf_path",
    "load_backend",
    "resolve_preset",
    "split_reasoning",
    "to_messages",
]
