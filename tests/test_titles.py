from dualrec.data.titles import (
    OOV_TOKEN,
    PAD_TOKEN,
    display_title,
    encode_title,
    fit_title_vocabulary,
    fold_text,
    split_year,
    title_words,
)


def test_year_is_split_from_the_title():
    assert split_year("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_year("Postino, Il (The Postman) (1994)") == ("Postino, Il (The Postman)", 1994)
    assert split_year("No Year Here") == ("No Year Here", None)


def test_articles_move_back_to_the_front():
    assert display_title("Bug's Life, A (1998)") == "A Bug's Life"
    assert (
        display_title("Emperor and the Assassin, The (Jing ke ci qin wang) (1999)")
        == "The Emperor and the Assassin (Jing ke ci qin wang)"
    )
    assert display_title("Misérables, Les (1995)") == "Les Misérables"
    assert display_title("Enfer, L' (1994)") == "L'Enfer"
    assert display_title("Postino, Il (The Postman) (1994)") == "Il Postino (The Postman)"
    assert display_title("American President, The (1995)") == "The American President"


def test_titles_without_a_moved_article_stay_as_they_are():
    assert (
        display_title("Star Wars: Episode V - The Empire Strikes Back (1980)") == "Star Wars: Episode V - The Empire Strikes Back"
    )
    assert (
        display_title("Crouching Tiger, Hidden Dragon (Wu hu zang long) (2000)")
        == "Crouching Tiger, Hidden Dragon (Wu hu zang long)"
    )
    assert display_title("Sense and Sensibility (1995)") == "Sense and Sensibility"


def test_words_are_folded_and_stripped_of_punctuation():
    assert fold_text("Misérables") == "miserables"
    assert title_words("A Bug's Life: The Return!") == ["a", "bug's", "life", "the", "return"]


def test_vocabulary_orders_by_frequency_and_encoding_pads_and_cuts():
    vocabulary = fit_title_vocabulary(["Star Wars", "Star Trek", "Trek"])
    assert vocabulary == {"star": 2, "trek": 3, "wars": 4}
    assert encode_title("Star Wars Unknown", vocabulary, 5) == [2, 4, OOV_TOKEN, PAD_TOKEN, PAD_TOKEN]
    assert encode_title("star " * 20, vocabulary, 10) == [2] * 10
