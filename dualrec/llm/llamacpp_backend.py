"""GGUF files on the CPU through llama.cpp (`llama-cpp-python`): the default engine for GGUF presets.

It loads in a fraction of a second and decodes several times faster than transformers on a CPU. A LoRA adapter
converted to a GGUF LoRA (dualrec.llm.gguf_lora) is loaded with its base (`lora`); `LlamaCppAdapterBackend.base()`
answers on the same loaded weights with the adapter switched off.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from dualrec.llm.base import GenerationSettings, LLMBackend, Message
from dualrec.llm.constraint import AnswerConstraint, GroundingUnsupportedError, TokenTrees, TokenWalker, pick_token
from dualrec.llm.errors import LLMError, ModelLoadError


def llamacpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def load_llamacpp(
    gguf: str | Path,
    *,
    name: str | None = None,
    settings: GenerationSettings | None = None,
    context_length: int = 4096,
    n_threads: int | None = None,
    lora: Path | None = None,
) -> LlamaCppBackend:
    """Load a GGUF file, with the GGUF LoRA adapter `lora` on it if given; the chat template comes from the metadata.

    `n_threads` (decoding and prompt) defaults to half the cores: llama.cpp's threads spin-wait on each other,
    and on a busy machine (the app's other work, other processes) more threads than free cores is many times slower.
    """
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ModelLoadError("the llama.cpp engine needs llama-cpp-python: pip install llama-cpp-python") from None

    n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
    path = Path(gguf).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    try:
        llama = Llama(
            model_path=str(path),
            lora_path=str(lora) if lora else None,
            n_ctx=context_length,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc
    return LlamaCppBackend(llama, name=name or path.name, settings=settings)


class LlamaCppBackend(LLMBackend):
    """A `llama_cpp.Llama` model answering through `create_chat_completion(stream=True)`.

    A grounded answer is decoded by us on llama.cpp's forward pass: at each step a `TokenWalker` on the choices' prefix
    tree over this model's tokens (`token_tree`, built once per choice set) says which tokens may come next, and the
    next token is the most likely of them (or drawn among them). Tokens that are the only ones allowed (the line
    heads, the genres, a title's only continuation) are not chosen but read, several per forward pass.
    """

    grounding = "llama.cpp (our decoder on the choices' token prefix tree)"

    def __init__(
        self, llama, *, name: str, settings: GenerationSettings | None = None, lock: AbstractContextManager | None = None
    ) -> None:
        super().__init__(name, settings)
        self.llama = llama
        self._lock = lock or threading.Lock()
        self.token_tree = TokenTrees(lambda texts: [self._encode(text) for text in texts])

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        with self._lock:
            self.llama.reset()  # re-read the whole prompt: a reused cached prefix shifts the logits, breaking repeatability
            chunks = self.llama.create_chat_completion(
                messages=messages,
                stream=True,
                max_tokens=settings.max_new_tokens,
                temperature=settings.temperature if settings.sampling else 0.0,
                top_p=settings.top_p,
                seed=settings.seed,
            )
            try:
                for chunk in chunks:
                    if stop.is_set():
                        return
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        yield text
            finally:
                chunks.close()

    def _stream_grounded(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, constraint: AnswerConstraint
    ) -> Iterator[str]:
        with self._lock:
            self.llama.reset()  # as in _stream: the same answer for the same prompt
            walker = TokenWalker(constraint, self.token_tree(constraint.choices), self._encode, self.llama.token_eos())
            rng = np.random.default_rng(settings.seed) if settings.sampling else None
            decoder = codecs.getincrementaldecoder("utf-8")()
            pending = self._chat_tokens(messages)  # read by the model once the next token needs its logits
            while not stop.is_set():
                allowed = walker.allowed()
                if allowed == [walker.end]:
                    return
                token = allowed[0]
                if len(allowed) > 1:
                    self.llama.eval(pending)
                    pending = []
                    logits = np.ctypeslib.as_array(self.llama._ctx.get_logits_ith(-1), shape=(self.llama.n_vocab(),))
                    token = pick_token(logits, allowed, settings.temperature, settings.top_p, rng)
                walker.advance(token)
                pending.append(token)
                if text := decoder.decode(self.llama.detokenize([token])):
                    yield text

    def _encode(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode(), add_bos=False, special=False) if text else []

    def _chat_tokens(self, messages: list[Message]) -> list[int]:
        """The prompt's tokens as create_chat_completion reads them: the GGUF's chat template, the answer opened."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise GroundingUnsupportedError(f"{self.name} has no chat template in its GGUF metadata, so it cannot be grounded")
        model = self.llama._model
        eos, bos = self.llama.token_eos(), self.llama.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        formatted = formatter(messages=messages)
        return self.llama.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)

    def close(self) -> None:
        self.llama.close()


class LoraSwitch:
    """The LoRA adapter a `Llama` was loaded with (`lora_path`), switched on or off on the loaded weights (no reload)."""

    def __init__(self, llama) -> None:
        self.llama, self.on = llama, True  # Llama(lora_path=...) sets it on, at its lora_scale
        self.lock = threading.RLock()

    def turn(self, on: bool) -> None:
        """The adapter on, or off (cleared: the base's own computation); a change drops the tokens cached with the other."""
        import llama_cpp

        if on == self.on:
            return
        if on:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.llama._lora_adapter)
            failed = llama_cpp.llama_set_adapters_lora(self.llama.ctx, adapters, 1, (ctypes.c_float * 1)(self.llama.lora_scale))
        else:
            failed = llama_cpp.llama_set_adapters_lora(self.llama.ctx, None, 0, None)
        if failed:
            raise LLMError(f"llama.cpp could not switch the LoRA adapter {'on' if on else 'off'} (error {failed})")
        self.llama.reset()
        self.on = on


class AdapterLock:
    """A view's lock on a model with a LoRA adapter: holding it holds the model's one lock, the adapter switched as the
    view wants it, so whatever runs under a backend's lock (generation, grounding, scoring) sees the right weights."""

    def __init__(self, switch: LoraSwitch, adapter: bool) -> None:
        self.switch, self.adapter = switch, adapter

    def __enter__(self) -> AdapterLock:
        self.switch.lock.acquire()
        try:
            self.switch.turn(self.adapter)
        except BaseException:
            self.switch.lock.release()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.switch.lock.release()


class LlamaCppAdapterBackend(LlamaCppBackend):
    """A GGUF model loaded with a LoRA adapter, answering with it on (`adapter=True`) or off; `base()` is the other view
    of the same loaded weights. The two views share one lock, so they answer one at a time."""

    def __init__(
        self,
        llama,
        *,
        name: str,
        base_name: str,
        settings: GenerationSettings | None = None,
        adapter: bool = True,
        switch: LoraSwitch | None = None,
    ) -> None:
        super().__init__(llama, name=name, settings=settings, lock=AdapterLock(switch or LoraSwitch(llama), adapter))
        self.base_name, self.adapter = base_name, adapter

    def base(self) -> LlamaCppAdapterBackend:
        """The base model's backend on the same weights: the adapter is off while it answers."""
        return LlamaCppAdapterBackend(
            self.llama,
            name=self.base_name,
            base_name=self.base_name,
            settings=self.settings,
            adapter=False,
            switch=self._lock.switch,
        )

    def close(self) -> None:
        """Let go of the model: llama.cpp frees it once no view holds it (the other view keeps answering)."""
        del self.llama, self._lock
