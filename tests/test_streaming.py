import threading
import time

from dualrec.app.streaming import ParallelStreams
from dualrec.errors import DualrecError


def ticking(words, delay=0.02, stop=None):
    def make():
        for word in words:
            time.sleep(delay)
            yield word

    return make


def test_two_streams_run_at_the_same_time():
    started = time.perf_counter()
    streams = ParallelStreams({"a": ticking(["x"] * 10), "b": ticking(["y"] * 10)})
    assert streams.wait(timeout=5)
    assert time.perf_counter() - started < 0.35  # 2 x 10 x 20 ms run in parallel, not in a row
    assert streams.answers["a"].text == "x" * 10 and streams.answers["b"].text == "y" * 10
    a = streams.answers["a"]
    assert 0 < a.first_chunk_s < a.finished_s and a.chunks_per_s > 10


def test_stop_ends_every_stream_early():
    streams = ParallelStreams({"a": ticking(["x"] * 500), "b": ticking(["y"] * 500)})
    time.sleep(0.1)
    streams.stop()
    assert streams.wait(timeout=2)
    assert 0 < len(streams.answers["a"].chunks) < 500


def test_an_error_stays_on_its_own_column():
    def failing():
        yield "partial "
        raise DualrecError("the model ran out of memory")

    def crashing():
        raise RuntimeError("boom")
        yield ""

    streams = ParallelStreams({"ok": ticking(["fine"]), "bad": failing, "crash": crashing})
    assert streams.wait(timeout=2)
    assert streams.answers["ok"].text == "fine" and streams.answers["ok"].error is None
    assert streams.answers["bad"].text == "partial " and streams.answers["bad"].error == "the model ran out of memory"
    assert streams.answers["crash"].error == "RuntimeError: boom"


def test_a_shared_stop_event_can_be_passed_in():
    stop = threading.Event()
    streams = ParallelStreams({"a": ticking(["x"] * 500)}, stop=stop)
    stop.set()
    assert streams.wait(timeout=2) and len(streams.answers["a"].chunks) <= 1
