"""The answer parser: unit cases, then every answer of the realistic set in tests/answers/."""

import pytest

from dualrec.grounding.parsing import ParsedTitle, is_genre_list, looks_like_title, parse_answer
from tests.answers import load_answers

ANSWERS = load_answers()


def titles(answer: str, prompt: str | None = None) -> list[tuple[str, int | None]]:
    return [(p.title, p.year) for p in parse_answer(answer, prompt)]


def test_numbered_list_with_genres():
    answer = "Here you go:\n1. Tarzan (1999) Genres: Animation, Children's\n2. Antz (1998) - Animation"
    assert parse_answer(answer) == [
        ParsedTitle("Tarzan (1999) Genres: Animation, Children's", "Tarzan", 1999),
        ParsedTitle("Antz (1998) - Animation", "Antz", 1998),
    ]


def test_markup_is_removed_from_titles():
    answer = '1. **Heat** (1995)\n2. *Ronin (1998)*\n3. "Speed" (1994)\n4. [Jaws](https://x.org/Jaws_(film)) (1975)'
    assert titles(answer) == [("Heat", 1995), ("Ronin", 1998), ("Speed", 1994), ("Jaws", 1975)]


def test_items_without_years_stop_at_their_description():
    answer = "- Amadeus - a drama about Mozart\n- Star Wars: The Empire Strikes Back - a classic\n- Mulan: Animation, Children's"
    assert titles(answer) == [("Amadeus", None), ("Star Wars: The Empire Strikes Back", None), ("Mulan", None)]


def test_numbered_items_run_together_on_one_line_are_split():
    assert titles("1. Se7en (1995) 2. Heat (1995); 3. Casino (1995)") == [("Se7en", 1995), ("Heat", 1995), ("Casino", 1995)]
    assert titles("1. Mambo No. 5 (1999)\n2. Ocean's 11 (1960)") == [("Mambo No. 5", 1999), ("Ocean's 11", 1960)]
    assert titles("6. The Spiders (Die Spinnen, 1. Teil) (1919)") == [("The Spiders (Die Spinnen, 1. Teil)", 1919)]


def test_only_list_items_count_when_there_is_a_list():
    answer = "Since you liked Mulan (1998):\n1. Tarzan (1999) - like Hercules (1997)\n\nAlso consider Antz (1998)."
    assert titles(answer) == [("Tarzan", 1999)]


def test_titles_in_prose_lose_the_words_around_them():
    answer = "Try Rushmore (1998) first. Finally, Contact (1997) and The Iron Giant (1999), or *Speed*."
    assert titles(answer) == [("Rushmore", 1998), ("Contact", 1997), ("The Iron Giant", 1999), ("Speed", None)]


def test_reasoning_is_never_parsed():
    assert titles("<think>Maybe Shrek (2001).</think>\n1. Tarzan (1999)") == [("Tarzan", 1999)]
    assert titles("<think>Maybe Shrek (2001), or Tarzan (1999)") == []


def test_lines_that_echo_the_prompt_are_ignored():
    prompt = "Below is a user's movie watching history:\n- Antz (1998) (Animation, Children's)\nNow, recommend 3 more."
    answer = "1. Antz (1998) (Animation, Children's)\n2. Tarzan (1999)"
    assert titles(answer, prompt) == [("Tarzan", 1999)]
    assert titles(answer) == [("Antz", 1998), ("Tarzan", 1999)]
    assert titles(f"Below is a user's movie watching history:\n{answer}") == []  # a history heading, even unprompted


def test_a_history_section_is_skipped():
    answer = "### Your history\n- Antz (1998)\n- Mulan (1998)\n\n### Recommendations\n- Tarzan (1999)"
    assert titles(answer) == [("Tarzan", 1999)]


def test_duplicates_are_dropped_and_nothing_found_is_empty():
    assert titles("1. Tarzan (1999)\n2. tarzan (1999)\n3. Tarzan (1999)") == [("Tarzan", 1999)]
    assert titles("") == [] and titles("I cannot help with that.") == []


def test_genre_lists_and_titles_are_told_apart():
    assert is_genre_list("Animation, Children's, Comedy") and is_genre_list("Action/Sci-Fi")
    assert not is_genre_list("Beauty and the Beast")
    assert looks_like_title("The Emperor and the Assassin (Jing ke ci qin wang)")
    assert not looks_like_title("a heartwarming tale of friendship and loss")


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: a.id)
def test_the_parser_reads_every_answer_of_the_set(answer):
    assert titles(answer.answer, answer.prompt) == [(e.title, e.year) for e in answer.expect]


def test_the_answer_set_is_large_and_varied():
    assert len(ANSWERS) >= 100
    assert sum(len(a.expect) for a in ANSWERS) >= 300
    assert any(e.movie is None for a in ANSWERS for e in a.expect)  # hallucinations
    assert any(a.prompt for a in ANSWERS) and any("<think>" in a.answer or "</think>" in a.answer for a in ANSWERS)
