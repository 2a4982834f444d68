"""`dualrec train lstm`, `dualrec recommend` and `dualrec evaluate` as a user runs them, happy and error paths."""

from __future__ import annotations

import json

import pytest

from dualrec.cli import main
from dualrec.commands import train
from dualrec.data.dataset import load_dataset
from dualrec.evaluation.results import read_results
from tests.test_sequential import TINY

# Fewer windows per user keep training fast; every command below reads the data the same way.
DATA = ["--windows-per-user", "2"]


@pytest.fixture(scope="module")
def model_dir(ml_dir, tmp_path_factory):
    """A tiny LSTM trained through the CLI (its quick profile swapped for the tiny test configuration)."""
    folder = tmp_path_factory.mktemp("cli") / "lstm"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(train.LSTM_PROFILES, "quick", TINY)
        assert (
            main(["train", "lstm", "--data-dir", str(ml_dir), *DATA, "--profile", "quick", "--epochs", "2", "--out", str(folder)])
            == 0
        )
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_saves_a_loadable_model_with_its_metadata(model_dir):
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert (model_dir / "model.keras").is_file() and meta["epochs_run"] <= 2 and meta["lstm"]["item_dim"] == TINY.item_dim


def test_training_prints_the_epoch_lines_the_app_follows(ml_dir, tmp_path, capsys):
    """The app's training job reads `Epoch N/M` from the command's output (dualrec.app.state._EPOCH)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(train.LSTM_PROFILES, "quick", TINY)
        code, out, _ = run(
            capsys, "train", "lstm", "--data-dir", str(ml_dir), *DATA, "--profile", "quick", "--out", str(tmp_path / "m")
        )
    assert code == 0 and [line for line in out.splitlines() if line.startswith("Epoch ")][:3] == [
        "Epoch 1/3",
        "Epoch 2/3",
        "Epoch 3/3",
    ]
    assert "Saved to" in out and json.loads((tmp_path / "m" / "metadata.json").read_text())["lstm"]["engine"] == "torch"


def test_recommend_for_a_user_as_json(ml_dir, model_dir, capsys):
    code, out, _ = run(
        capsys, "recommend", "--user", "1", "--k", "5", "--json", "--model", str(model_dir), "--data-dir", str(ml_dir), *DATA
    )
    assert code == 0
    result = json.loads(out)
    assert [r["rank"] for r in result["recommendations"]] == [1, 2, 3, 4, 5]
    assert not {r["movie_id"] for r in result["recommendations"]} & set(result["history"])


def test_recommend_never_reads_a_test_users_held_out_movie(ml_dir, model_dir, capsys):
    dataset = load_dataset(ml_dir)
    user, target = int(dataset.cases["test"].users[0]), int(dataset.catalogue[dataset.cases["test"].targets[0]])
    code, out, _ = run(
        capsys, "recommend", "--user", str(user), "--json", "--model", str(model_dir), "--data-dir", str(ml_dir), *DATA
    )
    history = json.loads(out)["history"]
    assert code == 0 and history[-1] != target and len(history) == 30
    assert history == dataset.catalogue[dataset.cases["test"].histories[0]].tolist()


def test_recommend_for_typed_titles(ml_dir, model_dir, capsys):
    code, out, _ = run(
        capsys,
        "recommend",
        "--history",
        "Toy Story; The Matrix (1999)",
        "--k",
        "3",
        "--model",
        str(model_dir),
        "--data-dir",
        str(ml_dir),
        *DATA,
    )
    assert code == 0 and out.startswith("LSTM top 3 after 2 movies (last: The Matrix)")
    assert len(out.strip().splitlines()) == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--user", "4242"], "User 4242 is not in users.dat"),
        (["--history", "A Movie That Never Was (2042)"], "No MovieLens movie matches"),
        (["--history", " ; "], "No titles given"),
        (["--user", "1", "--k", "0"], "--k must be at least 1"),
    ],
)
def test_recommend_errors_are_one_clear_line(ml_dir, model_dir, capsys, argv, message):
    code, _, err = run(capsys, "recommend", *argv, "--model", str(model_dir), "--data-dir", str(ml_dir), *DATA)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_recommend_without_a_model_says_how_to_train(ml_dir, tmp_path, capsys):
    code, _, err = run(capsys, "recommend", "--user", "1", "--model", str(tmp_path / "none"), "--data-dir", str(ml_dir))
    assert code == 2 and "dualrec train lstm" in err


def test_evaluate_writes_results_and_prints_the_table(ml_dir, model_dir, tmp_path, capsys):
    out_file = tmp_path / "results" / "run.json"
    code, out, _ = run(
        capsys,
        "evaluate",
        "--systems",
        "lstm,mostpop",
        "--lstm-dir",
        str(model_dir),
        "--out",
        str(out_file),
        "--bootstrap",
        "50",
        "--data-dir",
        str(ml_dir),
        *DATA,
    )
    assert code == 0
    document = read_results(out_file)
    assert [(e["system"], e["protocol"]) for e in document["results"]] == [
        ("lstm", "full"),
        ("lstm", "sampled-20"),
        ("mostpop", "full"),
        ("mostpop", "sampled-20"),
    ]
    assert document["results"][0]["options"]["lstm"]["item_dim"] == TINY.item_dim
    assert out.startswith("| system | protocol |") and str(out_file) in out
    code, table, _ = run(capsys, "results", str(out_file), "--protocol", "full", "--no-intervals")
    rows = table.strip().splitlines()[2:]
    assert (
        code == 0 and [row.split(" | ")[:2] for row in rows] == [["| lstm", "full"], ["| mostpop", "full"]] and "[" not in table
    )


def test_results_without_files_says_how_to_make_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "results")
    assert code == 2 and "dualrec evaluate --out results/" in err


def test_evaluate_refuses_an_lstm_trained_on_another_split(ml_dir, model_dir, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "evaluate",
        "--systems",
        "lstm",
        "--lstm-dir",
        str(model_dir),
        "--split-seed",
        "7",
        "--out",
        str(tmp_path / "r.json"),
        "--data-dir",
        str(ml_dir),
        *DATA,
    )
    assert code == 2 and "retrain" in err


@pytest.mark.parametrize(
    ("argv", "message"), [(["--systems", "nope"], "Unknown system nope"), (["--protocol", "bogus"], "Unknown protocol bogus")]
)
def test_evaluate_rejects_unknown_names(ml_dir, capsys, argv, message):
    code, _, err = run(capsys, "evaluate", *argv, "--data-dir", str(ml_dir))
    assert code == 2 and message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--baseline-minutes", "-5"], "above 0 minutes, not -5"),
        (["evaluate", "--baseline-minutes", "0"], "above 0 minutes, not 0"),
        (["train", "lstm", "--max-minutes", "ten"], "'ten' is not a number of minutes"),
    ],
)
def test_time_budgets_must_be_positive_numbers(capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err
