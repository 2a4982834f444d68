"""The app's tables and records (dualrec.app.tables, dualrec.app.imported), figures (dualrec.app.figures) and
background work (dualrec.app.streaming), without Streamlit."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from dualrec.app import adapter_training, figures
from dualrec.app import tables as app_data
from dualrec.app.imported import builder_history, matched_table, missing_table
from dualrec.app.streaming import BackgroundTask, LiveAnswer
from dualrec.data.genres import overlap_table
from dualrec.errors import DualrecError, UnknownUserError
from dualrec.evaluation.results import POSTER_RESULTS, result_entry, results_document, write_results
from dualrec.grounding.history_import import import_history
from dualrec.grounding.matching import Match
from dualrec.grounding.pipeline import Stage2Result, prepare_prompt


def result_for(dataset, history, titles):
    return Stage2Result(prepare_prompt(dataset, history, None), "answer", "", titles)


def test_a_test_users_history_stops_before_the_movie_they_watched_next(dataset):
    user = app_data.sample_test_users(dataset)[0]
    view = app_data.user_view(dataset, user)
    assert view.profile["split"] == "test" and view.profile["gender"] in ("female", "male")
    assert view.next_movie is not None and view.next_movie not in set(view.history["movie_id"])
    assert view.next_movie not in view.prompt_history
    assert len(view.history) + view.hidden == len(dataset.history(user))
    assert view.history["date"].is_monotonic_increasing


def test_a_training_user_shows_everything_and_has_nothing_to_reveal(dataset):
    user = int(dataset.split_users["train"][0])
    view = app_data.user_view(dataset, user)
    assert view.next_movie is None and view.hidden == 0 and len(view.history) == len(dataset.history(user))


def test_an_unknown_user_is_a_clear_error(dataset):
    with pytest.raises(UnknownUserError, match="not in users.dat"):
        app_data.user_view(dataset, 99_999)


def test_search_finds_catalogue_movies_despite_case_typos_and_articles(dataset):
    matrix = int(dataset.movies.index[dataset.movies["raw_title"] == "Matrix, The (1999)"][0])
    assert app_data.search_catalogue(dataset, "the matrix")[0] == matrix
    assert app_data.search_catalogue(dataset, "matirx")[0] == matrix
    assert app_data.search_catalogue(dataset, "  ") == []
    assert all(m in set(dataset.catalogue.tolist()) for m in app_data.search_catalogue(dataset, "star"))


def test_building_a_history_refuses_duplicates_and_a_31st_movie():
    history = app_data.add_movie([], 5)
    with pytest.raises(DualrecError, match="already"):
        app_data.add_movie(history, 5)
    full = list(range(app_data.MAX_HISTORY))
    with pytest.raises(DualrecError, match="at most 30"):
        app_data.add_movie(full, 999)
    assert app_data.move_movie([1, 2, 3], 2, -1) == [1, 3, 2]
    assert app_data.move_movie([1, 2, 3], 0, -1) == [1, 2, 3]
    assert app_data.move_movie([1, 2, 3], 0, 1) == [2, 1, 3]


def test_lstm_ranking_lists_movies_with_probabilities(dataset):
    lstm = SimpleNamespace(top_k=lambda items, k: SimpleNamespace(items=np.array([4, 9]), probabilities=np.array([0.3, 0.1])))
    table = app_data.lstm_ranking(dataset, lstm, dataset.catalogue[:3].tolist())
    assert table["rank"].tolist() == [1, 2] and table["movie_id"].tolist() == dataset.catalogue[[4, 9]].tolist()
    assert table["probability"].tolist() == [0.3, 0.1] and table["label"].str.contains(r"\(\d{4}\)").all()
    outside = sorted(set(dataset.movies.index) - set(dataset.catalogue.tolist()))[:2]
    assert app_data.lstm_ranking(dataset, lstm, outside) is None


def test_answer_rows_mark_hallucinations_catalogue_watched_and_the_real_next_movie(dataset):
    watched, next_movie = int(dataset.catalogue[0]), int(dataset.catalogue[1])
    outside = min(set(dataset.movies.index) - set(dataset.catalogue.tolist()))
    titles = [
        Match("a", "Made Up", 2001, None, None),
        Match("b", "Watched", None, watched, 100.0),
        Match("c", "Next", None, next_movie, 97.0),
        Match("d", "Outside", None, outside, 100.0),
    ]
    result = result_for(dataset, [watched], titles)
    rows = app_data.answer_rows(dataset, result, {watched}, next_movie)
    assert rows["marks"].tolist() == [
        "not in MovieLens",
        "in the 1,000-movie catalogue · already watched",
        "in the 1,000-movie catalogue · the real next movie",
        "outside the catalogue",
    ]
    assert rows["written"][0] == "Made Up (2001)" and rows["link"][0] is None and rows["link"][2].endswith(f"/{next_movie}")
    hit = app_data.hit_message(dataset, result, next_movie)
    assert hit.startswith("Hit") and "#1 of this answer" in hit
    assert app_data.hit_message(dataset, result, int(dataset.catalogue[5])).startswith("Miss")


def test_overlap_lists_and_the_genre_figure(dataset):
    history = dataset.catalogue[:5].tolist()
    result = result_for(dataset, history, [Match("x", "x", None, int(dataset.catalogue[7]), 100.0)])
    lists = app_data.overlap_lists(int(dataset.catalogue[6]), {"A · m": result, "B · m": None})
    assert list(lists) == ["LSTM pick", "A · m"]
    figure = figures.genre_overlap_figure(overlap_table(dataset.movies, history, lists))
    assert [trace.name.split(" (")[0] for trace in figure.data] == ["history", "LSTM pick", "A · m"]


def test_status_line_says_waiting_streaming_and_done():
    answer = LiveAnswer("A")
    assert "first token" in app_data.status_line(answer, queued=False)
    assert "another session" in app_data.status_line(answer, queued=True)
    answer.chunks, answer.first_chunk_s = ["a", "b", "c"], 0.5
    assert app_data.status_line(answer, False).startswith("generating… 3 tokens · first token 0.50 s")
    assert app_data.status_line(answer, False, stopped=True).startswith("stopping… 3 tokens")
    answer.finished_s = 2.5
    assert app_data.status_line(answer, False) == "done in 2.5 s · 3 tokens · first token 0.50 s · 1.0 tokens/s"
    assert app_data.status_line(answer, False, stopped=True).startswith("stopped in 2.5 s")
    assert app_data.status_line(LiveAnswer("B"), False, stopped=True) == "stopped before the first token"


def test_adapters_are_offered_beside_the_presets(tmp_path):
    assert app_data.default_models(app_data.model_choices(tmp_path)) == ("smollm2-135m", "smollm2-135m")
    hint = adapter_training.finetune_hint(tmp_path, "", None)
    assert hint.startswith(f"No LoRA adapter in {tmp_path} yet. Make one with `dualrec finetune --base smollm2-135m")
    adapter = tmp_path / "adapters" / "smollm2-lora"
    for folder in (adapter, adapter / "checkpoint-20"):
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})
        )
    other = tmp_path / "adapters" / "other"
    other.mkdir()
    (other / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/some/converted/folder"}))
    (other / "metadata.json").write_text(json.dumps({"base": {"preset": "qwen2.5-1.5b-instruct"}}))
    choices = app_data.model_choices(tmp_path)
    assert choices[-2:] == ["qwen2.5-1.5b-instruct+adapters/other", "smollm2-135m+adapters/smollm2-lora"] and "custom" in choices
    assert app_data.default_models(choices) == ("smollm2-135m", "smollm2-135m+adapters/smollm2-lora")
    assert (
        "with the LoRA adapter adapters/smollm2-lora (run by llama.cpp, the adapter converted to a GGUF LoRA)"
        in app_data.model_description(choices[-1])
    )


def test_dataset_figures(dataset):
    counts = app_data.ratings_per_user(dataset)
    assert counts.sum() == len(dataset.ratings)
    popularity = app_data.popularity(dataset)
    assert popularity["ratings"].is_monotonic_decreasing and popularity["in_catalogue"][: dataset.catalogue_size].all()
    genres = app_data.genre_counts(dataset)
    assert len(genres) == 18 and (genres["catalogue_movies"] <= genres["movies"]).all()
    assert figures.popularity_figure(popularity, dataset.catalogue_size).layout.shapes
    figures.ratings_per_user_figure(counts), figures.genres_figure(genres)


def test_results_files_become_our_table_and_metric_charts(dataset, tmp_path):
    ranks = np.array([1, 3, 12, np.inf, 2], dtype=float)
    entries = [
        result_entry("lstm", "full", ranks, extra={"candidates": "catalogue minus watched"}, samples=50),
        result_entry("lstm", "sampled-20", ranks, extra={"candidates": "target + 19 never-rated", "negative_seeds": [3]}),
    ]
    write_results(results_document(entries, dataset, "test", 50, 0, 1.0), tmp_path / "run.json")
    (tmp_path / "broken.json").write_text("{not json")
    results = app_data.load_results([tmp_path, tmp_path / "missing"])
    assert len(results.entries) == 2 and len(results.problems) == 1 and "broken.json" in results.problems[0]
    table = app_data.our_table(results.entries)
    assert table.loc[0, "system"] == "lstm" and table.loc[0, "HR@1"].startswith("0.2000 [")
    assert table.loc[0, "how"] == "full: catalogue minus watched; 5 test cases; 95% bootstrap CI over 50 resamples"
    assert table.loc[0, "file"] == "run.json"
    assert table.loc[1, "how"].startswith("sampled-20: target + 19 never-rated; negative seed 3; 5 test cases;")
    assert app_data.seeds_note({"candidate_seeds": [0, 10, 42]}) == "candidate seeds 0, 10, 42"
    frame = app_data.metric_frame(results.entries, "HR@5")
    assert frame.loc[0, "value"] == pytest.approx(0.6) and frame.loc[0, "low"] <= 0.6 <= frame.loc[0, "high"]
    figure = figures.metric_figure(frame, app_data.poster_table(), "HR@5")
    assert len(figure.data) == 3 and len(figure.data[-1].x) == len(POSTER_RESULTS)  # a bar per protocol, the poster's
    assert len(figures.metric_figure(frame, app_data.poster_table(), "HR@10").data) == 2
    # the same system from two files under one protocol: a place each, not one stacked bar
    write_results(results_document(entries[:1], dataset, "test", 50, 0, 1.0), tmp_path / "again.json")
    frame = app_data.metric_frame(app_data.load_results([tmp_path]).entries, "HR@5")
    full, sampled = figures.metric_figure(frame, app_data.poster_table(), "HR@5").data[:2]
    assert list(full.x) == ["lstm · again", "lstm · run"] and list(full.y) == [0.6, 0.6] and list(sampled.x) == ["lstm"]


def test_a_background_task_gives_its_value_or_raises_its_error():
    task = BackgroundTask(lambda: 42, "answer")
    assert task.result() == 42 and task.done and task.wait(0) and task.elapsed >= 0
    failed = BackgroundTask(lambda: 1 / 0, "broken")
    with pytest.raises(ZeroDivisionError):
        failed.result()
    assert failed.done


def test_an_import_gives_the_builder_its_last_catalogue_movies(dataset):
    catalogue = [int(m) for m in dataset.catalogue[:40]]
    outside = min(set(dataset.movies.index) - set(dataset.catalogue.tolist()))
    titles = [app_data.movie_label(dataset.movies, m) for m in [outside, *catalogue]] + ["Galaxy Llamas Forever"]
    imported = import_history("list.txt", "\n".join(titles).encode(), dataset)
    history, left_out = builder_history(dataset, imported)
    assert history == catalogue[-app_data.MAX_HISTORY :] and left_out == 1
    table = matched_table(dataset, imported, history)
    assert len(table) == 41 and not table["catalogue"][0] and table["in history"].sum() == app_data.MAX_HISTORY
    assert missing_table(imported).to_dict("records") == [
        {"line": 42, "written": "Galaxy Llamas Forever", "date": None, "rating": None, "note": "not in MovieLens"}
    ]
