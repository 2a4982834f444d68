"""The embedded SmolLM2 GGUF, for real and offline, through both local engines."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.config import paths
from dualrec.llm import (
    DEFAULT_PRESET,
    PRESETS,
    GenerationSettings,
    LLMBackend,
    LLMError,
    ModelLoadError,
    gguf_path,
    load_backend,
    split_reasoning,
)
from dualrec.llm.transformers_backend import TransformersBackend, convert_gguf, gguf_cache_folder

PROMPT = "Recommend one famous movie from the 1990s, with its year."
GREEDY = GenerationSettings(max_new_tokens=16, greedy=True)
LONG = GenerationSettings(max_new_tokens=300, greedy=True)


def loaded(engine: str) -> Iterator[LLMBackend]:
    backend = load_backend(DEFAULT_PRESET, engine=engine)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def transformers_backend() -> Iterator[TransformersBackend]:
    # One torch thread: on a small shared CPU, OpenMP threads competing for cores make decoding several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield from loaded("transformers")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llamacpp_backend() -> Iterator[LLMBackend]:
    pytest.importorskip("llama_cpp")
    yield from loaded("llama.cpp")


@pytest.fixture(params=["transformers_backend", "llamacpp_backend"])
def backend(request: pytest.FixtureRequest) -> LLMBackend:
    return request.getfixturevalue(request.param)


@pytest.mark.llm
def test_streamed_chunks_join_to_the_generated_greedy_answer(backend: LLMBackend) -> None:
    chunks = list(backend.stream(PROMPT, GREEDY))
    assert len(chunks) > 1 and len("".join(chunks).split()) >= 3
    assert "".join(chunks) == backend.generate(PROMPT, GREEDY)


@pytest.mark.llm
def test_a_seed_makes_sampling_repeatable(backend: LLMBackend) -> None:
    def sample(seed: int) -> str:
        return backend.generate(PROMPT, GenerationSettings(max_new_tokens=8, temperature=1.5, seed=seed))

    first = sample(7)
    assert sample(7) == first
    assert {sample(8), sample(9)} != {first}


@pytest.mark.llm
def test_stop_from_another_thread_ends_the_stream(backend: LLMBackend) -> None:
    stop, chunks = threading.Event(), []
    consumer = threading.Thread(target=lambda: chunks.extend(backend.stream("Tell a long story.", LONG, stop=stop)))
    consumer.start()
    while len(chunks) < 3 and consumer.is_alive():
        time.sleep(0.01)
    stopped_at = len(chunks)
    stop.set()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert 3 <= stopped_at <= len(chunks) <= stopped_at + 1


@pytest.mark.llm
def test_an_abandoned_stream_frees_the_backend(backend: LLMBackend) -> None:
    stream = backend.stream("Tell a long story.", LONG)
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("generate-")]
    assert backend.generate(PROMPT, GenerationSettings(max_new_tokens=2, greedy=True))  # not locked


@pytest.mark.llm
def test_a_template_that_opens_the_thinking_block_streams_the_tag(transformers_backend: TransformersBackend) -> None:
    tokenizer = transformers_backend.tokenizer
    template = tokenizer.chat_template
    tokenizer.chat_template = template + "<think>\n"  # as DeepSeek-R1's template does
    try:
        chunks = list(transformers_backend.stream(PROMPT, GenerationSettings(max_new_tokens=4, greedy=True)))
    finally:
        tokenizer.chat_template = template
    assert chunks[0] == "<think>\n"
    assert split_reasoning("".join(chunks)) == ("".join(chunks[1:]).strip(), "")


@pytest.mark.llm
def test_a_failure_inside_generate_is_raised_not_hung(transformers_backend: TransformersBackend) -> None:
    with pytest.raises(LLMError, match="failed while generating"):
        transformers_backend.generate(PROMPT, GenerationSettings(max_new_tokens=-1))


@pytest.mark.llm
def test_the_gguf_is_converted_once_into_the_cache(transformers_backend: LLMBackend) -> None:
    gguf = gguf_path(PRESETS[DEFAULT_PRESET])
    folder = gguf_cache_folder(gguf)
    assert folder.parent == paths().llm_cache
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert not [p for p in paths().llm_cache.iterdir() if p.name.startswith(".")]  # no scratch folder left
    started = time.perf_counter()
    assert convert_gguf(gguf) == folder
    assert time.perf_counter() - started < 0.1


def test_a_corrupt_gguf_is_a_load_error_and_leaves_no_scratch(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUALREC_CACHE_DIR", str(tmp_path / "cache"))
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(ModelLoadError, match="could not load"):
        load_backend(str(corrupt), engine="transformers")
    assert not list((tmp_path / "cache" / "llm").iterdir())
