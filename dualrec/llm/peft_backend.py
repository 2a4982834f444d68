"""LoRA adapters served as models: the spec 'PRESET+ADAPTER' (`smollm2-135m+adapters/mine`) is a model wherever a
preset is accepted (`load_backend` hands it here).

The base is loaded through its preset, so nothing is fetched from the hub, and the adapter attached with peft. One copy
of the weights serves both answers: `backend.base()` is a second backend on the same model that switches the adapter
off (peft's `disable_adapter()`) while it generates; the two views share one lock, so they answer one at a time.

A relative adapter folder lives under the models folder (`<DUALREC_HOME>/models`, where the app finds adapters)
unless it starts with '.'; an absolute one is used as it is. Training adapters: dualrec.finetune.training.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

from peft import PeftModel
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from dualrec.config import paths
from dualrec.llm.base import GenerationSettings, Message
from dualrec.llm.errors import LLMError, ModelLoadError
from dualrec.llm.presets import ADAPTER_SEPARATOR as SEPARATOR
from dualrec.llm.presets import PRESETS, Preset, build_backend, resolve_preset
from dualrec.llm.transformers_backend import TransformersBackend

ADAPTER_CONFIG = "adapter_config.json"
METADATA_FILE = "metadata.json"


def adapter_dir(text: str | Path) -> Path:
    """An adapter folder: absolute or './...' as given, any other relative path under the models folder."""
    path = Path(text).expanduser()
    return path if path.is_absolute() or str(text).startswith(".") else paths().models / path


def base_preset(spec: str, **overrides) -> Preset:
    """The preset of a base model that can carry an adapter: a local model, run by transformers."""
    preset = resolve_preset(spec, **overrides)
    if preset.engine == "openai":
        local = ", ".join(name for name, known in PRESETS.items() if known.engine != "openai")
        raise LLMError(f"{spec} is an API model: a LoRA adapter needs a local base model, such as {local}")
    return dataclasses.replace(preset, engine="transformers")


def read_metadata(folder: Path) -> dict:
    """An adapter's metadata.json ({} for a peft folder made elsewhere)."""
    file = folder / METADATA_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def load_adapter_backend(spec: str, **overrides) -> AdapterBackend:
    """The backend of 'PRESET+ADAPTER': the base loaded once through its preset, the adapter attached and switched on."""
    base, _, adapter = spec.partition(SEPARATOR)
    folder = adapter_dir(adapter)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ModelLoadError(
            f"no LoRA adapter in {folder} (no {ADAPTER_CONFIG}); make one with: dualrec finetune --base {base} --out {adapter}"
        )
    trained_on = read_metadata(folder).get("base", {}).get("preset")
    if trained_on and trained_on != base:
        raise ModelLoadError(
            f"the adapter in {folder} was trained on {trained_on}, not {base}: load it as {trained_on}{SEPARATOR}{adapter}"
        )
    backend = build_backend(base_preset(base, **overrides))
    model = PeftModel.from_pretrained(backend.model, folder)
    return AdapterBackend(model, backend.tokenizer, name=spec, base_name=base, settings=backend.settings)


class AdapterBackend(TransformersBackend):
    """A peft model answering with its adapter on (`adapter=True`) or off; `base()` is the other view of one model."""

    def __init__(
        self,
        model: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        base_name: str,
        settings: GenerationSettings | None = None,
        adapter: bool = True,
        lock: threading.RLock | None = None,
    ) -> None:
        super().__init__(model, tokenizer, name=name, settings=settings)
        self.base_name, self.adapter = base_name, adapter
        self._lock = lock or threading.RLock()  # one for both views: the adapter switch is the model's state

    def base(self) -> AdapterBackend:
        """The base model's backend on the same weights: the adapter is off while it generates."""
        return AdapterBackend(
            self.model,
            self.tokenizer,
            name=self.base_name,
            base_name=self.base_name,
            settings=self.settings,
            adapter=False,
            lock=self._lock,
        )

    def _generate(
        self,
        messages: list[Message],
        settings: GenerationSettings,
        stop: threading.Event,
        processor: LogitsProcessor | None = None,
    ) -> Iterator[str]:
        with self._lock, nullcontext() if self.adapter else self.model.disable_adapter():
            yield from super()._generate(messages, settings, stop, processor)
