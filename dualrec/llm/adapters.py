"""LoRA adapters as models: the spec 'PRESET+ADAPTER' (`smollm2-135m+adapters/mine`) names a peft adapter folder and
the preset of its base, and is a model wherever a preset is accepted.

A relative adapter folder lives under the models folder (`<DUALREC_HOME>/models`, where the app finds adapters)
unless it starts with '.'; an absolute one is used as it is. The base's engine serves the adapter: llama.cpp for a
GGUF base (the adapter converted once to a GGUF LoRA, dualrec.llm.gguf_lora), transformers with peft otherwise or
when the spec is loaded with engine="transformers" (dualrec.llm.peft_backend). This module loads neither engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dualrec.config import paths
from dualrec.llm.errors import LLMError, ModelLoadError
from dualrec.llm.presets import ADAPTER_SEPARATOR, PRESETS, Preset, resolve_preset

ADAPTER_CONFIG = "adapter_config.json"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class AdapterSpec:
    """A checked 'PRESET+ADAPTER': the spec itself, its base's name and preset, and the adapter's folder."""

    name: str
    base_name: str
    preset: Preset
    folder: Path


def adapter_dir(text: str | Path) -> Path:
    """An adapter folder: absolute or './...' as given, any other relative path under the models folder."""
    path = Path(text).expanduser()
    return path if path.is_absolute() or str(text).startswith(".") else paths().models / path


def read_metadata(folder: Path) -> dict:
    """An adapter's metadata.json ({} for a peft folder made elsewhere)."""
    file = folder / METADATA_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def local_preset(spec: str, **overrides) -> Preset:
    """The preset of a base model that can carry an adapter: a local model (its engine as the preset says)."""
    preset = resolve_preset(spec, **overrides)
    if preset.engine == "openai":
        local = ", ".join(name for name, known in PRESETS.items() if known.engine != "openai")
        raise LLMError(f"{spec} is an API model: a LoRA adapter needs a local base model, such as {local}")
    return preset


def adapter_spec(spec: str, **overrides) -> AdapterSpec:
    """'PRESET+ADAPTER' checked: the folder holds a peft adapter, trained on this base if its metadata says so."""
    base, _, adapter = spec.partition(ADAPTER_SEPARATOR)
    folder = adapter_dir(adapter)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ModelLoadError(
            f"no LoRA adapter in {folder} (no {ADAPTER_CONFIG}); make one with: dualrec finetune --base {base} --out {adapter}"
        )
    trained_on = read_metadata(folder).get("base", {}).get("preset")
    if trained_on and trained_on != base:
        raise ModelLoadError(
            f"the adapter in {folder} was trained on {trained_on}, not {base}: "
            f"load it as {trained_on}{ADAPTER_SEPARATOR}{adapter}"
        )
    return AdapterSpec(spec, base, local_preset(base, **overrides), folder)
