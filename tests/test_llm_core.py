"""Presets, settings, reasoning split and the error paths that need no model."""

from __future__ import annotations

import pytest
import torch

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.llm import (
    DEFAULT_PRESET,
    PRESETS,
    FourBitUnavailableError,
    GenerationSettings,
    MissingAPIKeyError,
    ModelLoadError,
    UnknownPresetError,
    gguf_path,
    load_backend,
    resolve_preset,
    split_reasoning,
    to_messages,
)
from dualrec.llm.presets import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, adapter_on, engine_for


def test_messages_put_the_optional_system_message_first() -> None:
    assert to_messages("hi") == [{"role": "user", "content": "hi"}]
    assert to_messages("hi", system="be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_greedy_or_zero_temperature_turns_sampling_off() -> None:
    assert GenerationSettings().sampling
    assert not GenerationSettings(greedy=True).sampling
    assert not GenerationSettings(temperature=0.0).sampling


@pytest.mark.parametrize(
    ("text", "thinking", "answer"),
    [
        ("Heat (1995)", "", "Heat (1995)"),
        ("<think>they like crime</think>\nHeat (1995)", "they like crime", "Heat (1995)"),
        ("<think>still thinking about Heat (1995)", "still thinking about Heat (1995)", ""),
        ("they like crime\n</think>\n\nHeat (1995)", "they like crime", "Heat (1995)"),
        ("", "", ""),
    ],
)
def test_split_reasoning(text: str, thinking: str, answer: str) -> None:
    assert split_reasoning(text) == (thinking, answer)


def test_the_poster_models_and_the_embedded_default_are_presets() -> None:
    assert DEFAULT_PRESET == "smollm2-135m"
    assert {p.model for p in PRESETS.values()} >= {
        "deepseek-chat",
        "mistralai/Ministral-8B-Instruct-2410",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "Qwen/Qwen2.5-1.5B-Instruct",
    }
    deepseek = PRESETS["deepseek-v3"]
    assert (deepseek.engine, deepseek.base_url, deepseek.api_key_env) == (
        "openai",
        "https://api.deepseek.com",
        "DEEPSEEK_API_KEY",
    )
    assert PRESETS["deepseek-r1-distill-qwen-1.5b"].reasoning


def test_the_embedded_gguf_is_found_inside_its_package() -> None:
    path = gguf_path(PRESETS[DEFAULT_PRESET])
    assert path is not None and path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPresetError, match="known presets: smollm2-135m, deepseek-v3, .*qwen2.5-1.5b-instruct"):
        resolve_preset("gpt-17")


def test_overrides_replace_preset_fields() -> None:
    preset = resolve_preset("mistral-7b-instruct", load_in_4bit=False)
    assert not preset.load_in_4bit and PRESETS["mistral-7b-instruct"].load_in_4bit


def test_custom_reads_an_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BASE_URL, "http://127.0.0.1:9/v1")
    monkeypatch.setenv(ENV_MODEL, "served-model")
    monkeypatch.delenv(ENV_API_KEY, raising=False)
    preset = resolve_preset("custom")
    assert (preset.engine, preset.base_url, preset.model, preset.api_key_env) == (
        "openai",
        "http://127.0.0.1:9/v1",
        "served-model",
        None,
    )


def test_custom_without_a_model_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MODEL, raising=False)
    with pytest.raises(UnknownPresetError, match=f"'custom' needs a model: pass model=.*{ENV_MODEL}"):
        resolve_preset("custom")


def test_a_gguf_path_is_a_local_preset_run_by_the_default_engine(tmp_path) -> None:
    preset = resolve_preset(str(tmp_path / "m.gguf"))
    assert preset.gguf_file == str(tmp_path / "m.gguf")
    assert engine_for(preset) in ("llama.cpp", "transformers")
    assert engine_for(resolve_preset(str(tmp_path))) == "transformers"


def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="set the environment variable DEEPSEEK_API_KEY"):
        load_backend("deepseek-v3")


def test_an_explicit_key_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    backend = load_backend("deepseek-v3", api_key="sk-explicit-secret")
    assert "sk-explicit-secret" not in repr(backend)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_4bit_without_cuda_refuses_with_the_fallbacks() -> None:
    with pytest.raises(FourBitUnavailableError, match="run without --4bit, use the GGUF preset 'smollm2-135m'"):
        load_backend("ministral-8b-instruct")


@pytest.mark.parametrize("engine", ["transformers", "llama.cpp"])
def test_a_missing_model_file_is_a_load_error(tmp_path, engine: str) -> None:
    if engine == "llama.cpp":
        pytest.importorskip("llama_cpp")
    missing = tmp_path / "missing.gguf"
    with pytest.raises(ModelLoadError, match=f"not found: {missing}"):
        load_backend(str(missing), engine=engine)


def test_a_missing_local_folder_is_a_load_error(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_backend("custom", model=str(tmp_path / "no-such-model"))


def test_a_base_finds_its_own_adapter_among_model_specs() -> None:
    specs = ["mistral-7b-instruct+adapters/m", "smollm2-135m", "smollm2-135m+adapters/a", "smollm2-135m+adapters/b"]
    assert adapter_on("smollm2-135m", specs) == "smollm2-135m+adapters/a"  # the first one
    assert adapter_on("mistral-7b-instruct", specs) == "mistral-7b-instruct+adapters/m"
    assert adapter_on("smollm2-135m+adapters/a", specs) is None  # an adapter has no adapter of its own
    assert adapter_on("smollm2", specs) is None  # a prefix of a base name is not that base
