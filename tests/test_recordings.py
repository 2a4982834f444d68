import threading
import time

import pytest

from dualrec.app.recordings import Recording, RecordingError, RecordingStore, record, replay


@pytest.fixture()
def store(tmp_path):
    return RecordingStore(tmp_path / "rec")


def slow_chunks():
    for chunk in ["Heat ", "(1995)", "\n"]:
        time.sleep(0.05)
        yield chunk


def test_a_stream_is_recorded_with_its_timing(store):
    recording = Recording("smollm2-135m", "prompt A", {"temperature": 0.0})
    assert "".join(record(slow_chunks(), recording, store)) == "Heat (1995)\n"
    found = store.find("smollm2-135m", "prompt A")
    assert found.answer == "Heat (1995)\n" and found.settings == {"temperature": 0.0}
    assert 0.04 < found.first_token_s < found.total_s
    assert store.find("smollm2-135m", "prompt B") is None and store.find("other", "prompt A") is None


def test_the_latest_recording_wins_and_empty_streams_are_not_kept(store):
    store.add(Recording("m", "p", chunks=[(0.1, "old")]))
    store.add(Recording("m", "p", chunks=[(0.1, "new")]))
    list(record(iter([]), Recording("m", "p"), store))
    assert store.find("m", "p").answer == "new" and len(store.all()) == 2


def test_replay_keeps_the_recorded_pace_and_stops(store):
    recording = Recording("m", "p", chunks=[(0.0, "a"), (0.2, "b"), (0.4, "c")])
    started = time.perf_counter()
    assert list(replay(recording)) == ["a", "b", "c"]
    assert 0.35 < time.perf_counter() - started < 1.0
    assert list(replay(recording, speed=100)) == ["a", "b", "c"]
    stop = threading.Event()
    stream = replay(recording, stop=stop)
    assert next(stream) == "a"
    stop.set()
    assert list(stream) == []


def test_export_and_import_round_trip(store, tmp_path):
    store.add(Recording("m", "p", {"seed": 1}, [(0.0, "x")]))
    target = tmp_path / "export.jsonl"
    assert store.export(target) == 1
    other = RecordingStore(tmp_path / "other")
    assert other.import_file(target) == 1
    assert other.find("m", "p").chunks == [(0.0, "x")]


def test_a_broken_import_names_the_line_and_adds_nothing(store, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "m", "prompt": "p", "chunks": [], "created": "x"}\nnot json\n')
    with pytest.raises(RecordingError, match="line 2 .*nothing was imported"):
        store.import_file(bad)
    assert store.all() == []
