"""Helpers for the tests of `dualrec.llm`: offline hub settings, free ports and a fake OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.loopback import LOOPBACK

# Never reach the Hugging Face hub from a test; set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def sse_chunk(delta: dict, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeOpenAI(ThreadingHTTPServer):
    """Answers POST .../chat/completions from a script, one entry per request (the last one repeats).

    Entries: a list of text chunks (streamed as SSE; [] streams no text), an int HTTP status (error body),
    ("slow", seconds) to sleep before answering, or ("stall", seconds) to sleep after the first chunk.
    Every request's headers (lower-cased) and JSON body are recorded.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, script: list) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.script = list(script)
        self.requests: list[tuple[dict, dict]] = []

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}/v1"

    def next_entry(self):
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
        entry = self.server.next_entry()
        if isinstance(entry, tuple) and entry[0] == "slow":
            time.sleep(entry[1])
            entry = ["late"]
        if isinstance(entry, int):
            self._error(entry)
        else:
            self._stream(entry)

    def _error(self, status: int) -> None:
        payload = json.dumps({"error": {"message": f"fake failure {status}", "type": "test"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == 429:
            self.send_header("Retry-After", "0.05")
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, entry: list[str] | tuple[str, float]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(sse_chunk({"role": "assistant", "content": ""}))
        for text in ["first", ("stall", entry[1])] if isinstance(entry, tuple) else entry:
            if isinstance(text, tuple):
                time.sleep(text[1])
                continue
            self.wfile.write(sse_chunk({"content": text}))
            self.wfile.flush()
        self.wfile.write(sse_chunk({}, finish="stop") + b"data: [DONE]\n\n")

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@contextmanager
def fake_openai(*script) -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(list(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
