"""The Stage 2 prompt templates and the answer format."""

import pytest

from dualrec.data.movielens import read_movies
from dualrec.errors import DualrecError
from dualrec.grounding.matching import TitleIndex
from dualrec.grounding.parsing import parse_answer
from dualrec.grounding.prompts import FULL_HISTORY_LIMIT, build_prompt, format_answer

# The poster's example (titles and genres of movies.dat; no ratings).
POSTER_MOVIES = [
    (2355, "Bug's Life, A (1998)", "Animation|Children's|Comedy"),
    (2294, "Antz (1998)", "Animation|Children's"),
    (1566, "Hercules (1997)", "Adventure|Animation|Children's|Comedy|Musical"),
    (1907, "Mulan (1998)", "Animation|Children's"),
    (48, "Pocahontas (1995)", "Animation|Children's|Musical|Romance"),
    (3354, "Mission to Mars (2000)", "Sci-Fi"),
]
POSTER_PROMPT = """Below is a user's movie watching history:
- Bug's Life, A (1998) (Animation, Children's, Comedy)
- Antz (1998) (Animation, Children's)
- Hercules (1997) (Adventure, Animation, Children's, Comedy, Musical)
- Mulan (1998) (Animation, Children's)
- Pocahontas (1995) (Animation, Children's, Musical, Romance)
Based on this, the system (LSTM) recommends: Mission to Mars (2000).
Now, as a helpful assistant, recommend 3 more full movie titles with release years and genres that this user would likely enjoy next."""  # noqa: E501


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    path = tmp_path_factory.mktemp("poster") / "movies.dat"
    path.write_bytes("".join(f"{i}::{t}::{g}\n" for i, t, g in POSTER_MOVIES).encode("latin-1"))
    return read_movies(path)


HISTORY = [2355, 2294, 1566, 1907, 48]


def test_the_default_prompt_is_the_posters_word_for_word(movies):
    assert build_prompt(movies, HISTORY, lstm_pick=3354) == POSTER_PROMPT


def test_the_poster_template_shows_the_last_five_movies_oldest_first(movies):
    prompt = build_prompt(movies, [3354] + HISTORY, lstm_pick=None)
    assert prompt.splitlines()[1:6] == POSTER_PROMPT.splitlines()[1:6]
    assert "Mission to Mars" not in prompt


def test_without_an_lstm_pick_the_prompt_says_so(movies):
    lines = build_prompt(movies, HISTORY, lstm_pick=None).splitlines()
    assert lines[6] == "The system (LSTM) has no recommendation for this user."
    assert not any("recommends:" in line for line in lines)


def test_list_k_asks_for_k_lines_in_the_answer_format(movies):
    prompt = build_prompt(movies, HISTORY, 3354, template="list-k", k=5)
    assert "recommend 5 more movies" in prompt and "exactly 5 lines" in prompt
    assert prompt.endswith("1. Title (Year) Genres: Genre, Genre")


def test_full_history_shows_every_movie_up_to_the_limit(movies):
    prompt = build_prompt(movies, [3354] + HISTORY, None, template="full-history")
    assert prompt.count("\n- ") == 6
    long_history = [m for m, _, _ in POSTER_MOVIES] * 20
    assert build_prompt(movies, long_history, None, template="full-history").count("\n- ") == FULL_HISTORY_LIMIT


def test_bad_requests_are_clear_errors(movies):
    with pytest.raises(DualrecError, match="Unknown prompt template 'fancy'"):
        build_prompt(movies, HISTORY, None, template="fancy")
    with pytest.raises(DualrecError, match="history is empty"):
        build_prompt(movies, [], None)
    with pytest.raises(DualrecError, match="k must be at least 1"):
        build_prompt(movies, HISTORY, None, k=0)


def test_the_answer_format_is_read_back_and_matched_exactly(movies):
    answer = format_answer(movies, [2355, 3354, 48])
    assert answer.splitlines()[0] == "1. A Bug's Life (1998) Genres: Animation, Children's, Comedy"
    index = TitleIndex(movies)
    matches = [index.match(p.title, p.year) for p in parse_answer(answer)]
    assert [m.movie_id for m in matches] == [2355, 3354, 48]
    assert all(m.score == 100.0 for m in matches)


def test_the_answer_format_round_trips_on_every_fixture_movie(ml_dir):
    movies = read_movies(ml_dir / "movies.dat")
    index = TitleIndex(movies)
    ids = movies.index.tolist()
    for start in range(0, len(ids), 50):
        chunk = ids[start : start + 50]
        assert [index.match(p.title, p.year).movie_id for p in parse_answer(format_answer(movies, chunk))] == chunk
