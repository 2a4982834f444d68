"""`load_backend`: any model name DUALRec accepts (a preset, 'custom', a local path or 'PRESET+ADAPTER') as a ready
backend. An adapter runs on its base's engine (dualrec.llm.adapters): llama.cpp for a GGUF base (dualrec.llm.gguf_lora),
transformers with peft otherwise (dualrec.llm.peft_backend); this module sits above them and the presets."""

from __future__ import annotations

from dualrec.config import DEFAULT_PRESET
from dualrec.llm.adapters import AdapterSpec, adapter_spec
from dualrec.llm.base import LLMBackend
from dualrec.llm.presets import ADAPTER_SEPARATOR, build_backend, engine_for, resolve_preset


def load_backend(name_or_path: str = DEFAULT_PRESET, *, api_key: str | None = None, **overrides) -> LLMBackend:
    """A ready backend for a preset name, 'custom', a local path or 'PRESET+ADAPTER' (a LoRA adapter on its base);
    `overrides` replace Preset fields (`engine="transformers"` serves an adapter on a GGUF base with peft)."""
    if ADAPTER_SEPARATOR in str(name_or_path):
        return load_adapter(adapter_spec(str(name_or_path), **overrides))
    return build_backend(resolve_preset(name_or_path, **overrides), api_key=api_key)


def load_adapter(adapter: AdapterSpec) -> LLMBackend:
    """The adapter on its base's engine: llama.cpp for a GGUF base (when installed), else transformers with peft."""
    if engine_for(adapter.preset) == "llama.cpp":
        from dualrec.llm.gguf_lora import load_gguf_adapter  # neither torch nor peft once the adapter is converted

        return load_gguf_adapter(adapter)
    from dualrec.llm.peft_backend import load_adapter_backend  # peft loads only for adapters on transformers

    return load_adapter_backend(adapter)
