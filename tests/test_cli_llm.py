"""`dualrec prompt`, `dualrec match` and `dualrec generate` on the generated fixture (generate: the real embedded model)."""

import io
import json

import pytest

import tests.llm_fixtures  # noqa: F401  (offline hub)
from dualrec.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prompt_for_a_user_says_there_is_no_lstm(capsys, ml_dir, dataset):
    user = int(dataset.split_users["train"][0])
    code, out, err = run(capsys, "prompt", "--user", str(user), "--data-dir", str(ml_dir))
    lines = out.splitlines()
    assert code == 0 and lines[0] == "Below is a user's movie watching history:" and len(lines) == 8
    assert lines[6] == "The system (LSTM) has no recommendation for this user."
    assert "No trained LSTM" in err and "dualrec train lstm" in err


def test_a_test_users_target_is_never_in_the_prompt(capsys, ml_dir, dataset):
    cases = dataset.cases["test"]
    for user, target in list(zip(cases.users, cases.targets))[:10]:
        code, out, _ = run(
            capsys, "prompt", "--user", str(user), "--template", "full-history", "--no-lstm", "--data-dir", str(ml_dir)
        )
        assert code == 0 and f"- {dataset.movies.loc[dataset.catalogue[target], 'raw_title']} (" not in out


def test_prompt_for_a_typed_history(capsys, ml_dir):
    code, out, _ = run(
        capsys,
        "prompt",
        "--history",
        "Toy Story; the matrix; Alien 3",
        "--template",
        "list-k",
        "--k",
        "4",
        "--no-lstm",
        "--data-dir",
        str(ml_dir),
    )
    assert code == 0
    assert out.splitlines()[1:4] == [
        "- Toy Story (1995) (Animation, Children's, Comedy)",
        "- Matrix, The (1999) (Action, Sci-Fi, Thriller)",
        "- Alien³ (1992) (Action, Horror, Sci-Fi, Thriller)",
    ]
    assert "recommend 4 more movies" in out


def test_an_unknown_title_is_one_clear_line(capsys, ml_dir):
    code, out, err = run(capsys, "prompt", "--history", "Toy Story; Shrek (2001)", "--no-lstm", "--data-dir", str(ml_dir))
    assert code == 2 and out == ""
    assert err.startswith("dualrec: error: No MovieLens movie matches 'Shrek (2001)'.") and err.count("\n") == 1


def test_match_reads_stdin_and_prints_json_in_order(capsys, monkeypatch, ml_dir):
    answer = "Here you go:\n1. **The Matrix** (1999) - Action\n2. Lilo & Stitch (2002)\n3. Toy Story 2\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    code, out, _ = run(capsys, "match", "--data-dir", str(ml_dir))
    titles = json.loads(out)["titles"]
    assert code == 0
    assert [(t["title"], t["year"], t["movie_id"]) for t in titles] == [
        ("The Matrix", 1999, 7),
        ("Lilo & Stitch", 2002, None),
        ("Toy Story 2", None, 9),
    ]
    assert titles[0] == {
        "text": "The Matrix (1999) - Action",
        "title": "The Matrix",
        "year": 1999,
        "movie_id": 7,
        "score": 100.0,
        "movie": "Matrix, The (1999)",
    }
    assert titles[1]["score"] is None


def test_match_ignores_lines_that_echo_the_prompt(capsys, monkeypatch, ml_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Below is a user's movie watching history:\n- Toy Story (1995) (Animation, Children's, Comedy)\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("- Toy Story (1995) (Animation, Children's, Comedy)\n- Toy Story 2 (1999)\n"))
    _, out, _ = run(capsys, "match", "--data-dir", str(ml_dir), "--prompt-file", str(prompt))
    assert [t["movie_id"] for t in json.loads(out)["titles"]] == [9]


@pytest.mark.llm
def test_generate_streams_the_embedded_models_answer_and_the_matches(capsys, ml_dir):
    code, out, err = run(
        capsys,
        "generate",
        "--history",
        "Toy Story; The Matrix",
        "--model",
        "smollm2-135m",
        "--max-new-tokens",
        "24",
        "--greedy",
        "--stream",
        "--data-dir",
        str(ml_dir),
    )
    assert code == 0 and "No trained LSTM" in err
    prompt, rest = out.split("\n\n--- smollm2-135m ---\n")
    assert prompt.startswith("Below is a user's movie watching history:")
    answer, recommendations = rest.split("\n--- recommendations ---\n")
    assert answer.strip()
    assert all(" -> " in line for line in recommendations.splitlines() if line[:4].strip().rstrip(".").isdigit())


@pytest.mark.llm
def test_generate_json_has_prompt_answer_and_titles(capsys, ml_dir, dataset):
    user = int(dataset.split_users["test"][0])
    code, out, _ = run(
        capsys,
        "generate",
        "--user",
        str(user),
        "--model",
        "smollm2-135m",
        "--template",
        "list-k",
        "--max-new-tokens",
        "24",
        "--seed",
        "3",
        "--json",
        "--data-dir",
        str(ml_dir),
    )
    result = json.loads(out)
    assert code == 0 and result["model"] == "smollm2-135m" and result["lstm_pick"] is None
    assert result["prompt"].startswith("Below is a user's movie watching history:") and result["answer"].strip()
    assert set(result) >= {"history", "note", "reasoning", "titles", "recommended", "seconds"}


def test_generate_with_an_unknown_model_is_one_clear_line(capsys, ml_dir):
    code, _, err = run(
        capsys, "generate", "--history", "Toy Story", "--model", "no-such-model", "--no-lstm", "--data-dir", str(ml_dir)
    )
    assert code == 2 and "unknown model preset 'no-such-model'" in err and "Traceback" not in err
