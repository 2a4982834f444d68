"""QLoRA on one CUDA GPU: memory and seconds per step for the real architectures of the Stage 3 GPU presets.

No hub is needed: the model is built from its published configuration with random weights (speed and memory do not
depend on the values), saved to a temporary folder, loaded through the project's own 4-bit path
(`dualrec.finetune.training.trainable_model`: NF4, double quantization, prepare_model_for_kbit_training, LoRA) and trained
with the project's Trainer settings (`training_arguments`) on token batches of a task's full profile's shape
(--batch-size x --grad-accum examples of --max-length tokens, the loss on the last --answer-tokens of each): Stage 3's
(`--task generate`) or the hybrid's ranking adapter's (`--task rerank [--scorer labels]`, 1,024 tokens an example).

    python benchmarks/bench_qlora.py --shape deepseek-r1-distill-qwen-1.5b [--task rerank] --steps 8 [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dualrec.finetune.examples import IGNORE, TASK_PROFILES, FinetuneOptions, profile  # noqa: E402
from dualrec.finetune.training import trainable_model, training_arguments  # noqa: E402
from dualrec.llm import resolve_preset  # noqa: E402
from dualrec.ranking.hybrid import SCORERS  # noqa: E402
from tests.finetune_fixtures import byte_tokenizer  # noqa: E402

# The published configurations (config.json on the hub) of the presets' models.
SHAPES = {
    "mistral-7b-instruct": (
        "mistral",
        dict(
            vocab_size=32768,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            rope_theta=1e6,
        ),
    ),
    "deepseek-r1-distill-qwen-1.5b": (
        "qwen2",
        dict(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            tie_word_embeddings=False,
        ),
    ),
    "smollm2-135m": (
        "llama",
        dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            tie_word_embeddings=True,
        ),
    ),
}


# ML-1M's training users (docs/design.md), who give the fine-tuning examples: 13,536 at the full profiles' 4 a user.
EXAMPLE_USERS = 3_384


class StepClock(TrainerCallback):
    """Wall-clock seconds of every optimiser step (CUDA synchronised)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        torch.cuda.synchronize()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self.started)


def save_random_model(shape: str, folder: Path) -> int:
    """The shape's architecture with random bf16 weights (built on the GPU) and a byte tokenizer, saved; its size."""
    model_type, fields = SHAPES[shape]
    tokenizer = byte_tokenizer()
    config = AutoConfig.for_model(model_type, **fields, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    parameters = model.num_parameters()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return parameters


def token_batches(count: int, length: int, answer: int, vocab: int, seed: int) -> list[dict]:
    """`count` examples of `length` random tokens with the loss on the last `answer` (as Stage 3 masks the prompt)."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (length,), generator=generator).tolist()
        examples.append(
            {"input_ids": ids, "attention_mask": [1] * length, "labels": [IGNORE] * (length - answer) + ids[-answer:]}
        )
    return examples


def bench_options(args: argparse.Namespace, base: str) -> FinetuneOptions:
    """The task's full profile in 4 bits on `base`, with the command line's shape and steps, never validated or saved."""
    full = profile(args.task, "full", args.scorer)
    return dataclasses.replace(
        full,
        base=base,
        four_bit=True,
        max_steps=args.steps,
        batch_size=args.batch_size or full.batch_size,
        grad_accum=args.grad_accum or full.grad_accum,
        max_length=args.max_length or full.max_length,
        eval_steps=10**6,
        save_steps=10**6,
    )


def run(args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"qlora-{args.shape}-"))
    started = time.perf_counter()
    parameters = save_random_model(args.shape, folder)
    built = time.perf_counter() - started
    options = bench_options(args, str(folder))
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model, _ = trainable_model(resolve_preset(str(folder)), options)
    loaded = time.perf_counter() - started
    weights = torch.cuda.memory_allocated() / 2**30
    per_step = options.batch_size * options.grad_accum
    examples = token_batches(
        args.steps * per_step,
        options.max_length,
        args.answer_tokens,
        SHAPES[args.shape][1]["vocab_size"],
        0,
    )
    clock = StepClock()
    trainer = Trainer(
        model=model,
        args=training_arguments(options, folder / "checkpoints"),
        train_dataset=examples,
        eval_dataset=examples[:1],
        callbacks=[clock],
    )
    trainer.train()
    steady = clock.seconds[1:] or clock.seconds  # the first step includes kernel compilation and warm-up
    seconds = statistics.median(steady)
    full_steps = round(EXAMPLE_USERS * options.examples_per_user / per_step)  # the full profile's epoch on ML-1M
    return {
        "shape": args.shape,
        "task": args.task + (f" --scorer {args.scorer}" if args.task == "rerank" else ""),
        "gpu": torch.cuda.get_device_name(),
        "parameters": parameters,
        "trainable": model.get_nb_trainable_parameters()[0],
        "lora": {"r": options.r, "alpha": options.alpha, "targets": list(options.target_modules)},
        "examples_per_step": per_step,
        "tokens_per_example": options.max_length,
        "build_and_save_s": round(built, 1),
        "load_4bit_s": round(loaded, 1),
        "weights_gib": round(weights, 2),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "first_step_s": round(clock.seconds[0], 2),
        "seconds_per_step": round(seconds, 3),
        "tokens_per_s": round(per_step * options.max_length / seconds),
        "full_profile_minutes": round(full_steps * seconds / 60, 1),
        "versions": {"torch": torch.__version__, "bitsandbytes": __import__("bitsandbytes").__version__},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="deepseek-r1-distill-qwen-1.5b")
    parser.add_argument("--task", choices=sorted(TASK_PROFILES), default="generate", help="whose full profile")
    parser.add_argument("--scorer", choices=SCORERS, default="likelihood", help="--task rerank: the scorer's task")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, help="examples per forward pass (default: the profile's)")
    parser.add_argument("--grad-accum", type=int, help="forward passes per step (default: the profile's)")
    parser.add_argument("--max-length", type=int, help="tokens per example (default: the profile's)")
    parser.add_argument("--answer-tokens", type=int, default=100, help="tokens of each example under the loss")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_qlora needs a CUDA GPU (the 4-bit QLoRA path); on a CPU see benchmarks/bench_finetune.py")
    figures = run(args)
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
