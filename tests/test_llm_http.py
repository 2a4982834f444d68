"""The OpenAI-compatible backend over real loopback HTTP: llama.cpp's own server and a scripted fake one."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from dualrec.llm import (
    DEFAULT_PRESET,
    PRESETS,
    EmptyAnswerError,
    GenerationSettings,
    LLMError,
    LLMHTTPError,
    LLMTimeoutError,
    gguf_path,
    load_backend,
)
from dualrec.llm.openai_backend import OpenAIBackend
from tests.llm_fixtures import fake_openai
from tests.loopback import LOOPBACK, free_port

SECRET = "sk-test-DO-NOT-LEAK-1234567890"
GREEDY = GenerationSettings(max_new_tokens=24, greedy=True, seed=1)


def backend_for(base_url: str, **overrides) -> OpenAIBackend:
    return load_backend("custom", base_url=base_url, model="fake", api_key=SECRET, **overrides)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def llamacpp_server() -> Iterator[str]:
    """llama-cpp-python's bundled OpenAI-compatible server, serving the embedded GGUF on loopback."""
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    port = free_port()
    model = str(gguf_path(PRESETS[DEFAULT_PRESET]))
    options = ["--host", LOOPBACK, "--port", str(port), "--n_ctx", "2048"]
    options += ["--n_threads", "1", "--n_threads_batch", "1"]  # spinning threads crawl on a busy CPU
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://{LOOPBACK}:{port}/v1"
    deadline = time.monotonic() + 60
    try:
        while not answers(f"{base_url}/models"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("llama.cpp server did not start")
            time.sleep(0.1)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.llm
def test_a_real_server_streams_an_answer(llamacpp_server: str) -> None:
    # No equality with a second answer: the server reuses the cached prompt prefix, which changes the logits.
    backend = load_backend("custom", base_url=llamacpp_server, model="smollm2")
    chunks = list(backend.stream("Recommend one movie from the 1990s.", GREEDY))
    assert len(chunks) > 1 and len("".join(chunks).split()) >= 3


@pytest.mark.llm
def test_a_real_server_stops_mid_stream(llamacpp_server: str) -> None:
    backend, stop, chunks = load_backend("custom", base_url=llamacpp_server, model="smollm2"), threading.Event(), []
    for chunk in backend.stream("Tell a long story.", GenerationSettings(max_new_tokens=300), stop=stop):
        chunks.append(chunk)
        if len(chunks) == 3:
            stop.set()
    assert len(chunks) == 3


def test_chunks_settings_and_key_reach_the_server() -> None:
    with fake_openai(["Heat ", "(1995)"]) as server:
        backend = backend_for(server.base_url)
        assert list(backend.stream("hi", GREEDY, system="be brief")) == ["Heat ", "(1995)"]
    headers, body = server.requests[0]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert body["stream"] is True and body["model"] == "fake"
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (24, 0.0, 1)


def test_no_seed_is_left_out_of_the_request() -> None:
    with fake_openai(["ok"]) as server:
        backend_for(server.base_url).generate("hi")
    assert "seed" not in server.requests[0][1]


def test_429_is_retried_until_it_succeeds() -> None:
    with fake_openai(429, 429, ["ok"]) as server:
        assert backend_for(server.base_url, max_retries=3).generate("hi") == "ok"
    assert len(server.requests) == 3


def test_5xx_fails_after_the_retries_without_leaking_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with fake_openai(500) as server:
        backend = backend_for(server.base_url, max_retries=2)
        with pytest.raises(LLMHTTPError, match="answered HTTP 500 after 2 retries: .*fake failure 500") as error:
            backend.generate("hi")
    assert error.value.status == 500 and len(server.requests) == 3
    assert error.value.__cause__ is None and error.value.__suppress_context__
    for text in (str(error.value), repr(backend), caplog.text):
        assert SECRET not in text


def test_an_empty_answer_is_an_error() -> None:
    with fake_openai([]) as server, pytest.raises(EmptyAnswerError, match="custom returned an empty answer"):
        backend_for(server.base_url).generate("hi")


def test_a_slow_answer_times_out() -> None:
    with fake_openai(("slow", 2.0)) as server:
        backend = backend_for(server.base_url, timeout_s=0.3, max_retries=1)
        with pytest.raises(LLMTimeoutError, match="no answer from .* within 0.3s \\(1 retries\\)"):
            backend.generate("hi")
    assert len(server.requests) == 2


def test_a_stall_mid_stream_times_out() -> None:
    with fake_openai(("stall", 2.0)) as server, pytest.raises(LLMTimeoutError, match="within 0.3s"):
        list(backend_for(server.base_url, timeout_s=0.3, max_retries=0).stream("hi"))


def test_an_unreachable_server_is_an_http_error() -> None:
    backend = backend_for(f"http://{LOOPBACK}:{free_port()}/v1", max_retries=0)
    with pytest.raises(LLMHTTPError, match="cannot reach") as error:
        backend.generate("hi")
    assert error.value.status is None and isinstance(error.value, LLMError)
