"""`load_backend`: any model name DUALRec accepts (a preset, 'custom', a local path or 'PRESET+ADAPTER') as a ready
backend. Adapters are served by dualrec.llm.peft_backend, which builds on the presets; this module sits above both."""

from __future__ import annotations

from dualrec.config import DEFAULT_PRESET
from dualrec.llm.base import LLMBackend
from dualrec.llm.presets import ADAPTER_SEPARATOR, build_backend, resolve_preset


def load_backend(name_or_path: str = DEFAULT_PRESET, *, api_key: str | None = None, **overrides) -> LLMBackend:
    """A ready backend for a preset name, 'custom', a local path or 'PRESET+ADAPTER' (a LoRA adapter on its base,
    dualrec.llm.peft_backend); `overrides` replace Preset fields."""
    if ADAPTER_SEPARATOR in str(name_or_path):
        from dualrec.llm.peft_backend import load_adapter_backend  # peft loads only for adapters

        return load_adapter_backend(name_or_path, **overrides)
    return build_backend(resolve_preset(name_or_path, **overrides), api_key=api_key)
