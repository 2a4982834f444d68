"""Stage 3's LoRA training with peft on dualrec.finetune.examples's examples.

peft adds the LoRA layers (on a 4-bit NF4 base prepared for k-bit training on CUDA: QLoRA) and transformers' Trainer
runs the loop: progress bar, validation loss, checkpoints, resume. The first Ctrl-C ends it after the current step
with a checkpoint. The result is a standard peft adapter folder plus metadata.json, which dualrec.llm.peft_backend
serves.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError
from dualrec.finetune.examples import (
    IGNORE,
    SHOWN,
    TARGETS,
    FinetuneOptions,
    TopOne,
    build_examples,
    encode_all,
    example_users,
    one_per_user,
)
from dualrec.llm import Preset, build_backend, gguf_path
from dualrec.llm.peft_backend import ADAPTER_CONFIG, METADATA_FILE, base_preset, read_metadata
from dualrec.llm.transformers_backend import convert_gguf

CHECKPOINTS = "checkpoints"
FORMAT_VERSION = 1


def base_tokenizer(preset: Preset) -> PreTrainedTokenizerBase:
    """The base model's tokenizer (a GGUF preset's from its converted folder), without loading the weights."""
    gguf = gguf_path(preset)
    return AutoTokenizer.from_pretrained(convert_gguf(gguf) if gguf else preset.model)


def use_four_bit(options: FinetuneOptions) -> bool:
    return torch.cuda.is_available() if options.four_bit is None else options.four_bit


def trainable_model(preset: Preset, options: FinetuneOptions) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """The base in fp32 (CPU), bf16 (GPU) or 4-bit NF4 prepared for k-bit training (QLoRA), with new LoRA layers.

    Checkpoints name the loaded folder as their base (a GGUF preset's converted folder: plain peft loads them offline).
    """
    four_bit = use_four_bit(options)
    backend = build_backend(dataclasses.replace(preset, load_in_4bit=four_bit))
    model = prepare_model_for_kbit_training(backend.model) if four_bit else backend.model
    lora = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as error:
        raise DualrecError(
            f"{preset.name} has no layers {', '.join(options.target_modules)} for LoRA ({error}); choose others with "
            f"--target-modules"
        ) from None
    return model, backend.tokenizer


class StopOnInterrupt(TrainerCallback):
    """The first Ctrl-C ends training after the current step, with a checkpoint; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, signum: int, frame: object) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if self.requested:
            control.should_save = control.should_training_stop = True

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Catch Ctrl-C inside (only the main thread can; elsewhere Ctrl-C keeps its meaning)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self.request)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def last_checkpoint(folder: Path) -> Path | None:
    """The latest complete checkpoint (the Trainer writes its state file last), or None."""
    done = [path for path in folder.glob("checkpoint-*") if (path / "trainer_state.json").is_file()]
    return max(done, key=checkpoint_step, default=None)


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.rpartition("-")[2])


def training_arguments(options: FinetuneOptions, folder: Path) -> TrainingArguments:
    """The Trainer's settings: bf16 (else fp16) mixed precision on CUDA, fp32 on a CPU; the last two checkpoints kept."""
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=str(folder),
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        learning_rate=options.learning_rate,
        max_steps=options.max_steps or -1,
        num_train_epochs=options.epochs,
        logging_steps=min(10, options.eval_steps),
        eval_strategy="steps",
        eval_steps=options.eval_steps,
        eval_on_start=True,  # the base model's validation loss, to compare with
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=2,
        seed=options.seed,
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=not cuda,
        report_to="none",
    )


def last_logged(history: list[dict], key: str) -> tuple[int | None, float | None]:
    """(step, value) of the Trainer's last log entry holding `key`."""
    entry = next((entry for entry in reversed(history) if key in entry), {})
    return entry.get("step"), entry.get(key)


def resume_point(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh start); refuses to train over an adapter or its checkpoints."""
    start = last_checkpoint(out / CHECKPOINTS)
    if resume and start is None:
        raise DualrecError(f"No checkpoint to resume in {out / CHECKPOINTS}; run without --resume.")
    if not resume and (start or (out / ADAPTER_CONFIG).is_file()):
        raise DualrecError(
            f"{out} already holds an adapter or checkpoints: pass --resume to continue its training, or choose another --out."
        )
    return start if resume else None


def encoded_examples(
    dataset: Dataset, lstm: TopOne, options: FinetuneOptions, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[dict], list[dict]]:
    """The examples of every training user and of `val_examples` validation users, as token ids and labels."""
    train = encode_all(tokenizer, build_examples(dataset, example_users(dataset, "train"), lstm, options), options.max_length)
    val = encode_all(tokenizer, one_per_user(dataset, "val", lstm, options, options.val_examples), options.max_length)
    if not train or not val:
        raise DualrecError(
            f"{len(train)} training and {len(val)} validation examples: fine-tuning needs users with {SHOWN + TARGETS} or more "
            f"catalogue movies, and a --max-length (now {options.max_length}) that leaves room for the answer after the prompt."
        )
    return train, val


def final_val_loss(trainer: Trainer, interrupted: bool) -> float | None:
    """The validation loss at the last step: logged there, else computed (after a Ctrl-C: the last one logged)."""
    step, loss = last_logged(trainer.state.log_history, "eval_loss")
    return trainer.evaluate()["eval_loss"] if step != trainer.state.global_step and not interrupted else loss


def adapter_metadata(
    dataset: Dataset,
    options: FinetuneOptions,
    preset: Preset,
    trainer: Trainer,
    examples: dict,
    seconds: float,
    resumed: int,
    interrupted: bool,
) -> dict:
    """What metadata.json records: base, data, examples, options, steps, losses (final and logged), time, versions."""
    state = trainer.state
    logged = [{key: entry[key] for key in ("step", "loss", "eval_loss") if key in entry} for entry in state.log_history]
    return {
        "format": FORMAT_VERSION,
        "status": "interrupted" if interrupted else "completed",
        "base": {"preset": options.base, "model": preset.model, "gguf_file": preset.gguf_file, "four_bit": use_four_bit(options)},
        "data": {"fingerprint": dataset.fingerprint, "config": dataset.config.as_dict()},
        "examples": examples | {"history": SHOWN, "targets": TARGETS, "template": options.template},
        "options": options.as_dict(),
        "seed": options.seed,
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
        "resumed_from_step": resumed or None,
        "train_loss": last_logged(state.log_history, "loss")[1],
        "val_loss": final_val_loss(trainer, interrupted),
        "history": [entry for entry in logged if "loss" in entry or "eval_loss" in entry],
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(state.global_step - resumed, 1), 2),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }


def train_adapter(
    dataset: Dataset,
    lstm: TopOne,
    options: FinetuneOptions,
    out: Path,
    resume: bool = False,
    progress: Callable[[str], None] = print,
) -> dict:
    """Train a LoRA adapter into `out` (the peft files and metadata.json) and return its metadata.

    Checkpoints go to out/checkpoints and are removed when training completes. After a Ctrl-C they stay, the adapter
    of the last step is saved with status "interrupted", and `resume=True` goes on from the last complete checkpoint.
    """
    start = resume_point(out, resume)
    preset = base_preset(options.base)
    model, tokenizer = trainable_model(preset, options)
    train, val = encoded_examples(dataset, lstm, options, tokenizer)
    trainable, total = model.get_nb_trainable_parameters()
    progress(f"{len(train):,} training and {len(val)} validation examples; {trainable:,} of {total:,} parameters trained")
    stopper = StopOnInterrupt()
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE)
    trainer = Trainer(
        model=model,
        args=training_arguments(options, out / CHECKPOINTS),
        data_collator=collator,
        train_dataset=train,
        eval_dataset=val,
        callbacks=[stopper],
    )
    started = time.perf_counter()
    with stopper.installed():
        trainer.train(resume_from_checkpoint=str(start) if start else None)
    examples = {"train": len(train), "val": len(val), "train_users": len(example_users(dataset, "train"))}
    resumed = checkpoint_step(start) if start else 0
    metadata = adapter_metadata(
        dataset, options, preset, trainer, examples, time.perf_counter() - started, resumed, stopper.requested
    )
    # The adapter names the preset's model (hub id or folder): portable, and how the app finds the preset;
    # `load_adapter_backend` loads the base through the preset, so nothing is fetched. Embeddings are never trained.
    model.peft_config["default"].base_model_name_or_path = preset.model
    model.save_pretrained(out, save_embedding_layers=False)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    if not stopper.requested:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return read_metadata(out)
