import numpy as np
import pytest

from dualrec.config import GENRES
from dualrec.data.genres import cosine, genre_profile, intra_list_similarity, jaccard, overlap_table
from dualrec.data.movielens import read_movies


@pytest.fixture(scope="module")
def movies(ml_dir):
    return read_movies(ml_dir / "movies.dat")


def one_hot(*names):
    vector = np.zeros(len(GENRES), dtype=np.float32)
    vector[[GENRES.index(n) for n in names]] = 1
    return vector


def test_profile_is_the_share_of_each_genre():
    profile = genre_profile(np.stack([one_hot("Action", "Comedy"), one_hot("Comedy")]))
    assert profile[GENRES.index("Comedy")] == pytest.approx(2 / 3) and profile.sum() == pytest.approx(1)
    assert genre_profile(np.zeros((0, 18))).sum() == 0


def test_overlap_measures_on_hand_made_profiles():
    a, b = one_hot("Action", "Comedy"), one_hot("Comedy", "Drama")
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert cosine(a, b) == pytest.approx(0.5)
    assert cosine(a, np.zeros(18)) == 0.0 and jaccard(np.zeros(18), np.zeros(18)) == 0.0


def test_intra_list_similarity_is_mean_pairwise_cosine():
    same = np.stack([one_hot("Drama")] * 3)
    assert intra_list_similarity(same) == pytest.approx(1.0)
    assert intra_list_similarity(np.stack([one_hot("Drama"), one_hot("Horror")])) == 0.0
    assert intra_list_similarity(same[:1]) is None


def test_overlap_table_compares_every_list_with_the_history(movies):
    table = overlap_table(movies, [1, 8, 9], {"lstm": [8], "model": [4], "empty": []})
    assert table["list"].tolist() == ["history", "lstm", "model", "empty"]
    assert table.loc[0, "cosine"] == pytest.approx(1.0)
    assert table.set_index("list").loc["lstm", "jaccard"] == pytest.approx(1.0)  # Toy Story 2 shares all genres with the history
    assert table.set_index("list").loc["empty", "movies"] == 0
