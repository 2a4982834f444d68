"""peft LoRA adapters served by llama.cpp: converted once into a GGUF LoRA by llama.cpp's own converter, the file
cached beside the adapter, and loaded with the adapter's GGUF base (`LlamaCppAdapterBackend`).

The converter (`convert_lora_to_gguf.py`, with the `conversion/` and `gguf-py/` it imports) ships in the source
distribution of llama-cpp-python; `make setup` extracts the installed version's into `<environment>/share/llama.cpp`.
It reads the base's config from the base's converted transformers folder (`convert_gguf`), so nothing is fetched from
the hub. The cached file is named by a digest of the adapter's files and the converter's version: a retrained adapter
is converted again, and the stale file removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from dualrec.llm.adapters import ADAPTER_CONFIG, AdapterSpec
from dualrec.llm.errors import ModelLoadError
from dualrec.llm.llamacpp_backend import LlamaCppAdapterBackend, load_llamacpp
from dualrec.llm.presets import gguf_path

CONVERTER_DIR = Path(sys.prefix) / "share" / "llama.cpp"
CONVERTER = "convert_lora_to_gguf.py"
VERSION_FILE = "VERSION"  # the llama-cpp-python version the converter was extracted from
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
UNSUPPORTED = ("use_dora", "use_rslora", "alpha_pattern", "modules_to_save")  # peft options llama.cpp's LoRA lacks
ON_TRANSFORMERS = 'serve the adapter on transformers instead (load it with engine="transformers")'


def converter_script() -> tuple[Path, str]:
    """llama.cpp's LoRA converter and its version (that of the installed llama-cpp-python), or what to run."""
    installed = metadata.version("llama-cpp-python")
    script, version_file = CONVERTER_DIR / CONVERTER, CONVERTER_DIR / VERSION_FILE
    extracted = version_file.read_text().strip() if script.is_file() and version_file.is_file() else None
    if extracted is None:
        raise ModelLoadError(
            f"serving a LoRA adapter on llama.cpp needs llama.cpp's {CONVERTER}, which is not in {CONVERTER_DIR}: run "
            f"`make setup` (it extracts the script from llama-cpp-python {installed}'s source distribution), or {ON_TRANSFORMERS}"
        )
    if extracted != installed:
        raise ModelLoadError(
            f"{CONVERTER} in {CONVERTER_DIR} comes from llama-cpp-python {extracted}, but {installed} is installed: "
            f"run `make setup` to extract the matching one"
        )
    return script, installed


def adapter_weights(folder: Path) -> Path:
    """The adapter's weights file (peft writes safetensors; older versions a .bin)."""
    found = [folder / name for name in WEIGHTS if (folder / name).is_file()]
    if not found:
        raise ModelLoadError(f"the adapter in {folder} has no weights ({' or '.join(WEIGHTS)})")
    return found[0]


def check_convertible(folder: Path) -> None:
    """Refuse the peft options whose adapters llama.cpp would compute differently."""
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except ValueError as error:
        raise ModelLoadError(f"{folder / ADAPTER_CONFIG} is not valid JSON ({error})") from None
    used = [option for option in UNSUPPORTED if config.get(option)]
    if used:
        raise ModelLoadError(
            f"the adapter in {folder} uses {', '.join(used)}, which llama.cpp's LoRA does not support: {ON_TRANSFORMERS}"
        )


def converted_name(folder: Path, version: str) -> str:
    """The GGUF LoRA's file name: a digest of the adapter's config and weights and of the converter's version."""
    digest = hashlib.sha256(version.encode())
    for file in (folder / ADAPTER_CONFIG, adapter_weights(folder)):
        digest.update(file.read_bytes())
    return f"adapter-{digest.hexdigest()[:16]}.gguf"


def gguf_adapter(folder: Path, base_gguf: Path) -> Path:
    """The adapter in `folder` as a GGUF LoRA file beside it: converted on first use and whenever the adapter changes."""
    script, version = converter_script()
    check_convertible(folder)
    target = folder / converted_name(folder, version)
    if not target.is_file():
        convert(script, folder, base_gguf, target)
        for stale in folder.glob("adapter-*.gguf"):
            if stale != target:
                stale.unlink(missing_ok=True)
    return target


def convert(script: Path, folder: Path, base_gguf: Path, target: Path) -> None:
    """Run the converter into a scratch file renamed to `target` once whole: a failure leaves nothing behind."""
    from dualrec.llm.transformers_backend import convert_gguf  # loads torch: only when converting

    base_config = convert_gguf(base_gguf)
    try:
        handle, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    except OSError as error:
        raise ModelLoadError(f"cannot write the adapter's GGUF LoRA into {folder}: {error}") from None
    os.close(handle)
    command = [sys.executable, str(script), "--base", str(base_config), "--outfile", scratch, "--outtype", "f32", str(folder)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            said = " | ".join([line for line in done.stderr.splitlines() if line.strip()][-3:])
            raise ModelLoadError(
                f"llama.cpp's {CONVERTER} could not convert the adapter in {folder} (exit {done.returncode}): {said}; "
                f"{ON_TRANSFORMERS}"
            )
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)


def load_gguf_adapter(adapter: AdapterSpec) -> LlamaCppAdapterBackend:
    """The backend of a checked 'PRESET+ADAPTER' on a GGUF base: the base loaded by llama.cpp with the adapter on."""
    preset = adapter.preset
    base_gguf = gguf_path(preset)
    if base_gguf is None:
        raise ModelLoadError(f"{adapter.base_name} is not a GGUF model, so llama.cpp cannot serve its adapter: {ON_TRANSFORMERS}")
    if not base_gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {base_gguf}")
    lora = gguf_adapter(adapter.folder, base_gguf)
    backend = load_llamacpp(base_gguf, settings=preset.settings, context_length=preset.context_length, lora=lora)
    return LlamaCppAdapterBackend(backend.llama, name=adapter.name, base_name=adapter.base_name, settings=backend.settings)
