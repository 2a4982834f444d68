"""Side-by-side generation (dualrec.app.comparison): live columns off the caller's thread, recordings, replays,
load errors per column, and two sessions sharing one model through its lock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from dualrec.app.comparison import SharedModel, plan_columns, start_comparison
from dualrec.app.recordings import RecordingStore
from dualrec.app.tables import PromptChoice, default_prompt, prompt_caption, trained_prompt
from dualrec.config import paths
from dualrec.data.dataset import load_dataset
from dualrec.grounding.pipeline import prepare_prompt
from dualrec.llm import GenerationSettings, LLMBackend, Message, UnknownPresetError
from tests.test_app_pages import run, texts

SETTINGS = GenerationSettings(max_new_tokens=16, seed=3)


class ScriptedBackend(LLMBackend):
    """Streams the given chunks, `delay` seconds apart, one generation at a time (like the local engines)."""

    def __init__(self, chunks: list[str], delay: float = 0.0):
        super().__init__("scripted")
        self.chunks, self.delay = chunks, delay
        self.lock = threading.Lock()
        self.seeds: list[int | None] = []

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        with self.lock:
            self.seeds.append(settings.seed)
            for chunk in self.chunks:
                if stop.wait(self.delay):
                    return
                yield chunk


@pytest.fixture(scope="module")
def prompt(ml_dir):
    dataset = load_dataset(ml_dir)
    return dataset, prepare_prompt(dataset, dataset.catalogue[:5].tolist(), None)


def loader(models: dict[str, SharedModel], calls: list | None = None):
    def load(spec: str, replica: int) -> SharedModel:
        if calls is not None:
            calls.append((spec, replica))
        if spec not in models:
            raise UnknownPresetError(f"unknown model preset {spec!r}")
        return models[spec]

    return load


def test_both_columns_stream_and_are_recorded_then_replayed_without_the_model(prompt, tmp_path):
    dataset, stage2 = prompt
    store = RecordingStore(tmp_path)
    models = {
        "a": SharedModel(ScriptedBackend(["1. Toy Story (1995)\n", "2. Made Up Movie (2003)"])),
        "b": SharedModel(ScriptedBackend(["Alien³ (1992)"])),
    }
    columns = plan_columns(["a", "b"], stage2.text, SETTINGS, loader(models), store, presenting=False)
    comparison = start_comparison(stage2, columns, store)
    assert comparison.streams.wait(10) and comparison.done
    results = comparison.finish(dataset)
    assert results["A"].answer.startswith("1. Toy Story") and [m.movie_id is None for m in results["A"].titles] == [False, True]
    assert results["B"].titles[0].movie_id == 6
    assert [c.settings.seed for c in columns] == [3, 4]  # column B samples with seed + 1
    assert {r.model for r in store.all()} == {"a", "b"} and all(r.settings["max_new_tokens"] == 16 for r in store.all())

    calls: list = []
    replayed = plan_columns(["a", "b"], stage2.text, SETTINGS, loader({}, calls), store, presenting=True)
    assert calls == [] and all(c.recording is not None and c.runs for c in replayed)
    again = start_comparison(stage2, replayed, store, speed=50.0)
    assert again.streams.wait(10)
    assert again.answers["A"].text == results["A"].answer and len(store.all()) == 2  # replays are not re-recorded


def test_presentation_mode_without_a_recording_generates_live(prompt, tmp_path):
    _, stage2 = prompt
    calls: list = []
    models = {"a": SharedModel(ScriptedBackend(["x"]))}
    columns = plan_columns(["a"], stage2.text, SETTINGS, loader(models, calls), RecordingStore(tmp_path), presenting=True)
    assert calls == [("a", 0)] and columns[0].recording is None and columns[0].model is models["a"]


def test_a_model_that_fails_to_load_only_stops_its_own_column(prompt, tmp_path):
    dataset, stage2 = prompt
    store = RecordingStore(tmp_path)
    models = {"a": SharedModel(ScriptedBackend(["The Matrix (1999)"]))}
    columns = plan_columns(["a", "nope"], stage2.text, SETTINGS, loader(models), store, presenting=False)
    assert columns[1].error.startswith("nope could not be loaded: unknown model preset") and not columns[1].runs
    comparison = start_comparison(stage2, columns, store)
    assert comparison.streams.wait(10) and list(comparison.answers) == ["A"]
    assert comparison.finish(dataset)["A"].recommended == [7]


def test_the_same_model_twice_gets_two_replicas(prompt, tmp_path):
    _, stage2 = prompt
    calls: list = []
    models = {"a": SharedModel(ScriptedBackend(["x"]))}
    plan_columns(["a", "a"], stage2.text, SETTINGS, loader(models, calls), RecordingStore(tmp_path), presenting=False)
    assert calls == [("a", 0), ("a", 1)]


def test_two_sessions_on_one_model_take_turns_and_each_gets_its_own_answer(prompt, tmp_path):
    dataset, stage2 = prompt
    store = RecordingStore(tmp_path)
    backend = ScriptedBackend(["Toy ", "Story ", "(1995)"], delay=0.05)
    shared = {"a": SharedModel(backend)}
    first = start_comparison(stage2, plan_columns(["a"], stage2.text, SETTINGS, loader(shared), store, False), store)
    time.sleep(0.02)
    other = prepare_prompt(dataset, dataset.catalogue[5:9].tolist(), None)
    second = start_comparison(
        other, plan_columns(["a"], other.text, GenerationSettings(seed=9), loader(shared), store, False), store
    )
    assert second.columns[0].queued  # the page says it waits for another session
    assert first.streams.wait(10) and second.streams.wait(10)
    assert first.answers["A"].text == second.answers["A"].text == "Toy Story (1995)"
    assert backend.seeds == [3, 9]  # one after the other, never interleaved
    assert second.answers["A"].first_chunk_s > first.answers["A"].first_chunk_s
    assert shared["a"].active == 0


def test_stop_ends_both_columns_and_keeps_the_text_so_far(prompt, tmp_path):
    dataset, stage2 = prompt
    store = RecordingStore(tmp_path)
    models = {"a": SharedModel(ScriptedBackend(["Toy Story (1995)\n"] + ["more\n"] * 200, delay=0.02))}
    comparison = start_comparison(stage2, plan_columns(["a", "a"], stage2.text, SETTINGS, loader(models), store, False), store)
    while not comparison.answers["A"].chunks:
        time.sleep(0.01)
    comparison.stop()
    assert comparison.done and comparison.stopped
    assert comparison.streams.wait(10)
    assert comparison.finish(dataset)["A"].answer.startswith("Toy Story")
    assert store.all() == []  # a stopped answer is not recorded: a replay must be a whole answer


def quick_adapter(metadata: str) -> str:
    """An adapter folder under the models folder (peft config and `dualrec finetune`'s metadata); its spec."""
    folder = paths().models / "adapters" / "quick"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    (folder / "metadata.json").write_text(metadata)
    return "smollm2-135m+adapters/quick"


def test_an_adapter_column_starts_with_the_prompt_it_was_trained_on_and_each_column_says_which():
    adapter = quick_adapter(json.dumps({"examples": {"template": "list-k", "targets": 5}}))
    assert trained_prompt(adapter) == PromptChoice("list-k", 5) and trained_prompt("smollm2-135m") is None
    assert default_prompt(["smollm2-135m", adapter]) == (PromptChoice("list-k", 5), "the prompt B's adapter was trained on")
    assert default_prompt(["smollm2-135m", "deepseek-v3"]) == (PromptChoice("poster", 3), "the poster's prompt")
    assert prompt_caption(adapter, "list-k", 5) == "Prompt: list-k, K 5: the prompt its adapter was trained on."
    assert prompt_caption(adapter, "poster", 3).endswith("its adapter was trained on list-k, K 5: this prompt is new to it.")
    assert prompt_caption("smollm2-135m", "list-k", 5) == "Prompt: list-k, K 5 (not fine-tuned on a prompt)."
    quick_adapter("{not json")
    assert trained_prompt(adapter) is None and "training prompt is not recorded" in prompt_caption(adapter, "list-k", 5)


def test_the_page_starts_with_the_adapters_prompt_and_says_so(ml_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DUALREC_HOME", str(tmp_path))
    monkeypatch.setenv("DUALREC_DATA_DIR", str(ml_dir))
    quick_adapter(json.dumps({"examples": {"template": "list-k", "targets": 5}}))
    at = run()
    assert at.selectbox(key="template-list-k").value == "list-k" and at.number_input(key="k-5").value == 5
    assert "Starts as list-k, K 5: the prompt B's adapter was trained on." in texts(at.caption)
    assert "recommend 5 more movies" in at.code[0].value and "Answer with exactly 5 lines" in at.code[0].value
