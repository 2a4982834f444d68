"""How much a local model believes in each of a few candidate answers to one chat prompt: the hybrid's LLM score.

- `log_likelihoods`: the summed log-probability of each candidate's tokens as the answer to a prompt. The prompt is
  evaluated once and its KV cache kept; only the candidates' tokens are evaluated after it (llama.cpp: one candidate
  after another from the prompt's end; transformers: one forward of all candidates packed into one row on the prompt's
  cache, each seeing the prompt and its own tokens only).
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
import string
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np

from dualrec.llm.base import LLMBackend, Message, Prompt, to_messages
from dualrec.llm.errors import LLMError

LABELS = string.ascii_uppercase  # (A) ... (Z): the verbalizer's labels, one token each after LABEL_PREFIX
LABEL_PREFIX = "("
CANDIDATE_BATCH = 32  # transformers: candidates per packed forward (its logits are tokens x vocab)


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
    """llama.cpp: the prompt evaluated once, then each continuation from the prompt's end, every token's logits read."""

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
        llama = self.llama
        llama.reset()
        try:
            llama.eval(prompt)
            after_prompt = self.logits_row(llama._ctx.get_logits_ith(-1))
            return [
                log_softmax_at(np.vstack([after_prompt, self.every_logits(tokens[:-1], len(prompt))]), tokens)
                for tokens in continuations
            ]
        finally:
            llama.reset()  # the next generation re-reads its whole prompt (as the backend's own calls do)

    def every_logits(self, tokens: list[int], start: int) -> np.ndarray:
        """(len(tokens), vocab): the logits after each token, evaluated from position `start` on (the KV cache beyond
        `start` dropped first). `Llama.eval` keeps no logits unless the model was loaded with logits_all=True, so
        this is its loop asking the batch for every token's logits."""
        llama = self.llama
        vocab = llama.n_vocab()
        llama._ctx.kv_cache_seq_rm(0, start, -1)
        rows = [np.empty((0, vocab), dtype=np.float32)]
        for offset in range(0, len(tokens), llama.n_batch):
            chunk = tokens[offset : offset + llama.n_batch]
            llama._batch.set_batch(chunk, n_past=start + offset, logits_all=True)
            llama._ctx.decode(llama._batch)
            rows.append(np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(len(chunk) * vocab,)).reshape(len(chunk), vocab))
        return np.vstack(rows)

    def logits_row(self, pointer) -> np.ndarray:
        return np.ctypeslib.as_array(pointer, shape=(self.llama.n_vocab(),)).copy()[None]


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
