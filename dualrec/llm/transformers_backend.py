"""Local models through Hugging Face transformers: a hub id, a local folder, or a GGUF file.

A GGUF file is dequantised once into a safetensors folder under `paths().llm_cache` (parsing a GGUF takes
seconds, the converted folder loads in a fraction of one). 4-bit NF4 through bitsandbytes needs CUDA.
LoRA adapters are served by this engine (wrap `backend.model` with peft) until a GGUF adapter exists.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from dualrec.config import paths
from dualrec.llm.base import GenerationSettings, LLMBackend, Message, looks_like_path
from dualrec.llm.constraint import AnswerConstraint, GroundingError, PrefixTree, TokenTrees, TokenWalker
from dualrec.llm.errors import FOUR_BIT_FALLBACK, FourBitUnavailableError, LLMError, ModelLoadError
from dualrec.llm.reasoning import OPEN

log = logging.getLogger(__name__)


def gguf_cache_folder(gguf: Path) -> Path:
    """Where the converted copy of a GGUF file lives, keyed by its name, size and modification time."""
    stat = gguf.stat()
    return paths().llm_cache / f"{gguf.stem}-{stat.st_size:x}-{stat.st_mtime_ns:x}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file into a transformers folder once; later calls return the cached folder."""
    target = gguf_cache_folder(gguf)
    if target.is_dir():
        return target
    log.info("converting %s to %s (once)", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        if model.hf_quantizer is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        os.rename(scratch, target)  # atomic: a folder under its final name is always complete
    except OSError:
        if not target.is_dir():  # not a race lost to another process: a real failure
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def quantization_kwargs(load_in_4bit: bool) -> dict:
    """from_pretrained arguments for the device: NF4 on CUDA when asked, bf16 on CUDA, fp32 on CPU."""
    if not torch.cuda.is_available():
        if load_in_4bit:
            raise FourBitUnavailableError(f"4-bit NF4 needs a CUDA GPU and none was found: {FOUR_BIT_FALLBACK}")
        return {"dtype": torch.float32}
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if not load_in_4bit:
        return {"dtype": compute, "device_map": "auto"}
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise FourBitUnavailableError(f"4-bit NF4 needs the bitsandbytes package: {FOUR_BIT_FALLBACK}") from None
    nf4 = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True
    )
    return {"quantization_config": nf4, "device_map": "auto"}


def load_transformers(
    source: str | Path,
    *,
    name: str | None = None,
    settings: GenerationSettings | None = None,
    load_in_4bit: bool = False,
) -> TransformersBackend:
    """Load a hub id, a local folder or a `.gguf` file (converted once) into a `TransformersBackend`."""
    kwargs = quantization_kwargs(load_in_4bit)
    path, is_local = Path(source).expanduser(), looks_like_path(source)
    if is_local and not path.exists():
        raise ModelLoadError(f"model file or folder not found: {path}")
    try:
        folder = convert_gguf(path) if path.suffix == ".gguf" else (path if is_local else str(source))
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=is_local)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=is_local, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load {source}: {exc}") from exc
    return TransformersBackend(model, tokenizer, name=name or str(source), settings=settings)


class _StopWhenSet(StoppingCriteria):
    """Ends `model.generate` as soon as either event is set."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> bool:
        return any(event.is_set() for event in self.events)


class TransformersBackend(LLMBackend):
    """A causal LM and its tokenizer; the chat template comes from the tokenizer.

    A grounded answer is one `model.generate` whose logits processor (`GroundedLines`) walks the choices' prefix tree
    over this tokenizer's tokens (`token_tree`, built once per choice set).
    """

    grounding = "transformers (a logits processor on the choices' token prefix tree)"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        settings: GenerationSettings | None = None,
    ) -> None:
        super().__init__(name, settings)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self.token_tree = TokenTrees(lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"])

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        return self._generate(messages, settings, stop)

    def _stream_grounded(
        self, messages: list[Message], settings: GenerationSettings, stop: threading.Event, constraint: AnswerConstraint
    ) -> Iterator[str]:
        processor = GroundedLines(constraint, self.token_tree(constraint.choices), self._encode, self._end_token())
        return self._generate(messages, dataclasses.replace(settings, max_new_tokens=constraint.token_budget()), stop, processor)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _end_token(self) -> int:
        ends = self.model.generation_config.eos_token_id
        end = ends[0] if isinstance(ends, list) else ends
        return self.tokenizer.eos_token_id if end is None else end

    def _generate(
        self,
        messages: list[Message],
        settings: GenerationSettings,
        stop: threading.Event,
        processor: LogitsProcessor | None = None,
    ) -> Iterator[str]:
        """The answer's chunks, from `model.generate` in a worker thread (with `processor` among its logits processors)."""
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        closed = threading.Event()
        failure: list[BaseException] = []
        pad = self.tokenizer.pad_token_id
        kwargs = dict(
            **inputs,
            **sampling_kwargs(settings),
            max_new_tokens=settings.max_new_tokens,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop, closed)]),
            pad_token_id=self.tokenizer.eos_token_id if pad is None else pad,
            logits_processor=LogitsProcessorList([processor] if processor else []),
        )

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the consumer's thread below
                failure.append(exc)
                streamer.end()

        with self._generating():
            if settings.seed is not None:
                torch.manual_seed(settings.seed)  # torch's global generator: sampling is then repeatable
            worker = threading.Thread(target=work, name=f"generate-{self.name}", daemon=True)
            worker.start()
            try:
                if processor is None and prompt.rstrip().endswith(OPEN):  # the template opened the thinking block: balance it
                    yield OPEN + "\n"
                yield from streamer
            finally:
                closed.set()
                worker.join()
        if failure:
            raise LLMError(f"{self.name} failed while generating: {failure[0]}") from failure[0]

    def _generating(self) -> AbstractContextManager:
        """Held while the model generates an answer: the backend's lock (AdapterBackend also sets its adapter)."""
        return self._lock

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class GroundedLines(LogitsProcessor):
    """Lets `model.generate` (one sequence) write only a constraint's answer: the tokens its `TokenWalker` allows."""

    def __init__(self, constraint: AnswerConstraint, tree: PrefixTree, encode: Callable[[str], list[int]], end: int) -> None:
        self.walker = TokenWalker(constraint, tree, encode, end)
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != 1:
            raise GroundingError("a grounded answer is generated one sequence at a time")
        if self.started:
            self.walker.advance(int(input_ids[0, -1]))
        self.started = True
        mask = torch.full_like(scores, float("-inf"))
        mask[:, self.walker.allowed()] = 0
        return scores + mask


def sampling_kwargs(settings: GenerationSettings) -> dict:
    """model.generate arguments for greedy decoding or temperature / top-p sampling."""
    if not settings.sampling:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
