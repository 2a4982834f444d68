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
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from dualrec.llm.base import GenerationSettings, LLMBackend, Message
from dualrec.llm.constraint import AnswerConstraint, TokenTrees, TokenWalker, pick_token
from dualrec.llm.errors import LLMError, ModelLoadError

PROMPT_CHUNK = 64  # tokens of the prompt read at once; a cached prompt is reused in whole chunks


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
    if lora:
        llama._stack.callback(leave_the_adapter_to_the_model, llama)
    return LlamaCppBackend(llama, name=name or path.name, settings=settings)


def leave_the_adapter_to_the_model(llama) -> None:
    """Run first when a `Llama` with a LoRA adapter closes: llama.cpp frees a loaded adapter with its model, so
    llama-cpp-python's own free of it, which runs while contexts using it are still alive, is skipped (with it, a
    closed or collected adapter model crashed the process: a double free, or a floating-point exception)."""
    llama._lora_adapter = None


class LlamaCppBackend(LLMBackend):
    """A `llama_cpp.Llama` model, decoded by us on llama.cpp's forward pass: the prompt in the GGUF's chat template, then
    one token at a time, the most likely or drawn (temperature, top-p; `pick_token`), until the end of the turn.

    A grounded answer is decoded the same way: at each step a `TokenWalker` on the choices' prefix tree over this model's
    tokens (`token_tree`, built once per choice set) says which tokens may come next, and the next token is chosen among
    them. Tokens that are the only ones allowed (the line heads, the genres, a title's only continuation) are not chosen
    but read, several per forward pass.

    The prompt is read in chunks at fixed positions (multiples of PROMPT_CHUNK), and the model's cache keeps the last
    one: the same prompt again is not read again, a prompt that shares whole chunks with it reads only the rest. What a
    chunk leaves in the cache does not depend on what follows it, so an answer is the same as after a fresh read.
    """

    grounding = "llama.cpp (our decoder on the choices' token prefix tree)"

    def __init__(
        self, llama, *, name: str, settings: GenerationSettings | None = None, lock: AbstractContextManager | None = None
    ) -> None:
        super().__init__(name, settings)
        self.llama = llama
        self._lock = lock or threading.Lock()
        self.token_tree = TokenTrees(lambda texts: [self._encode(text) for text in texts])
        self._prompt: list[int] = []  # the last prompt read, and the logits after it
        self._prompt_logits: np.ndarray | None = None

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        return self._decode(messages, settings, stop)

    def _stream_grounded(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, constraint: AnswerConstraint
    ) -> Iterator[str]:
        walker = TokenWalker(constraint, self.token_tree(constraint.choices), self._encode, self.llama.token_eos())
        return self._decode(messages, settings, stop, walker)

    def _decode(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, walker: TokenWalker | None = None
    ) -> Iterator[str]:
        """The answer's text as it is decoded: any tokens until the end of the turn (at most `max_new_tokens`, and the
        context's room), or the tokens `walker` allows until it allows only the end."""
        import llama_cpp

        with self._lock:
            llama = self.llama
            rng = np.random.default_rng(settings.seed) if settings.sampling else None
            logits = self._read_prompt(self._chat_tokens(messages))
            room = min(settings.max_new_tokens, llama.n_ctx() - llama.n_tokens) if walker is None else sys.maxsize
            decoder = codecs.getincrementaldecoder("utf-8")()
            pending: list[int] = []  # chosen or forced tokens the model has not read yet
            for _ in range(room):
                if stop.is_set():
                    return
                allowed = walker.allowed() if walker else None
                if walker and allowed == [walker.end]:
                    return
                if allowed and len(allowed) == 1:
                    token = allowed[0]
                else:
                    if pending:
                        llama.eval(pending)
                        logits, pending = self._logits(), []
                    token = pick_token(logits, allowed, settings.temperature, settings.top_p, rng)
                    if walker is None and llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                        return
                if walker:
                    walker.advance(token)
                pending.append(token)
                if text := decoder.decode(llama.detokenize([token])):
                    yield text

    def _logits(self) -> np.ndarray:
        """The logits after the last token the model read (a view into llama.cpp's buffer: valid until it reads more)."""
        return np.ctypeslib.as_array(self.llama._ctx.get_logits_ith(-1), shape=(self.llama.n_vocab(),))

    def _read_prompt(self, tokens: list[int]) -> np.ndarray:
        """The logits after the prompt `tokens`, which the model's cache then holds from position 0: read in chunks at
        fixed positions, only from the first chunk not shared with the last prompt read (none when it is the same)."""
        llama = self.llama
        if len(tokens) >= llama.n_ctx():
            raise LLMError(f"the prompt has {len(tokens)} tokens, more than {self.name}'s context of {llama.n_ctx()}")
        kept = len(self._prompt) if llama.n_tokens >= len(self._prompt) else 0  # a reset (an adapter switch) empties it
        kept = kept if llama.input_ids[:kept].tolist() == self._prompt[:kept] else 0
        if kept == len(tokens) and self._prompt == tokens:
            llama.n_tokens = kept  # the last answer's tokens are dropped at the next read
            return self._prompt_logits
        shared = next((i for i, (a, b) in enumerate(zip(self._prompt[:kept], tokens)) if a != b), min(kept, len(tokens)))
        llama.n_tokens = min(shared, len(tokens) - 1) // PROMPT_CHUNK * PROMPT_CHUNK
        for start in range(llama.n_tokens, len(tokens), PROMPT_CHUNK):
            llama.eval(tokens[start : start + PROMPT_CHUNK])
        self._prompt, self._prompt_logits = list(tokens), self._logits().copy()
        return self._prompt_logits

    def _encode(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode(), add_bos=False, special=False) if text else []

    def _chat_tokens(self, messages: list[Message]) -> list[int]:
        """The prompt's tokens as create_chat_completion would read them: the GGUF's chat template, the answer opened."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise LLMError(f"{self.name} has no chat template in its GGUF metadata, so llama.cpp cannot write its chat prompt")
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
