"""How much a local model believes in each of a few candidate answers to one chat prompt: the hybrid's LLM score.

- `log_likelihoods`: the summed log-probability of each candidate's tokens as the answer to a prompt. The prompt is
  evaluated once and its KV cache kept; only the candidates' tokens are evaluated after it, each seeing the prompt and
  its own tokens only (llama.cpp: batches of candidates, each its own sequence on the prompt's cache, in a second
  context on the model's weights; transformers: one forward of all candidates packed into one row on the prompt's
  cache).
- `relative_log_likelihoods`: that after a prompt holding the history minus the same after a neutral prompt, so that
  popular or short titles are not favoured.
- `label_log_probs`: LlamaRec's verbalizer. With the candidates listed in the prompt as (A), (B), ... (`labelled`),
  the log-probability of each label's letter as the answer's next token after "(" (one forward pass).

Messages go through the model's chat template as its backend sends them; a candidate's tokens are its text's own
tokens after the prompt's. Scoring holds the backend's lock (one generation or scoring at a time per model), and an
adapter backend scores with its adapter on or off as it generates. An API backend gives no log-probabilities: LLMError.
"""

from __future__ import annotations

import copy
import ctypes
import string
import sys
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np

from dualrec.llm.base import LLMBackend, Message, Prompt, to_messages
from dualrec.llm.errors import LLMError

LABELS = string.ascii_uppercase  # (A) ... (Z): the verbalizer's labels, one token each after LABEL_PREFIX
LABEL_PREFIX = "("
CANDIDATE_BATCH = 32  # transformers: candidates per packed forward (its logits are tokens x vocab)
SEQUENCES = 32  # llama.cpp: candidates per batch, each its own sequence on the prompt's cache
# llama.cpp: tokens per batch of candidates. ggml's CPU flash attention takes its reference kernel for a batch of 2 to
# 63 rows (each query visits its cells in order) and a tiled one from 64 rows (64-cell tiles, so a candidate's sums
# depend on where the others' cells lie: measured, up to 0.9 nats per candidate); below 64 rows a candidate scores
# exactly as alone, about 10% slower than in one batch.
BATCH_ROWS = 63


def labelled(candidates: Sequence[str]) -> str:
    """The candidates as the verbalizer's prompt lists them: '(A) Toy Story (1995)', one a line."""
    check_label_count(len(candidates))
    return "\n".join(f"{LABEL_PREFIX}{label}) {candidate}" for label, candidate in zip(LABELS, candidates))


def check_label_count(count: int) -> None:
    if not 1 <= count <= len(LABELS):
        raise LLMError(f"the label scorer lists 1 to {len(LABELS)} candidates as (A)...(Z), not {count}")


def log_likelihoods(backend: LLMBackend, prompt: Prompt, candidates: Sequence[str], *, system: str | None = None) -> np.ndarray:
    """The summed log-probability of each candidate's tokens as the start of the answer to `prompt`."""
    if not len(candidates):
        raise LLMError("no candidates to score: pass at least one candidate answer")
    blank = [index for index, candidate in enumerate(candidates) if not candidate.strip()]
    if blank:
        raise LLMError(f"candidate {blank[0]} is blank: every candidate needs some text to score")
    engine = scoring_engine(backend)
    with engine.turn():
        prompt_tokens = engine.chat_tokens(to_messages(prompt, system))
        continuations = [engine.tokens(candidate) for candidate in candidates]
        engine.check_length(len(prompt_tokens) + max(map(len, continuations)))
        return np.array([values.sum() for values in engine.token_log_probs(prompt_tokens, continuations)])


def relative_log_likelihoods(
    backend: LLMBackend,
    prompt: Prompt,
    neutral: Prompt,
    candidates: Sequence[str],
    *,
    system: str | None = None,
    memo: dict[str, float] | None = None,
) -> np.ndarray:
    """Each candidate's log-likelihood after `prompt` minus its log-likelihood after `neutral`.

    `memo` keeps the neutral log-likelihoods between calls (they do not depend on the case): pass the same dict for
    one backend and one neutral prompt, and each candidate's neutral value is computed once.
    """
    memo = {} if memo is None else memo
    missing = [candidate for candidate in dict.fromkeys(candidates) if candidate not in memo]
    if missing:
        memo.update(zip(missing, log_likelihoods(backend, neutral, missing, system=system).tolist()))
    informed = log_likelihoods(backend, prompt, candidates, system=system)
    return informed - np.array([memo[candidate] for candidate in candidates])


def label_log_probs(backend: LLMBackend, prompt: Prompt, count: int, *, system: str | None = None) -> np.ndarray:
    """The log-probability of each of the first `count` labels (A, B, ...) as the next token of an answer that opens
    with '(': the score of the candidates `labelled` lists in `prompt`, from one forward pass."""
    check_label_count(count)
    engine = scoring_engine(backend)
    with engine.turn():
        prompt_tokens = engine.chat_tokens(to_messages(prompt, system)) + engine.tokens(LABEL_PREFIX)
        engine.check_length(len(prompt_tokens))
        label_tokens = [engine.label_token(label) for label in LABELS[:count]]
        return np.array([values[0] for values in engine.token_log_probs(prompt_tokens, [[t] for t in label_tokens])])


def scoring_engine(backend: LLMBackend) -> ScoringEngine:
    """The engine that reads log-probabilities from this backend's model; LLMError for a backend without one."""
    from dualrec.llm.llamacpp_backend import LlamaCppBackend

    if isinstance(backend, LlamaCppBackend):
        return LlamaCppEngine(backend)
    transformers_backend = sys.modules.get("dualrec.llm.transformers_backend")  # loaded if the backend is one of its
    if transformers_backend is not None and isinstance(backend, transformers_backend.TransformersBackend):
        return TransformersEngine(backend)
    raise LLMError(
        f"{backend.name} cannot score candidates: {type(backend).__name__} gives no log-probabilities of given answers. "
        "The hybrid needs a local model (a GGUF on llama.cpp or a transformers model, such as smollm2-135m) or a server "
        "that returns log-probabilities, which the OpenAI-compatible backend does not ask for"
    )


def log_softmax_at(logits: np.ndarray, tokens: Sequence[int]) -> np.ndarray:
    """log softmax(logits[i])[tokens[i]] for each row i of (n, vocab) logits."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1)
    normaliser = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return logits[np.arange(len(tokens)), tokens] - normaliser


class ScoringEngine(ABC):
    """Tokens and log-probabilities from one backend's model; use it inside `turn()`."""

    def __init__(self, backend: LLMBackend, context_length: int) -> None:
        self.backend, self.context_length = backend, context_length

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the backend's lock while scoring: one generation or scoring at a time per model."""
        with self.backend._lock:
            yield

    def check_length(self, tokens: int) -> None:
        if tokens > self.context_length:
            raise LLMError(
                f"the prompt and a candidate take {tokens} tokens, more than {self.backend.name}'s context of "
                f"{self.context_length}: shorten the history"
            )

    def label_token(self, label: str) -> int:
        """The one token a label's letter is after LABEL_PREFIX; LLMError when the tokenizer joins or splits it."""
        prefix, joined = self.tokens(LABEL_PREFIX), self.tokens(LABEL_PREFIX + label)
        if joined[: len(prefix)] != prefix or len(joined) != len(prefix) + 1:
            raise LLMError(
                f"{self.backend.name}'s tokenizer does not write the label {label!r} as one token after '(': "
                "use the likelihood scorer"
            )
        return joined[-1]

    @abstractmethod
    def chat_tokens(self, messages: list[Message]) -> list[int]:
        """The prompt's tokens: the messages through the chat template, the assistant's turn opened."""

    @abstractmethod
    def tokens(self, text: str) -> list[int]:
        """The tokens of a piece of text (no start-of-text token)."""

    @abstractmethod
    def token_log_probs(self, prompt: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        """For each continuation, the log-probability of each of its tokens after the prompt and its tokens before."""


class LlamaCppEngine(ScoringEngine):
    """llama.cpp: the prompt evaluated once, then the continuations in one batch after it, each its own sequence on the
    prompt's KV cache (seeing the prompt and its own tokens only), every token's logits read.

    This runs in a second llama.cpp context on the model's loaded weights (`scoring_context`), made once per model: the
    backend's own context holds one sequence. Measured on the embedded model (see benchmarks/bench_scoring.py): one
    batch of 20 candidates is several times faster than evaluating them one after another from the prompt's end."""

    def __init__(self, backend) -> None:
        self.llama = backend.llama
        super().__init__(backend, self.llama.n_ctx())
        self.formatter = self.chat_formatter()

    def chat_formatter(self):
        """The chat template from the GGUF's metadata, as `create_chat_completion` renders it."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llama.metadata.get("tokenizer.chat_template")
        if self.llama.chat_handler is not None or self.llama.chat_format != "chat_template.default" or not template:
            raise LLMError(
                f"{self.backend.name} has no chat template in its GGUF file (chat format {self.llama.chat_format!r}): "
                "scoring needs the template the model answers with"
            )
        return Jinja2ChatFormatter(
            template=template,
            eos_token=self.token_text(self.llama.token_eos()),
            bos_token=self.token_text(self.llama.token_bos()),
        )

    def token_text(self, token: int) -> str:
        return "" if token == -1 else self.llama.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def chat_tokens(self, messages: list[Message]) -> list[int]:
        return self.tokens(self.formatter(messages=messages).prompt)  # the template writes its own start token

    def tokens(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def token_log_probs(self, prompt: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        context = scoring_context(self.backend)
        try:
            after_prompt = context.evaluate_prompt(prompt)
            fed = [tokens[:-1] for tokens in continuations]  # a continuation's last token is read, not fed
            room = min(BATCH_ROWS, self.context_length - len(prompt))  # check_length: one continuation fits
            scored: list[np.ndarray] = []
            for group in batches(fed, SEQUENCES, room):
                later = context.evaluate_after(len(prompt), group)
                scored += [
                    log_softmax_at(np.vstack([after_prompt, rows]), tokens)
                    for rows, tokens in zip(later, continuations[len(scored) :])
                ]
            return scored
        finally:
            context.clear()


def batches(fed: list[list[int]], sequences: int, tokens: int) -> Iterator[list[list[int]]]:
    """The continuations' fed tokens in consecutive groups of at most `sequences` continuations and `tokens` tokens."""
    group: list[list[int]] = []
    for piece in fed:
        if group and (len(group) == sequences or sum(map(len, group)) + len(piece) > tokens):
            yield group
            group = []
        group.append(piece)
    yield group


def scoring_context(backend) -> ScoringContext:
    """The llama.cpp backend's scoring context, made on its loaded weights at the first use (call it under the
    backend's lock), its LoRA adapter on or off as the backend answers."""
    llama = backend.llama
    context = SCORING_CONTEXTS.get(llama)
    if context is None:
        context = SCORING_CONTEXTS[llama] = ScoringContext(llama)
    context.use_adapter(llama._lora_adapter is not None and getattr(backend, "adapter", True))
    return context


class ScoringContext:
    """A second llama.cpp context on a loaded `Llama`'s weights whose one KV cache holds SEQUENCES sequences: a prompt
    in sequence 0 shared with the others (`llama_memory_seq_cp` only marks its cells), then one continuation per
    sequence after it, all in one batch. Freed with the model.

    Its attention is llama.cpp's flash attention, whose kernel for batches under BATCH_ROWS + 1 rows visits a query's
    unmasked cells in order: a continuation's scores are then exactly those it gets alone, whichever continuations
    share its batch (with the usual attention they moved by up to 0.25 nats, as the sums ran over cells placed
    elsewhere). Against the model's own context (usual attention) the scores differ by up to 0.7 nats per candidate,
    and either differs from the model's fp32 weights on transformers by up to 0.7 (Q4_1 quantisation)."""

    def __init__(self, llama) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)  # its size, threads, types
        params.n_seq_max, params.kv_unified = SEQUENCES, True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.batch_tokens = params.n_batch
        self.context = LlamaContext(model=llama._model, params=params, verbose=False)
        self.batch = LlamaBatch(n_tokens=self.batch_tokens, embd=0, n_seq_max=1, verbose=False)
        self.llama, self.vocab, self.adapter_on, self.shared = llama, llama.n_vocab(), False, 0
        llama._stack.callback(self.close)  # freed before the model's own context and weights, when the Llama closes

    def close(self) -> None:
        """Free this context and its batch (again a no-op)."""
        self.batch.close()
        self.context.close()

    def use_adapter(self, on: bool) -> None:
        """The model's LoRA adapter (loaded with it) on this context, or none."""
        import llama_cpp

        if on == self.adapter_on:
            return
        if on:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.llama._lora_adapter)
            failed = llama_cpp.llama_set_adapters_lora(self.context.ctx, adapters, 1, (ctypes.c_float * 1)(self.llama.lora_scale))
        else:
            failed = llama_cpp.llama_set_adapters_lora(self.context.ctx, None, 0, None)
        if failed:
            raise LLMError(f"llama.cpp could not switch the LoRA adapter {'on' if on else 'off'} for scoring (error {failed})")
        self.adapter_on = on

    def clear(self) -> None:
        self.context.kv_cache_clear()
        self.shared = 0

    def evaluate_prompt(self, prompt: list[int]) -> np.ndarray:
        """(1, vocab): the logits after the prompt, evaluated in sequence 0 from an empty cache."""
        self.clear()
        for start in range(0, len(prompt), self.batch_tokens):
            self.fill([(prompt[start : start + self.batch_tokens], 0, start)], logits=False)
            self.batch.batch.logits[self.batch.batch.n_tokens - 1] = True
            self.context.decode(self.batch)
        return self.logits(1).copy()

    def evaluate_after(self, start: int, group: list[list[int]]) -> list[np.ndarray]:
        """For each piece of `group`, (len(piece), vocab): the logits after each of its tokens, piece i in sequence i
        from position `start` (the prompt's end), seeing the prompt and its own earlier tokens; then they are dropped."""
        if not any(group):
            return [np.empty((0, self.vocab), dtype=np.float32) for _ in group]
        for sequence in range(self.shared + 1, len(group)):
            self.context.kv_cache_seq_cp(0, sequence, -1, -1)
        self.shared = max(self.shared, len(group) - 1)
        pieces = [(tokens, sequence, start) for sequence, tokens in enumerate(group)]
        try:
            self.fill(pieces, logits=True)
            self.context.decode(self.batch)
            return np.split(self.logits(sum(map(len, group))).copy(), np.cumsum(list(map(len, group)))[:-1])
        finally:
            for sequence in range(len(group)):
                self.context.kv_cache_seq_rm(sequence, start, -1)

    def fill(self, pieces: list[tuple[list[int], int, int]], logits: bool) -> None:
        """The batch: each piece's tokens (tokens, sequence, first position), every token's logits kept or none."""
        batch = self.batch.batch
        batch.n_tokens = 0
        for tokens, sequence, position in pieces:
            for offset, token in enumerate(tokens):
                index = batch.n_tokens
                batch.token[index], batch.pos[index], batch.logits[index] = token, position + offset, logits
                batch.seq_id[index][0], batch.n_seq_id[index] = sequence, 1
                batch.n_tokens += 1

    def logits(self, rows: int) -> np.ndarray:
        """The last decode's kept logits, (rows, vocab), a view of llama.cpp's buffer."""
        return np.ctypeslib.as_array(self.context.get_logits(), shape=(rows * self.vocab,)).reshape(rows, self.vocab)


SCORING_CONTEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Llama -> its ScoringContext


class TransformersEngine(ScoringEngine):
    """transformers: one forward of the prompt keeping its cache, then one forward of the continuations packed into a
    single row after it, each seeing the prompt and its own tokens only (a 4-D attention mask, its own positions).

    Measured on the embedded model (a 650-token prompt, 20 candidates, 228 tokens): the packed row takes 0.65 s where
    the candidates padded into a batch on the prompt's cache expanded to the batch took 1.4 s (every row re-reads a
    copy of the whole cache)."""

    def __init__(self, backend) -> None:
        self.model, self.tokenizer = backend.model, backend.tokenizer
        super().__init__(backend, getattr(self.model.config, "max_position_embeddings", None) or sys.maxsize)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """The lock, and an adapter backend's base view with its adapter off (as it generates)."""
        adapter_off = getattr(self.backend, "adapter", True) is False  # an AdapterBackend's base view
        with super().turn(), self.model.disable_adapter() if adapter_off else nullcontext():
            yield

    def chat_tokens(self, messages: list[Message]) -> list[int]:
        return self.tokens(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_log_probs(self, prompt: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([prompt], device=self.model.device), use_cache=True, logits_to_keep=1)
            after_prompt = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            scored = []
            for start in range(0, len(continuations), CANDIDATE_BATCH):
                batch = continuations[start : start + CANDIDATE_BATCH]
                later = self.later_token_log_probs(out.cache, len(prompt), batch)
                scored += [torch.cat([after_prompt[tokens[:1]], rest]).cpu().numpy() for tokens, rest in zip(batch, later)]
            return scored

    def later_token_log_probs(self, prompt_cache, prompt_length: int, batch: list[list[int]]) -> list:
        """For each continuation, the log-probabilities of its second, third, ... tokens: the continuations but their
        last tokens packed into one row on a copy of the prompt's cache."""
        import torch

        device = self.model.device
        fed = [tokens[:-1] for tokens in batch]
        total = sum(map(len, fed))
        if total == 0:
            return [torch.zeros(0, device=device) for _ in batch]
        owner = torch.tensor([row for row, tokens in enumerate(fed) for _ in tokens], device=device)
        offset = torch.tensor([index for tokens in fed for index in range(len(tokens))], device=device)
        inputs = torch.tensor([[token for tokens in fed for token in tokens]], device=device)
        targets = torch.tensor([token for tokens in batch for token in tokens[1:]], device=device)
        sees = torch.cat(
            [
                torch.ones((total, prompt_length), dtype=torch.bool, device=device),  # the prompt, and earlier own tokens:
                (owner[:, None] == owner[None, :]) & (offset[None, :] <= offset[:, None]),
            ],
            dim=1,
        )
        dtype = self.model.get_input_embeddings().weight.dtype  # the compute dtype (a 4-bit model's too)
        mask = torch.zeros(sees.shape, dtype=dtype, device=device).masked_fill(~sees, torch.finfo(dtype).min)
        logits = (
            self.model(
                input_ids=inputs,
                attention_mask=mask[None, None],
                position_ids=(prompt_length + offset)[None],
                cache=copy.deepcopy(prompt_cache),
            )
            .logits[0]
            .float()
        )
        values = logits.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
        return list(torch.split(values, [len(tokens) for tokens in fed]))
