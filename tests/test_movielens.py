import shutil
import warnings

import numpy as np
import pytest

from dualrec.config import GENRES
from dualrec.data.movielens import fingerprint_files, read_movielens
from dualrec.errors import DataError


@pytest.fixture()
def broken_copy(ml_dir, tmp_path):
    """A fresh copy of the fixture folder that a test may damage."""
    folder = tmp_path / "ml"
    shutil.copytree(ml_dir, folder)
    return folder


def test_reads_all_three_files(ml_dir):
    ml = read_movielens(ml_dir)
    assert len(ml.movies) == 1100 and len(ml.users) == 300
    assert list(ml.ratings.columns) == ["user_id", "movie_id", "rating", "timestamp"]
    assert ml.ratings["rating"].between(1, 5).all()
    lines = (ml_dir / "ratings.dat").read_text().splitlines()
    assert len(ml.ratings) == len(lines)
    first = [int(x) for x in lines[0].split("::")]
    assert ml.ratings.iloc[0].tolist() == first


def test_movies_have_display_titles_years_and_genre_vectors(ml_dir):
    movies = read_movielens(ml_dir).movies
    bug = movies.loc[1]
    assert (bug["raw_title"], bug["title"], bug["year"]) == ("Bug's Life, A (1998)", "A Bug's Life", 1998)
    assert bug["genres"] == ("Animation", "Children's", "Comedy")
    assert np.flatnonzero(bug["genre_vector"]).tolist() == [GENRES.index(g) for g in bug["genres"]]
    assert movies.loc[3, "title"] == "Les Misérables"  # latin-1 decoded
    assert movies.loc[6, "title"] == "Alien³"


def test_missing_file_says_what_is_expected_and_how_to_get_it(broken_copy):
    (broken_copy / "ratings.dat").unlink()
    with pytest.raises(DataError, match=r"ratings\.dat not found in .*ml-1m\.zip.*--data-dir or DUALREC_DATA_DIR"):
        read_movielens(broken_copy)


@pytest.mark.parametrize(
    ("file", "line", "pattern"),
    [
        ("ratings.dat", "1::2::3", r"ratings\.dat, line 5: expected .* in whole numbers, found '1::2::3'$"),
        ("ratings.dat", "1::2::3::4::5", r"ratings\.dat, line 5: expected .* in whole numbers, found '1::2::3::4::5'$"),
        ("ratings.dat", "\x7fELF\x02\xd0\x00", r"ratings\.dat, line 5: expected .* found '\\x7fELF\\x02Ð\\x00'$"),
        ("ratings.dat", "1::x::3::4", r"ratings\.dat, line 5: expected .* in whole numbers"),
        ("ratings.dat", "1::2::9::4", r"ratings\.dat, line 5: rating must be 1 to 5"),
        ("ratings.dat", "1::2:3::4", r"ratings\.dat, line 5: expected"),
        ("ratings.dat", "1::99999::3::4", r"ratings\.dat, line 5: movie_id 99999 is not in movies\.dat"),
        ("movies.dat", "5::Broken", r"movies\.dat, line 5: expected 3 fields"),
        ("movies.dat", "5::Title (1999)::Cartoon", r"movies\.dat, line 5: unknown genre 'Cartoon'"),
        ("users.dat", "5::X::1::2::3", r"users\.dat, line 5: gender must be F or M"),
        ("users.dat", "5::F::old::2::3", r"users\.dat, line 5: Age must be a whole number"),
    ],
)
def test_malformed_line_names_file_and_line(broken_copy, file, line, pattern):
    path = broken_copy / file
    lines = path.read_bytes().decode("latin-1").splitlines()
    lines[4] = line
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=pattern):
        read_movielens(broken_copy)


def test_a_bad_line_deep_in_a_large_ratings_file_is_reported_without_a_pandas_warning(broken_copy):
    path = broken_copy / "ratings.dat"
    first = path.read_text().splitlines()[0]
    path.write_text(f"{first}\n" * 150_000 + "1::x::3::4\n")  # long enough that pandas reads it in chunks of mixed types
    with warnings.catch_warnings(record=True) as caught, pytest.raises(DataError) as raised:
        warnings.simplefilter("always")
        read_movielens(broken_copy)
    assert str(raised.value).endswith(
        "ratings.dat, line 150001: expected UserID::MovieID::Rating::Timestamp in whole numbers, found '1::x::3::4'"
    )
    assert [str(warning.message) for warning in caught] == []


def test_empty_ratings_file_is_reported(broken_copy):
    (broken_copy / "ratings.dat").write_text("")
    with pytest.raises(DataError, match="is empty"):
        read_movielens(broken_copy)


def test_fingerprint_follows_the_contents(broken_copy, ml_dir):
    assert fingerprint_files(broken_copy) == fingerprint_files(ml_dir)
    with open(broken_copy / "users.dat", "a") as handle:
        handle.write("301::F::1::2::12345\n")
    assert fingerprint_files(broken_copy) != fingerprint_files(ml_dir)
