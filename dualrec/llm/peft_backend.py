"""LoRA adapters on transformers with peft: 'PRESET+ADAPTER' (dualrec.llm.adapters) on a base that is not a GGUF file,
or loaded with engine="transformers" (a GGUF base otherwise runs its adapter on llama.cpp: dualrec.llm.gguf_lora).

The base is loaded through its preset, so nothing is fetched from the hub, and the adapter attached with peft. One copy
of the weights serves both answers: `backend.base()` is a second backend on the same model that switches the adapter
off (peft's `disable_adapter()`) while it generates; the two views share one lock, so they answer one at a time.
Training adapters: dualrec.finetune.training.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from dualrec.llm.adapters import ADAPTER_CONFIG as ADAPTER_CONFIG  # the trainer, the CLI and the tests import these here
from dualrec.llm.adapters import METADATA_FILE as METADATA_FILE
from dualrec.llm.adapters import AdapterSpec, local_preset
from dualrec.llm.adapters import adapter_dir as adapter_dir
from dualrec.llm.adapters import read_metadata as read_metadata
from dualrec.llm.base import GenerationSettings
from dualrec.llm.presets import Preset, build_backend
from dualrec.llm.transformers_backend import TransformersBackend


def base_preset(spec: str, **overrides) -> Preset:
    """The preset of a base model that can carry an adapter, run by transformers (the engine adapters are trained on)."""
    return dataclasses.replace(local_preset(spec, **overrides), engine="transformers")


def load_adapter_backend(adapter: AdapterSpec) -> AdapterBackend:
    """The backend of a checked 'PRESET+ADAPTER': the base loaded once by transformers, the adapter attached and on."""
    backend = build_backend(dataclasses.replace(adapter.preset, engine="transformers"))
    model = PeftModel.from_pretrained(backend.model, adapter.folder)
    return AdapterBackend(model, backend.tokenizer, name=adapter.name, base_name=adapter.base_name, settings=backend.settings)


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

    @contextmanager
    def _generating(self) -> Iterator[None]:
        with self._lock, nullcontext() if self.adapter else self.model.disable_adapter():
            yield
