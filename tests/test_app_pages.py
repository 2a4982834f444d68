"""Every page of the Streamlit app through streamlit.testing.v1.AppTest: happy paths with a tiny trained LSTM and the
real embedded model, and the bad inputs (unknown user, empty history, missing data, missing LSTM, models that fail
to load, answers without titles), none of which may show a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from dualrec.app import state as app_state
from dualrec.app.comparison import SharedModel
from dualrec.app.recordings import Recording, RecordingStore
from dualrec.data.dataset import load_dataset
from dualrec.evaluation.results import result_entry, results_document, write_results
from dualrec.llm import GenerationSettings, LLMBackend, Message
from tests.conftest import NAMESAKES, app_folders

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 300  # the embedded model on a busy 2-core machine
LOADING = "Loading the LSTM in the background"


@pytest.fixture(scope="module")
def app_env(ml_dir, tiny_lstm_dir, tmp_path_factory):
    """DUALREC_HOME with a tiny trained LSTM, the generated MovieLens folder as the data folder."""
    with pytest.MonkeyPatch.context() as patch:
        home = app_folders(patch, tmp_path_factory.mktemp("app-home"), ml_dir, tiny_lstm_dir)
        for name in ("DEEPSEEK_API_KEY", "DUALREC_LLM_BASE_URL", "DUALREC_LLM_MODEL"):
            patch.delenv(name, raising=False)
        yield SimpleNamespace(home=home, dataset=load_dataset(ml_dir), data_dir=ml_dir)


@pytest.fixture
def empty_home(app_env, tmp_path, monkeypatch):
    """A DUALREC_HOME without an LSTM, recordings or results (and a working folder without results/)."""
    monkeypatch.setenv("DUALREC_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(at: AppTest | None = None) -> AppTest:
    at = (at or AppTest.from_file(APP, default_timeout=TIMEOUT)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def loaded(at: AppTest | None = None, seconds: float = 120) -> AppTest:
    """The page run again until the LSTM's background load has ended (the first runs show the history meanwhile)."""
    at = run(at)
    deadline = time.monotonic() + seconds
    while LOADING in texts(at.info):
        assert time.monotonic() < deadline, "the LSTM did not load"
        time.sleep(0.2)
        at = run(at)
    return at


def generate(at: AppTest, tokens: int = 24) -> AppTest:
    at = loaded(at)
    at.number_input(key="max_new_tokens").set_value(tokens)
    at.button(key="generate").click()
    return run(at)


class ScriptedBackend(LLMBackend):
    def __init__(self, text: str):
        super().__init__("scripted")
        self.text = text

    def _stream(self, messages: list[Message], settings: GenerationSettings, stop: threading.Event) -> Iterator[str]:
        yield from re.findall(r"\S+\s*", self.text)


# ---- Recommend -----------------------------------------------------------------------------------------------------


@pytest.mark.llm
def test_a_test_user_with_the_lstm_pick_and_both_columns_streaming_the_embedded_model(app_env):
    at = loaded()
    assert [h.value for h in at.header] == ["1 · History", "2 · LSTM", "3 · Prompt", "4 · Two models", "5 · Genre overlap"]
    profile = next(m.value for m in at.markdown if m.value.startswith("👤"))
    assert "test user" in profile and ("**female**" in profile or "**male**" in profile)
    assert "LSTM top-1" in texts(at.success) and charts(at) == 2  # top-k bars, genre overlap
    prompt = at.code[0].value
    assert prompt.startswith("Below is a user's movie watching history:") and "the system (LSTM) recommends:" in prompt
    history = at.dataframe[0].value
    assert {"title", "year", "genres", "rating", "date"} <= set(history.columns)

    at.toggle(key="reveal").set_value(True)
    at = run(at)
    assert "watched" in texts(at.success) and "Next, user" in texts(at.success)

    at = generate(at)
    metrics = [m.label for m in at.metric]
    assert metrics.count("Time to first token") == 2 and metrics.count("Tokens/s") == 2
    assert texts(at.caption).count("done in") == 2
    assert not at.error and charts(at) == 2
    recorded = RecordingStore().all()
    assert len(recorded) == 2 and {r.settings["seed"] for r in recorded} == {0, 1} and all(r.answer for r in recorded)


@pytest.mark.llm
def test_presentation_mode_replays_the_recorded_answers(app_env):
    at = run()
    at = generate(at)  # recorded (again) for this prompt and settings
    answers = {r.settings["seed"]: r.answer for r in RecordingStore().all()}
    at.toggle(key=app_state.PRESENTING).set_value(True)
    at = run(at)
    at.select_slider(key=app_state.SPEED).set_value(4.0)
    at = generate(at)
    assert texts(at.info).count("Replaying the answer recorded") == 2
    comparison = at.session_state[app_state.COMPARISON]
    assert [comparison.answers[label].text for label in "AB"] == [answers[0], answers[1]]


def test_building_a_history_by_search_add_reorder_and_remove(app_env):
    at = run()
    at.segmented_control(key="source").set_value("Build a history")
    at = run(at)
    assert "The history is empty" in texts(at.info) and not at.header[1:]  # nothing to recommend from yet
    for query, title in [
        ("matrix", "The Matrix (1999)"),
        ("toy story", "Toy Story (1995)"),
        ("toy story 2", "Toy Story 2 (1999)"),
    ]:
        at.text_input(key="search").set_value(query)
        at = run(at)
        next(b for b in at.button if b.label.startswith(f"➕ {title}")).click()
        at = run(at)
    assert at.session_state[app_state.BUILT_HISTORY] == [7, 8, 9]
    next(b for b in at.button if b.label.startswith("➕ Toy Story 2")).click()
    at = run(at)
    assert "already in the history" in texts(at.warning)
    at.button(key="up-9").click()
    at = run(at)
    at.button(key="remove-7").click()
    at = loaded(at)
    assert at.session_state[app_state.BUILT_HISTORY] == [9, 8]
    assert "LSTM top-1" in texts(at.success)
    prompt = at.code[0].value
    assert prompt.index("Toy Story 2 (1999)") < prompt.index("- Toy Story (1995)")


def test_the_history_shows_while_the_lstm_loads_in_the_background(app_env, tiny_lstm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DUALREC_HOME", str(tmp_path))  # a models folder of its own, so its LSTM is not loaded yet
    shutil.copytree(tiny_lstm_dir, tmp_path / "models" / "lstm")
    at = run()
    assert LOADING in texts(at.info) and len(at.dataframe[0].value) > 0  # the user's history, before the LSTM
    assert at.button(key="generate").disabled and "has no recommendation" in at.code[0].value
    at = loaded(at)
    assert "LSTM top-1" in texts(at.success) and not at.button(key="generate").disabled
    assert "the system (LSTM) recommends:" in at.code[0].value


# ---- a history from a file -----------------------------------------------------------------------------------------


def upload_history(at: AppTest, name: str, data: bytes) -> AppTest:
    at.segmented_control(key="source").set_value("Build a history")
    at = run(at)
    at.file_uploader(key="history_file").set_value((name, data, "text/csv"))
    return run(at)


def test_a_letterboxd_diary_becomes_the_built_history_in_watched_order(app_env):
    diary = (
        "Date,Name,Year,Letterboxd URI,Rating,Rewatch,Tags,Watched Date\n"
        "2024-03-02,Toy Story 2,1999,https://boxd.it/a,4,,,2024-03-01\n"
        "2024-01-10,The Matrix,1999,https://boxd.it/b,5,,,2024-01-09\n"
        "2024-02-01,Parasite,2019,https://boxd.it/c,5,,,2024-01-31\n"
        "2024-02-15,Toy Story,1995,https://boxd.it/d,4,,,2024-02-14\n"
    )
    at = upload_history(run(), "diary.csv", diary.encode())
    assert "diary.csv (Letterboxd diary): 4 rows, 3 matched, 0 ambiguous, 1 not in MovieLens." in texts(at.success)
    assert at.session_state[app_state.BUILT_HISTORY] == [7, 8, 9]  # The Matrix, Toy Story, Toy Story 2
    matched, missing = (frame.value for frame in at.dataframe[:2])
    assert matched["movie"].tolist() == ["The Matrix (1999)", "Toy Story (1995)", "Toy Story 2 (1999)"]
    assert matched["in history"].all() and missing["written"].tolist() == ["Parasite (2019)"]
    at = loaded(at)
    assert "LSTM top-1" in texts(at.success) and at.code[0].value.index("Matrix") < at.code[0].value.index("Toy Story 2")


def test_an_ambiguous_title_is_chosen_from_its_movies(app_env, namesakes_dir):
    at = run()
    at.text_input(key=app_state.DATA_DIR).set_value(str(namesakes_dir))
    at = upload_history(run(at), "films.txt", b"Toy Story\nHamlet\nThe Matrix\n")
    assert "films.txt (list of titles): 3 rows, 2 matched, 1 ambiguous, 0 not in MovieLens." in texts(at.success)
    choose = at.selectbox(key="choose-2")
    assert choose.label == "Line 2: Hamlet names 2 movies: which one?" and choose.options == ["Hamlet (1990)", "Hamlet (1996)"]
    choose.set_value(NAMESAKES["Hamlet (1996)"])
    at = run(at)
    assert "3 matched, 0 ambiguous" in texts(at.success)
    assert "1 matched movies are outside the 1,000-movie catalogue" in texts(at.caption)  # an unrated Hamlet
    assert at.session_state[app_state.BUILT_HISTORY] == [8, 7]


BAD_UPLOADS = [
    ("empty.csv", b"", "Cannot import empty.csv: the file is empty."),
    ("scores.csv", b"user,movie,stars\n1,2,3\n", "Cannot import scores.csv: its columns (user, movie, stars) are not those of"),
    ("poster.csv", b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(200)), "Cannot import poster.csv: it is not a text file."),
    ("big.txt", b"Toy Story\n" * 500_001, "Cannot import big.txt: 5.0 MB is more than a history file holds"),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD_UPLOADS, ids=[name for name, _, _ in BAD_UPLOADS])
def test_a_bad_history_file_is_one_message(app_env, name, data, message):
    at = upload_history(run(), name, data)
    assert message in texts(at.error) and "The history is empty" in texts(at.info)


def test_a_file_without_a_movielens_title_leaves_the_history_empty_and_lists_its_rows(app_env):
    at = upload_history(run(), "films.txt", b"Galaxy Llamas Forever\nParasite (2019)\n")
    assert "2 rows, 0 matched, 0 ambiguous, 2 not in MovieLens." in texts(at.success)
    assert at.dataframe[1].value["written"].tolist() == ["Galaxy Llamas Forever", "Parasite (2019)"]
    assert "The history is empty" in texts(at.info)


# ---- bad inputs: a message, never a traceback ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (99_999, "User 99999 is not in users.dat (valid ids run from 1 to 300)."),
        (0, "User 0 is not in users.dat (valid ids run from 1 to 300)."),
        (-5, "User -5 is not in users.dat (valid ids run from 1 to 300)."),
    ],
    ids=["unknown", "zero", "negative"],
)
def test_a_user_id_that_is_not_in_movielens_is_a_message(app_env, user, message):
    at = run()
    at.number_input(key="user_id").set_value(user)
    at = run(at)
    assert message in texts(at.error) and not at.header[1:]  # nothing to recommend from


def test_a_search_that_finds_no_catalogue_movie_says_so(app_env):
    at = run()
    at.segmented_control(key="source").set_value("Build a history")
    at = run(at)
    at.text_input(key="search").set_value("Galaxy Llamas Forever")
    at = run(at)
    assert "No movie of the 1,000-movie catalogue (the movies the LSTM knows) is close to 'Galaxy Llamas Forever'." in texts(
        at.warning
    )
    assert not [b for b in at.button if b.label.startswith("➕")] and "The history is empty" in texts(at.info)


@pytest.mark.parametrize(
    ("label", "value", "kept"),
    [("Movies to ask for", 0, None), ("Movies to ask for", 21, None), ("Max new tokens", 0, 160), ("Seed", -1, 0)],
    ids=["k 0", "k 21", "max new tokens 0", "seed -1"],
)
def test_out_of_range_numbers_are_refused_by_their_widgets(app_env, label, value, kept):
    """Streamlit keeps a number box's value within its bounds (the browser refuses it as it is typed)."""
    at = run()
    box = next(n for n in at.number_input if n.label == label)
    before = box.value
    box.set_value(value)
    at = run(at)
    assert next(n for n in at.number_input if n.label == label).value == (before if kept is None else kept)
    assert not at.error and at.code[0].value.startswith("Below is a user's movie watching history:")


def test_a_corrupt_data_folder_is_a_message_on_every_page(app_env, tmp_path):
    for name in ("movies.dat", "users.dat"):
        shutil.copy(app_env.data_dir / name, tmp_path / name)
    (tmp_path / "ratings.dat").write_text("1::2::3::978300760\nnot a rating line\n")
    at = run()
    at.text_input(key=app_state.DATA_DIR).set_value(str(tmp_path))
    for page in ("app_pages/recommend.py", "app_pages/data.py"):  # the Evaluation page reads results files only
        at.switch_page(page)
        at = run(at)
        assert f"{tmp_path / 'ratings.dat'}, line 2: expected" in texts(at.error), page


def test_a_data_folder_that_is_a_file_is_a_message(app_env):
    at = run()
    at.text_input(key=app_state.DATA_DIR).set_value(str(app_env.data_dir / "ratings.dat"))
    at = run(at)
    assert f"not found in {app_env.data_dir / 'ratings.dat'}" in texts(at.error)


def test_a_corrupt_lstm_file_is_a_note_with_the_training_offer(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DUALREC_HOME", str(tmp_path))
    (tmp_path / "models" / "lstm").mkdir(parents=True)
    for name in os.listdir(app_env.home / "models" / "lstm"):
        (tmp_path / "models" / "lstm" / name).write_bytes(b"not a model")
    at = loaded()
    assert "could not be loaded" in texts(at.warning) and "Train it again" in texts(at.warning)
    assert any(b.label.startswith("Train the quick LSTM now") for b in at.button)
    assert "has no recommendation" in at.code[0].value


def test_without_an_lstm_the_page_says_so_offers_training_and_still_prompts(empty_home):
    at = run()
    assert "No trained LSTM" in texts(at.warning) and "dualrec train lstm" in texts(at.warning)
    assert any(b.label.startswith("Train the quick LSTM now") for b in at.button)
    assert "has no recommendation" in at.code[0].value


def test_a_missing_data_folder_is_explained_with_a_download_offer(app_env):
    at = run()
    at.text_input(key=app_state.DATA_DIR).set_value("/no/such/folder")
    at = run(at)
    assert "not found in /no/such/folder" in texts(at.error)
    assert any(b.label.startswith("Download MovieLens 1M") for b in at.button)
    at.switch_page("app_pages/data.py")
    at = run(at)
    assert "not found in /no/such/folder" in texts(at.error)


def test_models_that_cannot_load_say_why_in_their_column(app_env):
    at = run()
    at.selectbox(key=app_state.MODEL_A).set_value("deepseek-v3")
    at.selectbox(key=app_state.MODEL_B).set_value("custom")
    at = generate(at)
    errors = texts(at.error)
    assert "deepseek-v3 could not be loaded" in errors and "DEEPSEEK_API_KEY" in errors
    assert "custom could not be loaded" in errors and "DUALREC_LLM_MODEL" in errors


def test_matched_movies_carry_their_marks_and_an_answer_without_titles_is_explained(app_env, monkeypatch):
    answers = {0: "I would rather not say anything useful here.", 1: "1. The Matrix (1999)\n2. Galaxy Llamas Forever (2003)"}
    monkeypatch.setattr(app_state, "shared_model", lambda spec, replica: SharedModel(ScriptedBackend(answers[replica])))
    at = run()
    at.toggle(key="reveal").set_value(True)
    at = generate(at)
    assert "No recognisable movie title in this answer" in texts(at.warning)
    matched = at.dataframe[1].value
    assert matched["marks"].tolist()[1] == "not in MovieLens" and matched["movie"].tolist()[0] == "The Matrix (1999)"
    assert "in the 1,000-movie catalogue" in matched["marks"].tolist()[0]
    assert "the real next movie" in texts(at.info) + texts(at.success)


def test_recordings_export_and_import_in_the_sidebar(empty_home, tmp_path_factory):
    source = RecordingStore(tmp_path_factory.mktemp("elsewhere"))
    for model in ("smollm2-135m", "deepseek-v3"):
        source.add(Recording(model, "a prompt", {"seed": 0}, [(0.1, "Toy Story (1995)")]))
    exported = tmp_path_factory.mktemp("export") / "recordings.jsonl"
    source.export(exported)
    at = run()
    assert "0 recorded answers" in texts(at.sidebar.caption)
    assert at.sidebar.download_button[0].label == "Export recordings"
    at.sidebar.file_uploader[0].set_value(("recordings.jsonl", exported.read_bytes(), "application/jsonl"))
    at = run(at)
    assert "Imported 2 recordings." in texts(at.success) and "2 recorded answers" in texts(at.sidebar.caption)
    at = run(at)  # the same upload is not imported twice
    assert len(RecordingStore().all()) == 2
    at.sidebar.file_uploader[0].set_value(("bad.jsonl", b"{not json\n", "application/jsonl"))
    at = run(at)
    assert "is not a DUALRec recording" in texts(at.error)


# ---- the other pages -----------------------------------------------------------------------------------------------


def test_evaluation_without_results_shows_the_commands(empty_home):
    at = run()
    at.switch_page("app_pages/evaluation.py")
    at = run(at)
    assert "No results yet" in texts(at.info) and "dualrec evaluate" in at.code[0].value
    assert len(at.dataframe) == 1 and at.dataframe[0].value["system"].iloc[0] == "MostPop"  # the poster's table
    assert charts(at) == 4  # the poster's HR@1, HR@5, NDCG@1, NDCG@5


def test_evaluation_shows_our_results_beside_the_posters(app_env, empty_home):
    import numpy as np

    entry = result_entry(
        "lstm", "full", np.array([1.0, 4.0, np.inf]), extra={"candidates": "catalogue minus watched"}, samples=20
    )
    write_results(results_document([entry], app_env.dataset, "test", 20, 0, 1.0), empty_home / "results" / "run.json")
    (empty_home / "results" / "other.json").write_text(json.dumps({"format": 99}))
    at = run()
    at.switch_page("app_pages/evaluation.py")
    at = run(at)
    ours = at.dataframe[0].value
    assert ours["system"].tolist() == ["lstm"] and ours["protocol"].tolist() == ["full"] and "[" in ours["HR@5"].iloc[0]
    assert "other.json is not a DUALRec results file" in texts(at.warning)
    assert charts(at) == 6
    captions = texts(at.caption)
    runnable = "MostPop, SLIM, FPMC, NARM, STAMP, GCE-GNN, MCPRN, HIDE, Atten-Mixer, UniSRec, NIR"
    command = "dualrec evaluate --systems mostpop,slim,fpmc,narm,stamp,gcegnn,mcprn,hide,attenmixer,unisrec,nir"
    assert f"No results file yet for {runnable}: `{command}`." in captions
    assert not any(caption.startswith("Not yet implemented") for caption in captions)  # every poster baseline is here


def test_data_page_shows_the_datasets_figures(app_env):
    at = run()
    at.switch_page("app_pages/data.py")
    at = run(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users"] == "300" and metrics["Catalogue"] == "1,000"
    assert charts(at) == 3


def test_a_page_opened_on_its_own_still_gets_the_sidebar(app_env, monkeypatch):
    monkeypatch.undo()  # AppTest's own navigation: the Data page file runs without app.py (a fresh server's deep link)
    at = run()
    at.switch_page("app_pages/data.py")
    at = run(at)
    assert [t.value for t in at.title] == ["Data", "🎬 DUALRec"] and len(at.metric) == 6


def test_method_page_works_without_data(app_env):
    at = run()
    at.text_input(key=app_state.DATA_DIR).set_value("")
    at.switch_page("app_pages/method.py")
    at = run(at)
    assert len(at.image) == 1 and "Based on this, the system (LSTM) recommends: <LSTM top-1 title (year)>." in at.code[0].value
    assert "sampled-20" in texts(at.markdown)


@pytest.mark.slow
def test_the_quick_lstm_trains_from_the_page_with_visible_progress(empty_home):
    at = run()
    next(b for b in at.button if b.label.startswith("Train the quick LSTM now")).click()
    at = run(at)
    seen_progress = bool(at.get("progress"))
    deadline = time.monotonic() + 1200
    while "LSTM top-1" not in texts(at.success) and time.monotonic() < deadline:
        time.sleep(5)
        at = run(at)
        seen_progress |= bool(at.get("progress"))
    assert seen_progress and "LSTM top-1" in texts(at.success)
    assert (empty_home / "models" / "lstm" / "model.keras").is_file()
