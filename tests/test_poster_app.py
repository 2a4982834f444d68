"""The Evaluation page's poster parts: the poster's baseline figures beside ours under the poster protocol, marked
where the poster's figure lies outside our interval, and the notes on its MostPop and SLIM rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dualrec.app.tables import poster_protocol_frame
from dualrec.config import POSTER_COMMAND, PosterConfig
from dualrec.data.poster import load_poster
from dualrec.evaluation.poster import evaluate_poster
from dualrec.evaluation.results import write_results

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def poster_rows(ml_dir):
    """sknn and mostpop on 150 training sessions, and mostpop on 50 (not the poster's setting: not compared)."""
    poster = load_poster(ml_dir)
    document = evaluate_poster(["sknn", "mostpop"], poster, PosterConfig(candidate_seeds=(0, 10)), samples=50)
    fifty = evaluate_poster(["mostpop"], poster, PosterConfig(train_sample="50", candidate_seeds=(0,)), samples=50)
    return document, fifty


def page(home, monkeypatch, data_dir) -> AppTest:
    monkeypatch.setenv("DUALREC_HOME", str(home))
    monkeypatch.setenv("DUALREC_DATA_DIR", str(data_dir))
    monkeypatch.chdir(home)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/evaluation.py")
    at = at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_frame_puts_each_poster_figure_beside_ours(poster_rows):
    document, fifty = poster_rows
    frame = poster_protocol_frame(document["results"] + fifty["results"])
    slim = frame.set_index("poster's row").loc["SLIM"]
    sknn = document["results"][0]["metrics"]["HR@5"]
    assert slim["ours"] == "sknn (150 training sessions, the poster's setting; candidate seeds 0, 10)"
    assert slim["HR@5 ours"] == f"{sknn['value']:.4f} [{sknn['low']:.3f}, {sknn['high']:.3f}]"
    outside = not sknn["low"] <= 0.36 <= sknn["high"]
    assert slim["HR@5 poster"] == ("⚠ " if outside else "") + "0.3600"
    mostpop = frame.set_index("poster's row").loc["MostPop"]
    assert mostpop["HR@1 poster"].endswith("0.0004") and "PO4ISR's way" in mostpop["HR@1 ours"]
    assert mostpop["ours"].startswith("mostpop (150")  # the 50-session row is not the poster's setting
    assert frame.set_index("poster's row").loc["NARM", "ours"] == ""  # no row of ours yet


def test_the_page_shows_the_comparison_and_its_notes(poster_rows, ml_dir, tmp_path, monkeypatch):
    write_results(poster_rows[0], tmp_path / "results" / "poster-protocol-150.json")
    at = page(tmp_path, monkeypatch, ml_dir)
    assert "The poster's table, measured its way" in [header.value for header in at.subheader]
    frames = [frame.value for frame in at.dataframe if "poster's row" in frame.value.columns]
    assert len(frames) == 1 and frames[0]["poster's row"].tolist()[:2] == ["MostPop", "SLIM"]
    captions = "\n".join(caption.value for caption in at.caption)
    assert "probably lost a digit" in captions and "The poster's SLIM row is PO4ISR's SKNN" in captions


def test_without_poster_results_the_page_gives_the_command(ml_dir, tmp_path, monkeypatch):
    at = page(tmp_path, monkeypatch, ml_dir)
    assert "No poster-protocol results yet" in "\n".join(info.value for info in at.info)
    assert POSTER_COMMAND in [code.value for code in at.code]
