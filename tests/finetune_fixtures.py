"""Helpers for the fine-tuning tests: a stub LSTM, a byte-level chat tokenizer and a tiny random Llama saved as a
local model folder, so Stage 3's wiring is tested in seconds without downloading anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualrec.data.dataset import PAD_ITEM

# ChatML, as SmolLM2's template writes it (without its default system message).
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
END_OF_TURN = "<|im_end|>\n"


class StubLSTM:
    """Top-1 = the item after the last one in the history; records the batches it was asked."""

    window = 30

    def __init__(self, catalogue_size: int) -> None:
        self.catalogue_size = catalogue_size
        self.calls: list[np.ndarray] = []

    def top1(self, histories: np.ndarray) -> np.ndarray:
        self.calls.append(histories)
        last = np.array([row[row != PAD_ITEM][-1] for row in histories])
        return ((last + 1) % self.catalogue_size).astype(np.int32)


def byte_tokenizer(chat_template: str = CHATML):
    """A byte-level BPE tokenizer without merges (one token per byte) and the ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: index for index, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|im_end|>", additional_special_tokens=["<|im_start|>"]
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_llama(folder: Path, hidden_size: int = 32, layers: int = 2) -> Path:
    """A randomly initialised small Llama (q_proj/v_proj like SmolLM2) and its tokenizer, saved into `folder`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
