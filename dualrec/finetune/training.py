"""Stage 3's LoRA training with peft on dualrec.finetune.examples's examples.

peft adds the LoRA layers (on a 4-bit NF4 base prepared for k-bit training on CUDA: QLoRA) and transformers' Trainer
runs the loop: progress bar, validation loss, checkpoints, resume. The first Ctrl-C ends it after the current step
with a checkpoint. The result is a standard peft adapter folder plus metadata.json, which dualrec.llm.peft_backend
serves.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
from dualrec.finetune.examples import IGNORE, SHOWN, TARGETS, FinetuneOptions, encode_all, example_users
from dualrec.finetune.progress import (
    CHECKPOINTS,
    PROGRESS_FILE,
    SCRATCH_PREFIX,
    checkpoint_step,
    describe_checkpoint,
    last_checkpoint,
    training_lock,
    write_json_atomically,
)
from dualrec.finetune.rerank import Ranker, check_label_tokens, examples_record, task_examples
from dualrec.llm import Preset, build_backend, gguf_path
from dualrec.llm.peft_backend import ADAPTER_CONFIG, METADATA_FILE, base_preset, read_metadata
from dualrec.llm.transformers_backend import convert_gguf

FORMAT_VERSION = 1


def base_tokenizer(preset: Preset) -> PreTrainedTokenizerBase:
    """The base model's tokenizer (a GGUF preset's from its converted folder), without loading the weights."""
    gguf = gguf_path(preset)
    return AutoTokenizer.from_pretrained(convert_gguf(gguf) if gguf else preset.model)


def use_four_bit(options: FinetuneOptions) -> bool:
    return torch.cuda.is_available() if options.four_bit is None else options.four_bit


def use_mixed_precision(options: FinetuneOptions) -> bool:
    """bf16 autocast where it is fast: CUDA, or a CPU with native bf16 (oneDNN's check: AVX512-BF16 or AMX)."""
    if options.mixed_precision is not None:
        return options.mixed_precision
    return torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def lora_blocks(model: torch.nn.Module, options: FinetuneOptions) -> list[int] | None:
    """The transformer blocks that get LoRA layers: the last `lora_layers` (None: every block, as when it has fewer)."""
    blocks = model.config.num_hidden_layers
    if options.lora_layers is None or options.lora_layers >= blocks:
        return None
    return list(range(blocks - options.lora_layers, blocks))


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
        layers_to_transform=lora_blocks(model, options),
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


class AnswerTrainer(Trainer):
    """A Trainer whose model computes logits only where the loss is (the answer's tokens), not over the prompt: the
    same loss (a sum over the answer tokens, over the Trainer's count of them), a sixth less work per step."""

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch: int | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, object]:
        targets = inputs["labels"][:, 1:]
        kept = (targets != IGNORE).any(dim=0).nonzero().squeeze(1)  # positions whose next token is in some row's loss
        outputs = model(**{key: value for key, value in inputs.items() if key != "labels"}, logits_to_keep=kept)
        targets = targets[:, kept]
        summed = torch.nn.functional.cross_entropy(
            outputs.logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
        )
        loss = summed / (num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE).sum())
        return (loss, outputs) if return_outputs else loss


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


def training_arguments(options: FinetuneOptions, folder: Path) -> TrainingArguments:
    """The Trainer's settings: mixed precision in bf16 (fp16 on a GPU without bf16) or none; the last two checkpoints kept."""
    cuda, mixed = torch.cuda.is_available(), use_mixed_precision(options)
    bf16 = mixed and (not cuda or torch.cuda.is_bf16_supported())
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
        fp16=mixed and not bf16,
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
    dataset: Dataset, lstm: Ranker, options: FinetuneOptions, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[dict], list[dict]]:
    """The task's examples of every training user and of `val_examples` validation users, as token ids and labels."""
    if options.task == "rerank" and options.scorer == "labels":
        check_label_tokens(tokenizer, options.base, options.candidates)
    train = encode_all(tokenizer, task_examples(dataset, "train", lstm, options), options.max_length)
    val = encode_all(tokenizer, task_examples(dataset, "val", lstm, options, options.val_examples), options.max_length)
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
    seconds: tuple[float, float],
    resumed: int,
    interrupted: bool,
) -> dict:
    """What metadata.json records: base, data, examples, options, steps, losses (final and logged), time (wall clock
    and the process's CPU time, `seconds`), versions."""
    state = trainer.state
    logged = [{key: entry[key] for key in ("step", "loss", "eval_loss") if key in entry} for entry in state.log_history]
    return {
        "format": FORMAT_VERSION,
        "status": "interrupted" if interrupted else "completed",
        "base": {"preset": options.base, "model": preset.model, "gguf_file": preset.gguf_file, "four_bit": use_four_bit(options)},
        "data": {"fingerprint": dataset.fingerprint, "config": dataset.config.as_dict()},
        "task": options.task,
        "examples": examples | examples_record(options),
        "options": options.as_dict(),
        "seed": options.seed,
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
        "resumed_from_step": resumed or None,
        "train_loss": last_logged(state.log_history, "loss")[1],
        "val_loss": final_val_loss(trainer, interrupted),
        "base_val_loss": next(
            (entry["eval_loss"] for entry in state.log_history if entry.get("step") == 0 and "eval_loss" in entry), None
        ),
        "history": [entry for entry in logged if "loss" in entry or "eval_loss" in entry],
        "seconds": round(seconds[0], 1),
        "cpu_seconds": round(seconds[1], 1),
        "seconds_per_step": round(seconds[0] / max(state.global_step - resumed, 1), 2),
        "mixed_precision": use_mixed_precision(options),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }


def train_adapter(
    dataset: Dataset,
    lstm: Ranker,
    options: FinetuneOptions,
    out: Path,
    resume: bool = False,
    progress: Callable[[str], None] = print,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict:
    """Train a LoRA adapter into `out` (the peft files and metadata.json) and return its metadata.

    One training at a time writes into `out` (a lock file; another is refused). Checkpoints go to out/checkpoints and
    are removed when training completes. After a Ctrl-C they stay, the adapter of the last step is saved with status
    "interrupted", and `resume=True` goes on from the last complete checkpoint; a full disk is one message and leaves
    the last complete checkpoint. out/progress.json follows it all (`read_progress`).
    """
    with training_lock(out):
        start = resume_point(out, resume)
        tracker = ProgressFile(out / PROGRESS_FILE, checkpoint_step(start) if start else 0)
        tracker.write("preparing")
        try:
            metadata = run_training(dataset, lstm, options, out, start, progress, [tracker, *callbacks])
        except KeyboardInterrupt:
            tracker.write("stopped")  # a Ctrl-C before training began, or a second one: what was written stays
            raise
        except BaseException as error:
            problem = write_failure(error)
            message = (
                f"No room left to write the training's files ({problem}). Free some disk space and continue with "
                f"--resume: it goes on from the last complete checkpoint ({describe_checkpoint(out)})."
                if problem
                else str(error) or type(error).__name__
            )
            tracker.write("failed", message=message)
            if problem:
                raise DualrecError(message) from None
            raise
        tracker.write(metadata["status"], val_loss=metadata["val_loss"])
        return metadata


def run_training(
    dataset: Dataset,
    lstm: Ranker,
    options: FinetuneOptions,
    out: Path,
    start: Path | None,
    progress: Callable[[str], None],
    callbacks: list[TrainerCallback],
) -> dict:
    """The training itself (see `train_adapter`), from `start` (a checkpoint) or from the base."""
    preset = base_preset(options.base)
    model, tokenizer = trainable_model(preset, options)
    train, val = encoded_examples(dataset, lstm, options, tokenizer)
    trainable, total = model.get_nb_trainable_parameters()
    progress(f"{len(train):,} training and {len(val)} validation examples; {trainable:,} of {total:,} parameters trained")
    stopper = StopOnInterrupt()
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE)
    trainer = AnswerTrainer(
        model=model,
        args=training_arguments(options, out / CHECKPOINTS),
        data_collator=collator,
        train_dataset=train,
        eval_dataset=val,
        callbacks=[stopper, *callbacks],
    )
    started = time.perf_counter(), time.process_time()
    with stopper.installed():
        trainer.train(resume_from_checkpoint=str(start) if start else None)
    examples = {"train": len(train), "val": len(val), "train_users": len(example_users(dataset, "train"))}
    resumed = checkpoint_step(start) if start else 0
    seconds = time.perf_counter() - started[0], time.process_time() - started[1]
    metadata = adapter_metadata(dataset, options, preset, trainer, examples, seconds, resumed, stopper.requested)
    # The adapter names the preset's model (hub id or folder): portable, and how the app finds the preset;
    # `load_adapter_backend` loads the base through the preset, so nothing is fetched. Embeddings are never trained.
    model.peft_config["default"].base_model_name_or_path = preset.model
    save_adapter(model, out, metadata)
    if not stopper.requested:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return read_metadata(out)


def save_adapter(model: PeftModel, out: Path, metadata: dict) -> None:
    """The peft files and metadata.json written beside each other first, then moved into `out` (metadata.json last):
    a failed write (a full disk) leaves the adapter that was there whole."""
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=out))
    try:
        model.save_pretrained(scratch, save_embedding_layers=False)
        (scratch / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
        for file in sorted(scratch.iterdir(), key=lambda file: file.name == METADATA_FILE):
            os.replace(file, out / file.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---- one training per folder, its progress, a full disk --------------------------------------------------------------


class ProgressFile(TrainerCallback):
    """out/progress.json after every step and validation: status, step of steps, the last losses, time used and left
    (the mean time of this run's steps, validations included, times the steps left), the process id."""

    def __init__(self, file: Path, resumed: int) -> None:
        self.file, self.resumed, self.started = file, resumed, time.perf_counter()
        self.state: dict = {"step": resumed, "steps": None, "loss": None, "val_loss": None}

    def write(self, status: str, **fields) -> None:
        elapsed = time.perf_counter() - self.started
        self.state |= fields | {"status": status, "pid": os.getpid(), "elapsed_s": round(elapsed, 1)}
        done, steps = self.state["step"] - self.resumed, self.state["steps"]
        left = elapsed / done * (steps - self.state["step"]) if done and steps else None
        self.state["left_s"] = None if status != "running" or left is None else round(left, 1)
        try:
            write_json_atomically(self.file, self.state)
        except OSError:
            pass  # a full disk: the checkpoint that cannot be written either says so

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.write("running", step=state.global_step, steps=state.max_steps)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs) -> None:
        losses = {"loss": logs["loss"]} if "loss" in (logs or {}) else {}
        losses |= {"val_loss": logs["eval_loss"]} if "eval_loss" in (logs or {}) else {}
        if losses:
            self.write("running", steps=state.max_steps, **losses)


def write_failure(error: BaseException) -> str | None:
    """What a failed write says, when `error` (or one it came from) is a full disk or a file over the size limit."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return f"{seen.strerror}{f': {seen.filename}' if seen.filename else ''}"
        if any(text in str(seen) for text in ("No space left on device", "File too large", "file write failed")):
            return str(seen).splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return None
