"""LoRA adapters on llama.cpp: the peft adapter converted to a GGUF LoRA (cached beside it, atomically), served with
its GGUF base, answering as transformers+peft does; the base view switches it off on the same weights."""

from __future__ import annotations

import json
import threading
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.app.tables import model_description
from dualrec.cli import main
from dualrec.finetune.examples import FinetuneOptions, one_per_user
from dualrec.finetune.training import train_adapter
from dualrec.grounding.grounded import answer_constraint
from dualrec.llm import DEFAULT_PRESET, GenerationSettings, ModelLoadError, gguf_lora, gguf_path, load_backend, resolve_preset
from dualrec.llm.adapters import ADAPTER_CONFIG
from dualrec.llm.gguf_lora import check_convertible, converter_script, gguf_adapter
from dualrec.llm.llamacpp_backend import LlamaCppAdapterBackend
from dualrec.llm.peft_backend import AdapterBackend
from tests.finetune_fixtures import StubLSTM

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: transformers decodes far faster on a shared CPU

GREEDY_20 = GenerationSettings(max_new_tokens=20, greedy=True)
NEAR_TIE = 0.5  # logits: the two engines' top-1 on the base alone differed only where it led by 0.04-0.38
HIDDEN, KV = 576, 192  # SmolLM2-135M's q_proj and v_proj output sizes


def smollm_adapter_folder(folder, seed: int = 0, **config):
    """A peft LoRA adapter folder for SmolLM2-135M written directly (random A and B on two layers' q_proj and v_proj)."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in (0, 1):
        for module, size in (("q_proj", HIDDEN), ("v_proj", KV)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(8, HIDDEN, generator=generator) * 0.01
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(size, 8, generator=generator) * 0.01
    save_file(tensors, folder / "adapter_model.safetensors")
    settings = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], **config}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(settings))
    return folder


def test_a_missing_or_stale_converter_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gguf_lora, "CONVERTER_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match=r"convert_lora_to_gguf.py, which is not in .*: run `make setup`"):
        converter_script()
    (tmp_path / gguf_lora.CONVERTER).write_text("")
    (tmp_path / gguf_lora.VERSION_FILE).write_text("0.0.1\n")
    with pytest.raises(ModelLoadError, match="comes from llama-cpp-python 0.0.1, but .* is installed: run `make setup`"):
        converter_script()


def test_the_converter_is_set_up_for_the_installed_llama_cpp_python():
    script, version = converter_script()
    assert script.is_file() and (script.parent / "conversion").is_dir() and version


def test_adapters_llama_cpp_would_compute_differently_are_refused(tmp_path):
    folder = tmp_path / "rslora"
    folder.mkdir()
    (folder / ADAPTER_CONFIG).write_text(json.dumps({"r": 8, "lora_alpha": 16, "use_rslora": True}))
    with pytest.raises(ModelLoadError, match='uses use_rslora, which llama.cpp.*engine="transformers"'):
        check_convertible(folder)
    (folder / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        check_convertible(folder)


def test_the_column_caption_names_the_engine_of_the_adapter():
    assert "(run by llama.cpp, the adapter converted to a GGUF LoRA)" in model_description(f"{DEFAULT_PRESET}+adapters/x")


@pytest.mark.llm
@pytest.mark.slow
def test_the_conversion_is_cached_beside_the_adapter_and_redone_when_it_changes(tmp_path):
    base = gguf_path(resolve_preset(DEFAULT_PRESET))
    folder = smollm_adapter_folder(tmp_path / "lora")
    first = gguf_adapter(folder, base)
    assert first.parent == folder and first.name.startswith("adapter-") and first.stat().st_size > 0
    converted_at = first.stat().st_mtime_ns
    assert gguf_adapter(folder, base) == first and first.stat().st_mtime_ns == converted_at  # not converted again
    smollm_adapter_folder(folder, seed=1)  # retrained: new weights
    second = gguf_adapter(folder, base)
    assert second != first and second.is_file() and not first.exists()
    assert sorted(path.name for path in folder.iterdir()) == sorted([ADAPTER_CONFIG, "adapter_model.safetensors", second.name])


@pytest.mark.llm
@pytest.mark.slow
def test_a_failed_conversion_leaves_nothing_and_says_why(tmp_path):
    folder = smollm_adapter_folder(tmp_path / "broken")
    save_file(
        {"base_model.model.model.layers.0.self_attn.q_proj.weird.weight": torch.zeros(2, 2)}, folder / "adapter_model.safetensors"
    )
    with pytest.raises(ModelLoadError, match=r"could not convert the adapter in .*broken \(exit 1\): .*weird"):
        load_backend(f"{DEFAULT_PRESET}+{folder}")
    assert sorted(path.name for path in folder.iterdir()) == [ADAPTER_CONFIG, "adapter_model.safetensors"]


@pytest.fixture(scope="module")
def trained_adapter(dataset, tmp_path_factory):
    """A real adapter of SmolLM2-135M, a few steps on the generated fixture (a stub LSTM picks the prompts' top-1)."""
    options = FinetuneOptions(
        max_steps=3, batch_size=1, grad_accum=1, learning_rate=1e-2, examples_per_user=1, val_examples=1, eval_steps=10
    )
    out = tmp_path_factory.mktemp("gguf-lora") / "smollm2-lora"
    train_adapter(dataset, StubLSTM(len(dataset.catalogue)), options, out, progress=lambda message: None)
    prompts = [example.prompt for example in one_per_user(dataset, "val", StubLSTM(len(dataset.catalogue)), options, 3)]
    return out, prompts


def chat_tokens(backend: AdapterBackend, prompt: str) -> list[int]:
    """The prompt's tokens in the chat template, as both engines read it (the same tokenizer, from the same GGUF)."""
    text = backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def transformers_log_probs(backend: AdapterBackend, prompt: list[int], tokens: list[int]) -> np.ndarray:
    """(len(tokens), vocab): the log-probabilities before each of `tokens`, after the prompt and the tokens before it."""
    with torch.inference_mode(), nullcontext() if backend.adapter else backend.model.disable_adapter():
        logits = backend.model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1).numpy()


def llama_cpp_log_probs(backend: LlamaCppAdapterBackend, prompt: list[int], tokens: list[int]) -> np.ndarray:
    """The same from llama.cpp, a token at a time, under the view's lock (so with the adapter as the view wants it)."""
    import llama_cpp

    with backend._lock:
        llama, rows = backend.llama, []
        llama.reset()
        for batch in [prompt] + [[token] for token in tokens[:-1]]:
            llama.eval(batch)
            rows.append(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),)).copy())
        llama.reset()
    return torch.log_softmax(torch.from_numpy(np.stack(rows)), dim=-1).numpy()


@pytest.mark.llm
@pytest.mark.slow
def test_llama_cpp_computes_the_adapter_as_transformers_and_peft_do(trained_adapter):
    """Teacher-forced on transformers+peft's 20 greedy tokens: llama.cpp's adapter picks the same top-1 token at every
    step unless transformers' choice leads by less than NEAR_TIE (the two engines read the Q4_1 base with different
    arithmetic and disagree that much on the base alone), changes the log-probabilities of those tokens as peft's
    adapter does (not by a wrong scale), and both change the base's choices."""
    out, prompts = trained_adapter
    spec = f"{DEFAULT_PRESET}+{out}"
    fast, reference = load_backend(spec), load_backend(spec, engine="transformers")
    assert isinstance(fast, LlamaCppAdapterBackend) and isinstance(reference, AdapterBackend)
    agreeing = steps = 0
    for prompt in prompts:
        tokens = chat_tokens(reference, prompt)
        with torch.inference_mode():
            greedy = reference.model.generate(torch.tensor([tokens]), do_sample=False, max_new_tokens=20, pad_token_id=2)
        answer = greedy[0, len(tokens) :].tolist()
        peft_on, peft_off = (transformers_log_probs(view, tokens, answer) for view in (reference, reference.base()))
        cpp_on, cpp_off = (llama_cpp_log_probs(view, tokens, answer) for view in (fast, fast.base()))
        rows = np.arange(len(answer))
        peft_top, cpp_top = peft_on.argmax(1), cpp_on.argmax(1)
        assert (peft_on[rows, peft_top] - peft_on[rows, cpp_top] < NEAR_TIE)[peft_top != cpp_top].all()
        agreeing, steps = agreeing + (peft_top == cpp_top).sum(), steps + len(answer)
        peft_change, cpp_change = (on[rows, answer] - off[rows, answer] for on, off in ((peft_on, peft_off), (cpp_on, cpp_off)))
        assert np.abs(cpp_change - peft_change).mean() < 0.25 * np.abs(peft_change).mean()
        assert (peft_off.argmax(1) != peft_top).any() and (cpp_off.argmax(1) != cpp_top).any()
    assert agreeing >= 0.9 * steps
    assert len(list(out.glob("adapter-*.gguf"))) == 1


@pytest.mark.llm
@pytest.mark.slow
def test_the_base_view_answers_as_the_base_and_the_adapter_comes_back(trained_adapter):
    out, prompts = trained_adapter
    adapter, plain = load_backend(f"{DEFAULT_PRESET}+{out}"), load_backend(DEFAULT_PRESET)
    answer = adapter.generate(prompts[0], GREEDY_20)
    assert adapter.base().generate(prompts[0], GREEDY_20) == plain.generate(prompts[0], GREEDY_20)
    assert adapter.generate(prompts[0], GREEDY_20) == answer


@pytest.mark.llm
@pytest.mark.slow
def test_the_two_views_share_one_model_and_one_lock(trained_adapter):
    out, prompts = trained_adapter
    adapter = load_backend(f"{DEFAULT_PRESET}+{out}")
    base = adapter.base()
    assert base.llama is adapter.llama and base._lock.switch is adapter._lock.switch and base.name == DEFAULT_PRESET
    answers, stop = {}, threading.Event()
    threads = [
        threading.Thread(target=lambda view=view: answers.setdefault(view.name, view.generate(prompts[0], GREEDY_20, stop=stop)))
        for view in (adapter, base)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers[adapter.name] == adapter.generate(prompts[0], GREEDY_20)
    assert answers[base.name] == base.generate(prompts[0], GREEDY_20) != answers[adapter.name]
    base.close()
    assert adapter.generate(prompts[0], GREEDY_20) == answers[adapter.name]  # closing one view leaves the other


@pytest.mark.llm
@pytest.mark.slow
def test_grounded_answers_see_the_adapter_switched_as_the_view_wants(trained_adapter, dataset):
    out, prompts = trained_adapter
    adapter = load_backend(f"{DEFAULT_PRESET}+{out}")
    constraint = answer_constraint(dataset, dataset.catalogue[:5].tolist(), 3)
    settings = GenerationSettings(max_new_tokens=200, greedy=True)
    tuned = adapter.generate(prompts[0], settings, constraint=constraint)
    base = adapter.base().generate(prompts[0], settings, constraint=constraint)
    assert base == load_backend(DEFAULT_PRESET).generate(prompts[0], settings, constraint=constraint)
    assert adapter.generate(prompts[0], settings, constraint=constraint) == tuned and tuned.count("\n") >= 2


@pytest.mark.llm
@pytest.mark.slow
def test_the_freeform_results_name_the_engine(ml_dir, trained_adapter, tmp_path):
    out, _ = trained_adapter
    results = tmp_path / "results.json"
    models = f"{DEFAULT_PRESET},{DEFAULT_PRESET}+{out}"
    argv = ["evaluate", "--data-dir", str(ml_dir), "--protocol", "freeform", "--model", models, "--limit", "2"]
    assert main([*argv, "--k", "5", "--max-new-tokens", "4", "--bootstrap", "10", "--out", str(results)]) == 0
    rows = json.loads(results.read_text())["results"]
    assert [row["options"]["engine"] for row in rows] == ["LlamaCppAdapterBackend", "LlamaCppAdapterBackend"]
