"""The `dualrec data` commands, run as a user runs them (a real subprocess for the entry point)."""

import json
import shutil
import subprocess
import sys

from dualrec.cli import main


def test_stats_json_has_the_documented_keys(ml_dir, capsys):
    assert main(["data", "stats", "--data-dir", str(ml_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    keys = {
        "ratings",
        "users",
        "movies",
        "catalogue_size",
        "catalogue_ratings",
        "eligible_users",
        "split_users",
        "windows",
        "test_cases",
    }
    assert keys <= set(stats)
    assert stats["users"] == 300 and stats["movies"] == 1100 and stats["catalogue_size"] == 1000
    assert sum(stats["split_users"].values()) == stats["eligible_users"]
    assert stats["test_cases"] == stats["split_users"]["test"]


def test_show_prints_profile_and_history(ml_dir, capsys):
    assert main(["data", "show", "--user", "1", "--data-dir", str(ml_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("user_id: 1, gender: ")
    assert "ratings," in out and "(" in out


def test_unknown_user_is_one_clear_line(ml_dir, capsys):
    assert main(["data", "show", "--user", "4242", "--data-dir", str(ml_dir)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "dualrec: error: User 4242 is not in users.dat (valid ids run from 1 to 300)."


def test_missing_data_dir_is_one_clear_line(tmp_path, capsys):
    assert main(["data", "stats", "--data-dir", str(tmp_path)]) == 2
    assert "not found in" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command(ml_dir):
    done = subprocess.run(
        [sys.executable, "-m", "dualrec", "data", "stats", "--json", "--data-dir", str(ml_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["users"] == 300


def test_a_corrupt_ratings_file_is_one_line_on_stderr(ml_dir, tmp_path):
    """As a user runs it: the project's message alone, no pandas warning before it (a bad line deep in a large file)."""
    folder = tmp_path / "ml"
    shutil.copytree(ml_dir, folder)
    ratings = folder / "ratings.dat"
    first = ratings.read_text().splitlines()[0]
    ratings.write_text(f"{first}\n" * 150_000 + "1::x::3::4\n")  # long enough that pandas reads chunks of mixed types
    done = subprocess.run(
        [sys.executable, "-m", "dualrec", "data", "stats", "--no-cache", "--data-dir", str(folder)],
        capture_output=True,
        text=True,
    )
    message = f"{ratings}, line 150001: expected UserID::MovieID::Rating::Timestamp in whole numbers, found '1::x::3::4'"
    assert done.returncode == 2 and done.stderr.splitlines() == [f"dualrec: error: {message}"]
