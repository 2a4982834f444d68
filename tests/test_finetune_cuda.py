"""Stage 3's QLoRA path on a CUDA GPU: a 4-bit NF4 base, prepared for k-bit training, trains a LoRA adapter that saves
and reloads on a 4-bit base. Skipped without CUDA and bitsandbytes (CI has neither); run on a GPU machine with
`pytest tests/test_finetune_cuda.py`. The base is a small Llama built from a config (no hub needed); the examples come
from the generated MovieLens fixture, with a stub top-1 (the Stage 1 LSTM needs TensorFlow, which is not the point here).
"""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.data.dataset import load_dataset
from dualrec.finetune.examples import short_run
from dualrec.finetune.training import train_adapter
from dualrec.llm import load_backend
from dualrec.llm.peft_backend import ADAPTER_CONFIG
from tests.finetune_fixtures import StubLSTM, tiny_llama

bnb = pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPT = "Below is a user's movie watching history:\n- Toy Story (1995) (Animation, Children's, Comedy)\nRecommend 1 movie."


def four_bit_layers(model: torch.nn.Module) -> int:
    return sum(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())


def greedy_ids(backend, adapter: bool) -> list[int]:
    """16 greedily generated token ids (at least 16: a barely trained model may otherwise end at once)."""
    inputs = backend.tokenizer(PROMPT, return_tensors="pt").to("cuda")
    with torch.inference_mode(), nullcontext() if adapter else backend.model.disable_adapter():
        output = backend.model.generate(**inputs, do_sample=False, min_new_tokens=16, max_new_tokens=16)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def test_qlora_trains_a_4bit_base_and_the_adapter_reloads_on_a_4bit_base(ml_dir, tmp_path):
    dataset = load_dataset(ml_dir)
    base = str(tiny_llama(tmp_path / "base", hidden_size=256, layers=4))
    options = short_run(
        12, base=base, batch_size=4, grad_accum=2, learning_rate=5e-3, val_examples=8, eval_steps=6, save_steps=6, max_length=2048
    )
    out = tmp_path / "qlora"
    metadata = train_adapter(dataset, StubLSTM(dataset.catalogue_size), options, out, progress=print)
    print(
        json.dumps({key: metadata[key] for key in ("steps", "train_loss", "val_loss", "seconds", "seconds_per_step", "device")})
    )
    val_losses = [entry["eval_loss"] for entry in metadata["history"] if "eval_loss" in entry]
    assert metadata["status"] == "completed" and metadata["base"]["four_bit"] is True and metadata["device"] != "cpu"
    assert len(val_losses) == 3 and val_losses[-1] < val_losses[0]  # steps 0, 6, 12: it learns
    assert (out / ADAPTER_CONFIG).is_file() and not (out / "checkpoints").exists()

    backend = load_backend(f"{base}+{out}", load_in_4bit=True)
    assert four_bit_layers(backend.model) == 4 * 7  # q, k, v, o, gate, up, down per layer, all 4-bit
    assert next(backend.model.parameters()).device.type == "cuda"
    tuned, plain = greedy_ids(backend, adapter=True), greedy_ids(backend, adapter=False)
    assert len(tuned) == len(plain) == 16 and tuned != plain  # one 4-bit model; the adapter changes its answer
    backend.close()
