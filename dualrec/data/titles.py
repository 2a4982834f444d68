"""MovieLens title handling: the year, the display form with its article moved back, and title tokens.

MovieLens writes "Bug's Life, A (1998)" and "Emperor and the Assassin, The (Jing ke ci qin wang) (1999)"; people and
LLMs write "A Bug's Life" and "The Emperor and the Assassin". These functions turn one into the other.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

# Articles MovieLens moves to the end of a title ("Postino, Il", "Misérables, Les", "Enfer, L'").
ARTICLES = ("The", "A", "An", "L'", "Le", "La", "Les", "Il", "El", "Los", "Las", "Das", "Der", "Die", "Det", "Lo", "Un", "Une")

_YEAR = re.compile(r"^(?P<name>.*?)\s*\((?P<year>\d{4})\)\s*$")
_ARTICLE = re.compile(r"^(?P<body>.+?), (?P<article>" + "|".join(re.escape(a) for a in ARTICLES) + r")(?P<rest>(?: \(.*\))?)$")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

PAD_TOKEN = 0
OOV_TOKEN = 1


def split_year(raw_title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); a title without a trailing year keeps year None."""
    match = _YEAR.match(raw_title.strip())
    if not match:
        return raw_title.strip(), None
    return match["name"], int(match["year"])


def move_article_front(name: str) -> str:
    """'Bug's Life, A' -> "A Bug's Life"; 'Confessional, The (Le Confessionnal)' -> 'The Confessional (Le Confessionnal)'."""
    match = _ARTICLE.match(name)
    if not match:
        return name
    article = match["article"]
    separator = "" if article.endswith("'") else " "
    return f"{article}{separator}{match['body']}{match['rest']}"


def display_title(raw_title: str) -> str:
    """The title as people write it, without the year: "Bug's Life, A (1998)" -> "A Bug's Life"."""
    return move_article_front(split_year(raw_title)[0])


def fold_text(text: str) -> str:
    """Lower case without accents, so 'Misérables' and 'Miserables' compare equal."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def title_words(text: str) -> list[str]:
    """The words of a title as tokens: lower case, accents folded, punctuation dropped."""
    return _TOKEN.findall(fold_text(text))


def fit_title_vocabulary(titles: Iterable[str]) -> dict[str, int]:
    """Token -> id for the words of the given titles, most frequent first (ties alphabetical); 0 pads, 1 is unknown."""
    counts = Counter(word for title in titles for word in title_words(title))
    ordered = sorted(counts, key=lambda word: (-counts[word], word))
    return {word: index for index, word in enumerate(ordered, start=OOV_TOKEN + 1)}


def encode_title(title: str, vocabulary: dict[str, int], max_tokens: int) -> list[int]:
    """Token ids of a title, cut to max_tokens and right-padded with PAD_TOKEN."""
    ids = [vocabulary.get(word, OOV_TOKEN) for word in title_words(title)][:max_tokens]
    return ids + [PAD_TOKEN] * (max_tokens - len(ids))
