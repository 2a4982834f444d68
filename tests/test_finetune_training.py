"""Stage 3's training and adapters: a tiny local Llama for the wiring (seconds), the embedded SmolLM2 for real (slow)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.app.comparison import SharedModel, adapter_partner, plan_columns
from dualrec.app.recordings import RecordingStore
from dualrec.cli import main
from dualrec.config import paths
from dualrec.errors import DualrecError
from dualrec.evaluation.freeform import llm_answers
from dualrec.finetune import progress, training
from dualrec.finetune.examples import FinetuneOptions, short_run
from dualrec.finetune.training import CHECKPOINTS, train_adapter
from dualrec.llm import DEFAULT_PRESET, FourBitUnavailableError, GenerationSettings, LLMError, ModelLoadError, load_backend
from dualrec.llm.peft_backend import ADAPTER_CONFIG, METADATA_FILE, AdapterBackend, adapter_dir, base_preset
from dualrec.llm.transformers_backend import TransformersBackend
from tests.finetune_fixtures import tiny_llama

GREEDY = GenerationSettings(max_new_tokens=12, greedy=True)
PROMPT = "Below is a user's movie watching history:\n- Toy Story (1995) (Animation, Children's, Comedy)\nRecommend 1 movie."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


def tiny_options(base: str, **changes) -> FinetuneOptions:
    quick = short_run(4, base=base, batch_size=2, learning_rate=5e-2, val_examples=4, eval_steps=2, save_steps=2, max_length=2048)
    return dataclasses.replace(quick, **changes)


@pytest.fixture(scope="module")
def trained(dataset, lstm, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapters") / "tiny-lora"
    return out, train_adapter(dataset, lstm, tiny_options(tiny), out, progress=lambda message: None)


def greedy_ids(model, tokenizer) -> list[int]:
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def logits(model, tokenizer) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(PROMPT, return_tensors="pt")).logits


def test_training_writes_a_peft_adapter_with_its_metadata(trained, tiny, dataset):
    out, metadata = trained
    assert (out / ADAPTER_CONFIG).is_file() and (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == tiny and config["r"] == 8 and config["lora_alpha"] == 16
    assert set(config["target_modules"]) == {"q_proj", "v_proj"} and config["lora_dropout"] == 0.05
    saved = json.loads((out / METADATA_FILE).read_text())
    assert saved == metadata and metadata["status"] == "completed" and metadata["steps"] == 4
    assert metadata["data"]["fingerprint"] == dataset.fingerprint and metadata["base"]["preset"] == tiny
    assert metadata["train_loss"] > 0 and metadata["val_loss"] > 0 and metadata["options"]["seed"] == 42
    assert metadata["examples"]["train"] == len(dataset.split_users["train"]) and metadata["examples"]["val"] == 4
    assert not (out / CHECKPOINTS).exists()  # removed once training completed


def test_an_existing_adapter_is_not_overwritten(trained, dataset, lstm, tiny):
    with pytest.raises(Exception, match="already holds an adapter or checkpoints: pass --resume"):
        train_adapter(dataset, lstm, tiny_options(tiny), trained[0])


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resume_finishes(dataset, lstm, tiny, tmp_path, monkeypatch):
    steps = []
    original = training.StopOnInterrupt.on_step_end

    def interrupt_at_step_3(self, args, state, control, **kwargs):
        steps.append(state.global_step)
        if state.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends; handled before the next line runs
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(training.StopOnInterrupt, "on_step_end", interrupt_at_step_3)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under a shell's background job
    out = tmp_path / "interrupted"
    first = train_adapter(dataset, lstm, tiny_options(tiny, max_steps=6), out, progress=lambda message: None)
    assert first["status"] == "interrupted" and first["steps"] == 3 and steps == [1, 2, 3]
    assert (out / CHECKPOINTS / "checkpoint-3" / "trainer_state.json").is_file() and (out / ADAPTER_CONFIG).is_file()
    assert signal.getsignal(signal.SIGINT) is before  # restored

    second = train_adapter(dataset, lstm, tiny_options(tiny, max_steps=6), out, resume=True, progress=lambda message: None)
    assert second["status"] == "completed" and second["steps"] == 6 and second["resumed_from_step"] == 3
    assert steps[3:] == [4, 5, 6] and not (out / CHECKPOINTS).exists()


def test_resume_without_a_checkpoint_says_so(dataset, lstm, tiny, tmp_path):
    with pytest.raises(Exception, match="No checkpoint to resume"):
        train_adapter(dataset, lstm, tiny_options(tiny), tmp_path / "new", resume=True)


def test_the_spec_serves_base_and_adapter_from_one_copy_of_the_weights(trained, tiny):
    out, _ = trained
    backend = load_backend(f"{tiny}+{out}")
    base_view = backend.base()
    assert isinstance(backend, AdapterBackend) and backend.name == f"{tiny}+{out}" and base_view.name == tiny
    assert base_view.model is backend.model and base_view._lock is backend._lock
    plain = load_backend(tiny)
    messages = [{"role": "user", "content": PROMPT}]
    with_base = "".join(base_view._stream(messages, GREEDY, threading.Event()))
    assert with_base == "".join(plain._stream(messages, GREEDY, threading.Event()))
    with backend.model.disable_adapter():
        assert torch.allclose(logits(backend.model, backend.tokenizer), logits(plain.model, plain.tokenizer), atol=1e-5)
    assert not torch.allclose(
        logits(backend.model, backend.tokenizer), logits(plain.model, plain.tokenizer), atol=1e-3
    )  # trained


def test_merged_and_unmerged_adapters_generate_the_same(trained, tiny):
    backend = load_backend(f"{tiny}+{trained[0]}")
    unmerged = greedy_ids(backend.model, backend.tokenizer)
    assert unmerged == greedy_ids(backend.model.merge_and_unload(), backend.tokenizer)


def test_a_relative_adapter_folder_lives_under_the_models_folder(tmp_path):
    assert adapter_dir("adapters/mine") == paths().models / "adapters" / "mine"
    assert (
        adapter_dir(tmp_path / "x") == tmp_path / "x" and adapter_dir("./x").name == "x" and not adapter_dir("./x").is_absolute()
    )


@pytest.mark.parametrize(
    "spec, error, message",
    [
        (
            "smollm2-135m+adapters/none-here",
            ModelLoadError,
            "no LoRA adapter in .*none-here.*dualrec finetune --base smollm2-135m",
        ),
        ("deepseek-v3+adapters/x", LLMError, "API model"),
    ],
)
def test_bad_specs_say_what_to_do(spec, error, message, tmp_path):
    if "deepseek" in spec:
        (paths().models / "adapters" / "x").mkdir(parents=True, exist_ok=True)
        (paths().models / "adapters" / "x" / ADAPTER_CONFIG).write_text("{}")
    with pytest.raises(error, match=message):
        load_backend(spec)


def test_an_adapter_on_the_wrong_base_is_refused(trained, tiny):
    with pytest.raises(ModelLoadError, match=f"trained on {tiny}"):
        load_backend(f"{DEFAULT_PRESET}+{trained[0]}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_four_bit_on_a_cpu_is_the_clear_error(dataset, lstm, tmp_path):
    with pytest.raises(FourBitUnavailableError, match="CUDA"):
        train_adapter(dataset, lstm, FinetuneOptions(four_bit=True), tmp_path / "x")


def test_the_command_trains_and_dumps(ml_dir, tiny, tiny_lstm_dir, tmp_path, capsys):
    data = ["--data-dir", str(ml_dir), "--lstm-dir", str(tiny_lstm_dir)]
    assert main(["finetune", *data, "--base", tiny, "--dump-examples", "2", "--max-length", "2048"]) == 0
    assert capsys.readouterr().out.count("--- loss on the tokens below ---") == 2
    out = tmp_path / "cli-lora"
    argv = [
        "finetune",
        *data,
        "--base",
        tiny,
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--val-examples",
        "2",
        "--eval-steps",
        "2",
        "--max-length",
        "2048",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Completed after 2 steps" in printed and f"--model {tiny}+{out}" in printed
    assert main(argv) == 2 and "already holds an adapter" in capsys.readouterr().err


def test_the_freeform_evaluation_scores_base_and_adapter_on_the_same_cases(ml_dir, trained, tiny, tmp_path, capsys):
    results = tmp_path / "results.json"
    argv = ["evaluate", "--data-dir", str(ml_dir), "--protocol", "freeform", "--model", f"{tiny},{tiny}+{trained[0]}"]
    assert main([*argv, "--limit", "3", "--k", "5", "--max-new-tokens", "4", "--bootstrap", "10", "--out", str(results)]) == 0
    rows = json.loads(results.read_text())["results"]
    assert [row["system"] for row in rows] == [f"DUALRec, {tiny}", f"DUALRec, {tiny}+{trained[0]}"]
    assert all(row["extra"]["cases_drawn"] == 3 for row in rows)
    # one model in memory for both rows (the base is the adapter's base view), decoded greedily: repeatable
    assert [row["options"]["engine"] for row in rows] == ["AdapterBackend", "AdapterBackend"]
    assert all(row["options"]["settings"]["greedy"] and row["options"]["sample_seed"] is None for row in rows)
    assert len(list(tmp_path.glob("results-freeform-*.jsonl"))) == 2


@pytest.mark.llm
@pytest.mark.slow
def test_the_embedded_model_learns_and_its_adapter_reloads_offline(dataset, lstm, tmp_path):
    """A few real steps of SmolLM2-135M on CPU: the loss goes down; the adapter reloads through its spec (offline,
    the base from the GGUF conversion), generates, and agrees with its merged form; the base view is the base."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    out = tmp_path / "smollm2-lora"
    options = short_run(8, batch_size=2, learning_rate=2e-3, val_examples=2, eval_steps=4, save_steps=4)
    metadata = train_adapter(dataset, lstm, options, out, progress=lambda message: None)
    val_losses = [entry["eval_loss"] for entry in metadata["history"] if "eval_loss" in entry]
    assert metadata["status"] == "completed" and metadata["steps"] == 8 and len(val_losses) == 3  # steps 0, 4, 8
    assert val_losses[-1] < val_losses[0] - 0.1
    assert json.loads((out / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"

    backend = load_backend(f"{DEFAULT_PRESET}+{out}", engine="transformers")  # peft (llama.cpp: tests/test_gguf_lora.py)
    answer = backend.generate(PROMPT, GREEDY)
    assert answer.strip()
    plain = load_backend(DEFAULT_PRESET, engine="transformers")
    assert backend.base().generate(PROMPT, GREEDY) == plain.generate(PROMPT, GREEDY)
    merged = TransformersBackend(backend.model.merge_and_unload(), backend.tokenizer, name="merged")
    assert merged.generate(PROMPT, GREEDY) == answer


def test_the_app_serves_a_base_beside_its_adapter_from_one_copy_of_the_weights(trained, tiny, tmp_path):
    adapter = f"{tiny}+{trained[0]}"
    loaded = functools.cache(lambda spec, replica: SharedModel(load_backend(spec)))  # as app_state.shared_model
    columns = plan_columns([tiny, adapter], PROMPT, GREEDY, loaded, RecordingStore(tmp_path), presenting=False)
    assert loaded.cache_info().currsize == 1  # only the adapter model was loaded
    base, tuned = (column.model.backend for column in columns)
    assert base.model is tuned.model and not base.adapter and tuned.adapter
    alone = load_backend(tiny)
    assert base.generate(PROMPT, GREEDY) == alone.generate(PROMPT, GREEDY)  # the base view answers as the base does
    assert adapter_partner(DEFAULT_PRESET, [DEFAULT_PRESET, f"{DEFAULT_PRESET}+x"]) is None  # a GGUF base runs on llama.cpp


def test_the_evaluation_answers_a_base_and_its_adapter_from_one_model(trained, tiny):
    adapter = f"{tiny}+{trained[0]}"
    base, tuned, alone = llm_answers([tiny, adapter, "deepseek-v3"])  # a model without its adapter beside it loads on its own
    assert alone.backend is None and (base.model, tuned.model) == (tiny, adapter)
    assert base.backend.model is tuned.backend.model and not base.backend.adapter and tuned.backend.adapter


# ---- speed-ups, one training per folder, progress, a full disk (issue 18) ----------------------------------------------


def test_logits_only_where_the_loss_is_give_the_models_own_loss(trained, tiny, dataset, lstm):
    from transformers import DataCollatorForSeq2Seq

    model, tokenizer = training.trainable_model(base_preset(tiny), tiny_options(tiny, mixed_precision=False))
    train, val = training.encoded_examples(dataset, lstm, tiny_options(tiny), tokenizer)
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)(train[:3])
    arguments = training.training_arguments(tiny_options(tiny), trained[0] / "scratch")
    trainer = training.AnswerTrainer(model=model, args=arguments, eval_dataset=val)
    with torch.no_grad():
        ours, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
        theirs = model(**batch).loss
    assert torch.isclose(ours, theirs, atol=1e-5) and outputs.logits.shape[1] < batch["input_ids"].shape[1]


def test_lora_layers_go_in_the_last_blocks_only(tiny):
    model, _ = training.trainable_model(base_preset(tiny), tiny_options(tiny, lora_layers=1))
    trained_names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trained_names and all(".layers.1." in name for name in trained_names)
    model, _ = training.trainable_model(base_preset(tiny), tiny_options(tiny, lora_layers=3))  # more than it has: all
    assert {name.split(".layers.")[1][0] for name, parameter in model.named_parameters() if parameter.requires_grad} == {"0", "1"}


def test_a_second_training_into_the_same_folder_is_refused_while_one_runs(dataset, lstm, tiny, tmp_path):
    out = tmp_path / "busy"
    with progress.training_lock(out):
        assert progress.training_process(out) == os.getpid()
        with pytest.raises(DualrecError, match=f"Another training is writing into {out} \\(process {os.getpid()}\\)"):
            train_adapter(dataset, lstm, tiny_options(tiny), out, progress=lambda message: None)
    assert progress.training_process(out) is None and not (out / CHECKPOINTS).exists()


def test_the_progress_file_follows_the_training(dataset, lstm, tiny, tmp_path):
    out, seen = tmp_path / "followed", []

    class Look(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(progress.read_progress(out))

    metadata = train_adapter(dataset, lstm, tiny_options(tiny), out, progress=lambda message: None, callbacks=[Look()])
    assert [(entry["status"], entry["step"], entry["steps"]) for entry in seen] == [("running", step, 4) for step in range(1, 5)]
    assert all(entry["left_s"] is not None and entry["pid"] == os.getpid() for entry in seen[:-1]) and seen[0]["val_loss"] > 0
    final = progress.read_progress(out)
    assert final["status"] == "completed" and final["step"] == 4 and final["left_s"] is None
    assert final["val_loss"] == metadata["val_loss"] and metadata["base_val_loss"] == seen[0]["val_loss"]


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from transformers import TrainerCallback
from dualrec.data.dataset import load_dataset
from dualrec.errors import DualrecError
from dualrec.finetune.examples import FinetuneOptions
from dualrec.finetune.training import train_adapter
from dualrec.ranking.lstm import load_lstm

class FillTheDisk(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:  # checkpoint-2 is written; every later file of over 1 KB fails: "File too large"
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

ml_dir, lstm_dir, options, out = sys.argv[1], sys.argv[2], eval(sys.argv[3]), Path(sys.argv[4])
dataset = load_dataset(ml_dir)
try:
    train_adapter(dataset, load_lstm(lstm_dir, dataset), options, out, progress=lambda message: None, callbacks=[FillTheDisk()])
except DualrecError as error:
    print(error)
    sys.exit(2)
"""


def test_a_full_disk_is_one_message_and_keeps_the_last_checkpoint(ml_dir, tiny_lstm_dir, dataset, lstm, tiny, tmp_path):
    out, options = tmp_path / "full-disk", tiny_options(tiny, max_steps=6)
    argv = [sys.executable, "-c", FULL_DISK, str(ml_dir), str(tiny_lstm_dir), repr(options), str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    message = done.stdout.strip().splitlines()[-1]
    assert message.startswith("No room left to write the training's files (") and "File too large" in message
    assert message.endswith("continue with --resume: it goes on from the last complete checkpoint (step 2).")
    assert progress.read_progress(out) | {"message": message} == progress.read_progress(out)
    assert progress.read_progress(out)["status"] == "failed"
    resumed = train_adapter(dataset, lstm, options, out, resume=True, progress=lambda message: None)
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == 2 and resumed["steps"] == 6


def test_the_ranking_task_trains_through_the_command_and_its_adapter_scores_candidates(
    ml_dir, tiny, tiny_lstm_dir, dataset, tmp_path, capsys
):
    from dualrec.llm.scoring import label_log_probs

    out = tmp_path / "rerank-lora"
    argv = ["finetune", "--data-dir", str(ml_dir), "--lstm-dir", str(tiny_lstm_dir), "--base", tiny, "--task", "rerank"]
    argv += ["--scorer", "labels", "--candidates", "5", "--out", str(out), "--steps", "2", "--batch-size", "2"]
    assert main([*argv, "--val-examples", "2", "--eval-steps", "2", "--max-length", "2048"]) == 0
    printed = capsys.readouterr().out
    assert "validation loss" in printed and "(base) ->" in printed and f"--llm {tiny}+{out} --scorer labels" in printed
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["task"] == "rerank" and metadata["examples"] | {"candidates": 5, "scorer": "labels"} == metadata["examples"]
    backend = load_backend(f"{tiny}+{out}")
    try:
        scores = label_log_probs(backend, "Candidates:\n(A) Heat\n(B) Up\nWhich?", 2)
    finally:
        backend.close()
    assert scores.shape == (2,) and np.all(scores < 0)
