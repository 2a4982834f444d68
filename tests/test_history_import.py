"""Importing a history from a person's own files (dualrec.grounding.history_import): Letterboxd and IMDb exports and
plain lists written here, matched with the real matcher on the generated MovieLens folder; bad files are one message."""

from __future__ import annotations

import pytest

from dualrec.cli import main
from dualrec.data.dataset import load_dataset
from dualrec.errors import DualrecError
from dualrec.grounding.history_import import MAX_BYTES, MAX_ROWS, import_history, read_history_file
from tests.conftest import NAMESAKES

# Movie ids of the fixture's special titles (tests/movielens_fixture.py).
BUGS_LIFE, EMPEROR, MISERABLES, ALIEN3, MATRIX, TOY_STORY, TOY_STORY_2, EMPIRE = 1, 2, 3, 6, 7, 8, 9, 10
HAMLETS = NAMESAKES  # the `namesakes_dir` fixture adds these


@pytest.fixture(scope="module")
def namesakes(namesakes_dir):
    return load_dataset(namesakes_dir)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def lines(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def test_a_letterboxd_diary_is_read_in_watched_date_order_and_a_rewatch_counts_once(dataset, tmp_path):
    diary = lines(
        "Date,Name,Year,Letterboxd URI,Rating,Rewatch,Tags,Watched Date",
        "2024-03-02,The Matrix,1999,https://boxd.it/a,4.5,,,2024-03-01",
        '2024-01-10,"A Bug\'s Life",1998,https://boxd.it/b,3,,,2024-01-09',
        "2024-02-01,Parasite,2019,https://boxd.it/c,5,,,2024-01-31",
        "2024-05-01,The Matrix,1999,https://boxd.it/d,5,Yes,,2024-04-30",
        "2024-02-15,The Empire Strikes Back,1980,https://boxd.it/e,4,,,2024-02-14",
    )
    imported = read_history_file(write(tmp_path, "diary.csv", diary), dataset)
    assert imported.source == "Letterboxd diary"
    assert [row.line for row in imported.rows] == [3, 4, 6, 2, 5]  # by Watched Date
    assert [row.movie_id for row in imported.matched] == [BUGS_LIFE, EMPIRE, MATRIX, MATRIX]
    assert imported.movie_ids == [BUGS_LIFE, EMPIRE, MATRIX]
    assert [row.written for row in imported.missing] == ["Parasite (2019)"] and not imported.ambiguous
    assert imported.matched[0].rating == 3.0 and str(imported.matched[0].date) == "2024-01-09"
    assert imported.summary() == (
        "diary.csv (Letterboxd diary): 5 rows, 4 matched (3 movies: 1 seen again), 0 ambiguous, 1 not in MovieLens."
    )


def test_letterboxd_ratings_with_accents_quotes_and_a_byte_order_mark(dataset, tmp_path):
    ratings = lines(
        "Date,Name,Year,Letterboxd URI,Rating",
        "2023-06-01,Les Misérables,1995,https://boxd.it/a,4",
        '2023-06-03,"The Emperor and the Assassin",1999,https://boxd.it/b,3.5',
        "2023-06-02,Alien³,1992,https://boxd.it/c,2",
        "2023-06-04,Toy Story 2,1999,https://boxd.it/d,",
    )
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ratings.encode())
    imported = read_history_file(path, dataset)
    assert imported.source == "Letterboxd ratings"
    assert imported.movie_ids == [MISERABLES, ALIEN3, EMPEROR, TOY_STORY_2]
    assert imported.matched[-1].rating is None and not imported.missing


def test_an_imdb_export_newest_first_is_read_oldest_first_and_series_are_not_films(dataset, tmp_path):
    header = (
        "Const,Your Rating,Date Rated,Title,Original Title,URL,Title Type,IMDb Rating,Runtime (mins),Year,Genres,"
        "Num Votes,Release Date,Directors"
    )
    site = "https://www.imdb.com/title"
    imdb = "\r\n".join(
        [
            header,
            f'tt0120363,8,2022-11-05,Toy Story 2,Toy Story 2,{site}/tt0120363/,Movie,7.9,92,1999,"Animation, Comedy",1,,J',
            f"tt0903747,10,2022-11-05,Breaking Bad,Breaking Bad,{site}/tt0903747/,TV Series,9.5,49,2008,Drama,1,,",
            f'tt0133093,9,2022-10-01,"Matrix, The",The Matrix,{site}/tt0133093/,movie,8.7,136,1999,Action,1,1999-03-31,L',
            f"tt0114709,7,2022-09-30,Toy Story,Toy Story,{site}/tt0114709/,movie,8.3,81,1995,Animation,1,1995-11-22,J",
            f"tt9999999,5,2022-09-29,Galaxy Llamas Forever,Galaxy Llamas Forever,{site}/tt9999999/,movie,5.0,90,2003,,1,,",
        ]
    )
    imported = read_history_file(write(tmp_path, "ratings.csv", imdb), dataset)
    assert imported.source == "IMDb ratings"
    assert imported.movie_ids == [TOY_STORY, MATRIX, TOY_STORY_2]
    assert imported.matched[0].rating == 7.0
    missing = {row.written: row.note for row in imported.missing}
    assert missing == {"Galaxy Llamas Forever (2003)": None, "Breaking Bad (2008)": "an IMDb TV Series, not a film"}
    assert [row.line for row in imported.rows] == [6, 5, 4, 3, 2]  # a newest-first file read backwards


def test_a_plain_list_with_markers_years_comments_and_a_made_up_title(dataset, tmp_path):
    text = lines(
        "# my favourites",
        "1. Toy Story",
        "",
        "- the matrix (1999)",
        "Toy Story 2, 1999",
        "Alien 3",
        "Galaxy Llamas Forever (2003)",
        "The Emperor and the Asassin",  # a typo the matcher accepts
    )
    imported = read_history_file(write(tmp_path, "films.txt", text), dataset)
    assert imported.source == "list of titles"
    assert [(row.line, row.title, row.year) for row in imported.rows][:3] == [
        (2, "Toy Story", None),
        (4, "the matrix", 1999),
        (5, "Toy Story 2", 1999),
    ]
    assert imported.movie_ids == [TOY_STORY, MATRIX, TOY_STORY_2, ALIEN3, EMPEROR]
    assert [row.written for row in imported.missing] == ["Galaxy Llamas Forever (2003)"]


def test_a_title_that_names_several_movies_is_ambiguous_until_chosen(namesakes):
    imported = import_history("list.txt", lines("Hamlet", "Hamlet (1996)", "Toy Story").encode(), namesakes)
    (ambiguous,) = imported.ambiguous
    assert ambiguous.line == 1 and set(ambiguous.choices) == set(HAMLETS.values()) and ambiguous.movie_id is None
    assert imported.movie_ids == [HAMLETS["Hamlet (1996)"], TOY_STORY] and not imported.missing
    chosen = imported.choose(1, HAMLETS["Hamlet (1990)"])
    assert chosen.movie_ids == [HAMLETS["Hamlet (1990)"], HAMLETS["Hamlet (1996)"], TOY_STORY] and not chosen.ambiguous
    with pytest.raises(DualrecError, match="Movie 8 is not one of the choices for 'Hamlet' \\(line 1\\)"):
        imported.choose(1, TOY_STORY)
    with pytest.raises(DualrecError, match="list.txt has no row at line 9"):
        imported.choose(9, TOY_STORY)


BAD_FILES = [
    ("empty.csv", b"", "Cannot import empty.csv: the file is empty."),
    ("blank.txt", b"  \n\n \n", "Cannot import blank.txt: the file is empty."),
    ("other.csv", b"user,movie,stars\n1,2,3\n", "Cannot import other.csv: its columns (user, movie, stars) are not those of"),
    ("header.csv", b"Date,Name,Year,Letterboxd URI,Rating\n", "Cannot import header.csv: it has a header but no rows."),
    (
        "poster.png",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "Cannot import poster.png: it is not a text file.",
    ),
    ("big.txt", b"Toy Story\n" * (MAX_BYTES // 10 + 1), "Cannot import big.txt: 5.0 MB is more than a history file holds"),
    ("long.txt", b"Toy Story\n" * (MAX_ROWS + 1), "Cannot import long.txt: 10,001 rows are more than a history holds"),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD_FILES, ids=[name for name, _, _ in BAD_FILES])
def test_a_bad_file_is_one_message_naming_it(dataset, tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DualrecError) as raised:
        read_history_file(path, dataset)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(DualrecError, match=message.split(":")[0]):
        import_history(name, data, dataset)


def test_a_missing_file_or_a_folder_is_one_message(dataset, tmp_path):
    with pytest.raises(DualrecError, match=f"Cannot read the history file {tmp_path}/nope.csv: No such file"):
        read_history_file(tmp_path / "nope.csv", dataset)
    with pytest.raises(DualrecError, match="Is a directory"):
        read_history_file(tmp_path, dataset)


# ---- the command line ----------------------------------------------------------------------------------------------


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prompt_from_a_letterboxd_file_says_what_was_skipped(capsys, ml_dir, tmp_path):
    path = write(
        tmp_path,
        "ratings.csv",
        lines(
            "Date,Name,Year,Letterboxd URI,Rating",
            "2023-01-02,The Matrix,1999,u,4",
            "2023-01-01,Toy Story,1995,u,4",
            "2023-01-03,Parasite,2019,u,5",
        ),
    )
    code, out, err = run(capsys, "prompt", "--history-file", path, "--template", "list-k", "--no-lstm", "--data-dir", ml_dir)
    assert code == 0
    assert out.splitlines()[1:3] == [
        "- Toy Story (1995) (Animation, Children's, Comedy)",
        "- Matrix, The (1999) (Action, Sci-Fi, Thriller)",
    ]
    assert "ratings.csv (Letterboxd ratings): 3 rows, 2 matched, 0 ambiguous, 1 not in MovieLens." in err
    assert "Not in MovieLens: Parasite (2019) (line 4)" in err


def test_recommend_from_a_list_with_an_ambiguous_title(capsys, namesakes_dir, tiny_lstm_dir, tmp_path):
    path = write(tmp_path, "films.txt", lines("Toy Story", "Hamlet", "The Matrix"))
    code, out, err = run(capsys, "recommend", "--history-file", path, "--model", tiny_lstm_dir, "--data-dir", namesakes_dir)
    assert code == 0 and "LSTM top 10 after 2 movies (last: The Matrix)" in out
    assert "Ambiguous, left out (add the year to choose): Hamlet (line 2): Hamlet (1990), Hamlet (1996)" in err


def test_a_file_with_no_movielens_movie_is_one_message(capsys, ml_dir, tmp_path):
    path = write(tmp_path, "films.txt", lines("Galaxy Llamas Forever", "Parasite (2019)"))
    code, _, err = run(capsys, "prompt", "--history-file", path, "--no-lstm", "--data-dir", ml_dir)
    assert code == 2 and "dualrec: error: No row of films.txt names a MovieLens movie" in err
    assert "Traceback" not in err
