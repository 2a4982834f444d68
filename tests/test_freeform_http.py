"""The `freeform` protocol against an OpenAI-compatible server on loopback: `concurrency` requests really in flight at
once (never more), answers kept in case order, the client's retries, and a failure that stops the run cleanly."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dualrec.cli import main
from dualrec.config import FREEFORM
from dualrec.errors import DualrecError
from dualrec.evaluation import LLMAnswers, evaluate
from dualrec.evaluation.freeform import sample_cases
from dualrec.llm import load_backend
from tests.llm_fixtures import sse_chunk
from tests.loopback import LOOPBACK
from tests.test_freeform import oracle_answers

HOLD_S = 10.0  # the longest a request waits for the others it should overlap with


class ChatServer(ThreadingHTTPServer):
    """Chat completions answered from a table (the last message -> the answer, streamed as the OpenAI API streams) after
    `delays[prompt]` seconds, so later cases can finish first. Each request is held until `overlap` requests have been
    in flight at once (or HOLD_S), so overlap shows however busy the machine is; `failures[prompt]`: HTTP statuses
    answered to that prompt's first attempts. `spans`: (start, end) of every answered request."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, answers: dict[str, str], overlap: int = 1, delays: dict | None = None, failures: dict | None = None):
        super().__init__((LOOPBACK, 0), ChatHandler)
        self.answers, self.overlap, self.delays = answers, overlap, delays or {}
        self.failures = {prompt: list(statuses) for prompt, statuses in (failures or {}).items()}
        self.spans: list[tuple[float, float]] = []
        self.attempts = self.in_flight = self.peak = 0
        self.changed = threading.Condition()

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_POST(self) -> None:
        prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][-1]["content"]
        server = self.server
        with server.changed:
            server.attempts += 1
            statuses = server.failures.get(prompt)
            status = statuses.pop(0) if statuses else None
        if status:
            self.send_error(status)
            return
        started = time.perf_counter()
        with server.changed:
            server.in_flight += 1
            server.peak = max(server.peak, server.in_flight)
            server.changed.notify_all()
            server.changed.wait_for(lambda: server.peak >= server.overlap, timeout=HOLD_S)
        time.sleep(server.delays.get(prompt, 0.0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for line in server.answers[prompt].splitlines(keepends=True):
            self.wfile.write(sse_chunk({"content": line}))
        with server.changed:  # ended before the client can tell, so a next request always starts after it
            server.in_flight -= 1
            server.spans.append((started, time.perf_counter()))
        self.wfile.write(sse_chunk({}, finish="stop") + b"data: [DONE]\n\n")

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@contextmanager
def chat_server(*args, **kwargs) -> Iterator[ChatServer]:
    server = ChatServer(*args, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most requests in flight at one moment, from their (start, end) times."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def case_answers(dataset, limit: int) -> tuple[dict[str, str], dict[str, float]]:
    """Each of `limit` drawn cases' answer naming its target (tests.test_freeform.oracle_answers, the prompts without an
    LSTM pick), and delays that make later cases answer sooner than earlier ones."""
    drawn = LLMAnswers(limit=limit)  # the default template, k and seed, as every system below
    answers = oracle_answers(dataset, sample_cases(dataset.cases["test"], limit, drawn.limit_seed), drawn)
    return answers, {prompt: 0.01 * (len(answers) - row) for row, prompt in enumerate(answers)}


def served(server: ChatServer, tmp_path, limit: int, concurrency: int, **client) -> LLMAnswers:
    """The server's model as a list system (`client`: Preset fields such as max_retries), without an LSTM."""
    backend = load_backend("custom", base_url=server.base_url, model="fake", **client)
    return LLMAnswers("custom", limit=limit, concurrency=concurrency, lstm_dir=str(tmp_path / "no-lstm"), backend=backend)


def freeform_entry(dataset, system: LLMAnswers) -> dict:
    return evaluate([system], dataset, [FREEFORM], samples=50)["results"][0]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_requests_overlap_up_to_the_concurrency_and_answers_stay_in_case_order(dataset, tmp_path, concurrency):
    answers, delays = case_answers(dataset, 12)
    with chat_server(answers, concurrency, delays) as server:
        entry = freeform_entry(dataset, served(server, tmp_path, 12, concurrency))
    assert len(server.spans) == 12 and most_at_once(server.spans) == concurrency
    assert entry["metrics"]["HR@1"]["value"] == 1.0  # every case got its own answer back
    assert entry["options"]["concurrency"] == concurrency and "concurrency_note" not in entry["options"]
    assert entry["options"]["engine"] == "OpenAIBackend"


def test_a_refused_request_is_retried_by_the_client(dataset, tmp_path):
    answers, _ = case_answers(dataset, 6)
    with chat_server(answers, failures={next(iter(answers)): [503]}) as server:
        entry = freeform_entry(dataset, served(server, tmp_path, 6, 3, max_retries=2))
    assert server.attempts == 7 and entry["metrics"]["HR@1"]["value"] == 1.0


def test_a_failed_request_stops_the_run_and_sends_no_more(dataset, tmp_path):
    answers, _ = case_answers(dataset, 12)
    with chat_server(answers, delays=dict.fromkeys(answers, 0.2), failures={next(iter(answers)): [500]}) as server:
        with pytest.raises(DualrecError, match="answered HTTP 500 after 0 retries"):
            freeform_entry(dataset, served(server, tmp_path, 12, 2, max_retries=0))
    assert server.attempts < 12


def test_the_command_sends_concurrent_requests_and_records_the_concurrency(ml_dir, dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DUALREC_HOME", str(tmp_path))  # no trained LSTM there: the prompts the oracle expects
    answers, delays = case_answers(dataset, 6)
    out = tmp_path / "results.json"
    with chat_server(answers, 3, delays) as server:
        monkeypatch.setenv("DUALREC_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("DUALREC_LLM_MODEL", "fake")
        argv = ["evaluate", "--data-dir", str(ml_dir), "--protocol", FREEFORM, "--model", "custom", "--limit", "6"]
        assert main([*argv, "--concurrency", "3", "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["results"][0]
    assert most_at_once(server.spans) == 3 and entry["options"]["concurrency"] == 3
    assert entry["metrics"]["HR@1"]["value"] == 1.0 and "custom: 6/6 answers" in capsys.readouterr().err
