"""Grounding written titles in MovieLens: each title an LLM (or a person) writes -> one of the ML-1M movies, or none.

Precision first: a title that is not in MovieLens comes back unmatched (a hallucination), never as the closest real
movie. Every movie of movies.dat (not only the catalogue) is indexed under several keys: its display and MovieLens
forms ("The Matrix", "Matrix"), its alternate titles in parentheses ("Se7en", "Leon: The Professional"), and the
parts of a subtitled title ("The Empire Strikes Back", "Star Wars: The Empire Strikes Back"; the bare "Star Wars"
only with a year or when it names one movie). Keys are normalized (accents, punctuation, "&", roman numerals and
number words), compared with rapidfuzz's `ratio`, and a candidate must also have exactly the same numbers as the
written title (Toy Story is not Toy Story 2) and, when a year is written, a year within MATCH_YEAR_TOLERANCE.

A near miss stays unmatched: a close spelling may only differ by typos within words, never by a word more or less
("The Godfather Returns", "Raiders of the Lost Temple"); a series number may be written where MovieLens has none or left
out where it has one only before more words ("Star Trek II: The Wrath of Khan", never "Toy Story" for "Toy Story 2");
words written before a MovieLens title must be a possessive credit ("Tim Burton's") or a series MovieLens names in
another title of a shared genre ("Indiana Jones and the Raiders of the Lost Ark"), so "In the City of Angels" is not
"The Crow: City of Angels"; and a subtitle or series name alone never names a movie when it is another movie's whole
title ("City of Angels" is City of Angels (1998)) or fits several movies ("Austin Powers (1998)").
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher

import pandas as pd
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from dualrec.config import MATCH_THRESHOLD, MATCH_TYPO_EDITS, MATCH_YEAR_TOLERANCE
from dualrec.data.dataset import Dataset
from dualrec.data.titles import ARTICLES, fold_text, move_article_front, split_year
from dualrec.errors import UnknownTitleError

# Key levels: a better level wins a tie; PREFIX keys ("Star Wars" of "Star Wars: Episode IV - A New Hope") need a
# matching year unless they name a single movie.
PRIMARY, ALTERNATE, SUBTITLE, PREFIX = range(4)

_SUPERSCRIPTS = str.maketrans({s: f" {d}" for s, d in zip("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")})
_JOINED = re.compile(r"['’`´.]")  # removed without a space: "Schindler's" = "Schindlers", "L.A." = "LA"
_NON_WORD = re.compile(r"[^a-z0-9]+")
_DIGIT = re.compile(r"\d")
_ROMAN = {"ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8", "ix": "9", "x": "10"}
_NUMBER_WORDS = {
    word: str(number)
    for number, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_SERIES_WORDS = {"episode", "part", "chapter", "volume", "vol"}  # "Episode I" is 1; a lone "I" is a word
_TRAILING_PAREN = re.compile(r"^(?P<rest>.*\S)\s*\((?P<inner>[^()]*)\)$")
_AKA = re.compile(r"^a\.?k\.?a\.?\s+", re.IGNORECASE)
_SEGMENT = re.compile(r"(?:\s+or)?:\s+|\s+-+\s+")  # "Star Wars: Episode V - The Empire...", "Dr. Strangelove or: How..."
_GENERIC_SEGMENT = re.compile(r"^(?:episode|part|chapter|vol(?:ume)?)\s+\w+$")
_LEADING_ARTICLE = re.compile(r"^(?:" + "|".join(re.escape(a) for a in ARTICLES) + r")(?:\s+|(?<=')\s*)", re.IGNORECASE)
_ENGLISH_ARTICLE = re.compile(r"^(?:the|an?)\s+", re.IGNORECASE)
_SUGGESTION_CUTOFF = 60.0
_FUNCTION_WORDS = frozenset("a an the and or of in on at to for from with by into as is it its my your his her our their".split())
_SHORTEST_TYPO_WORD = 3  # "Arc" is a typo of "Ark"; "to" is not one of "of"
_CREDIT = re.compile(r"^(?:[\w.-]+\s+){0,2}[\w.-]+['’]s\s+(?P<rest>.+)$")  # "Tim Burton's The Nightmare Before..."
# Content words (not "the", "of"...) a part of a title needs to name a movie alone ("The Wrath of Khan", not "The
# Return"; "The Nightmare Before Christmas" after "Tim Burton's", not "List" after "Schindler's") or to be a series
# written before a title ("Indiana Jones", not "Return to").
_CONTENT_WORDS_MIN = 2


def normalize(title: str) -> str:
    """The comparable form of a title: 'Alien³' and 'alien 3', 'Rocky IV' and 'Rocky 4', 'Twelve' and '12' agree."""
    text = _JOINED.sub("", fold_text(title.translate(_SUPERSCRIPTS)).replace("&", " and "))
    words = _NON_WORD.sub(" ", text).split()
    out: list[str] = []
    for i, word in enumerate(words):
        after_series = i > 0 and words[i - 1] in _SERIES_WORDS
        word = _NUMBER_WORDS.get(word) or _ROMAN.get(word) or ("1" if word == "i" and after_series else word)
        if out and out[-1] == "part" and word.isdigit():  # "Part II" = "2": "The Godfather Part II" = "The Godfather 2"
            out.pop()
        out.append(word)
    return " ".join(out)


def numbers_of(key: str) -> frozenset[str]:
    """The numbers of a normalized title: two titles can only match when these are equal (sequels stay apart)."""
    return frozenset(word for word in key.split() if word.isdigit())


def without_numbers(key: str) -> str:
    return " ".join(word for word in key.split() if not word.isdigit()) if _DIGIT.search(key) else key


def content_words(key: str) -> list[str]:
    """The words of a normalized title besides function words ("in", "the", "of"): what makes it that title."""
    return [word for word in key.split() if word not in _FUNCTION_WORDS]


def differs_by_typos_only(query: str, key: str) -> bool:
    """Whether two normalized titles have the same words up to typos: no word added or dropped, at most
    MATCH_TYPO_EDITS edits (a swap of two letters is one) in a misspelt word of 3+ letters ("matrixx" = "matrix",
    "kahn" = "khan", "spider man" = "spiderman"; never "east" = "west")."""
    written, known = query.split(), key.split()
    if len(written) == len(known):
        pairs = list(zip(written, known))
    else:  # words run together or split apart, aligned on the words both have
        opcodes = SequenceMatcher(None, written, known, autojunk=False).get_opcodes()
        if any(tag in ("insert", "delete") for tag, *_ in opcodes):
            return False
        pairs = [("".join(written[i1:i2]), "".join(known[j1:j2])) for _, i1, i2, j1, j2 in opcodes]
    for a, b in pairs:
        if a != b and (min(len(a), len(b)) < _SHORTEST_TYPO_WORD or OSA.distance(a, b) > MATCH_TYPO_EDITS):
            return False
    return True


def split_alternates(name: str) -> tuple[str, list[str]]:
    """'Seven Samurai (The Magnificent Seven) (Shichinin no samurai)' -> ('Seven Samurai', ['The Magnificent Seven', ...])."""
    alternates: list[str] = []
    while match := _TRAILING_PAREN.match(name):
        name = match["rest"]
        inner = _AKA.sub("", match["inner"].strip())
        alternates[:0] = [part.strip() for part in inner.split("/") if part.strip()]
    return name, alternates


def without_article(title: str, any_language: bool) -> str | None:
    """'The Matrix' -> 'Matrix' (and, with any_language, "L'Enfer" -> 'Enfer'); None without a leading article.

    Foreign articles are only dropped where MovieLens moved them: "Die Hard" keeps its "Die".
    """
    stripped = (_LEADING_ARTICLE if any_language else _ENGLISH_ARTICLE).sub("", title, count=1)
    return stripped if stripped != title and stripped else None


def movie_keys(raw_title: str) -> list[tuple[str, int]]:
    """Every (written form, level) under which a movies.dat title is found."""
    name = split_year(raw_title)[0]
    main, alternates = split_alternates(name)
    keys = [(name, PRIMARY), (move_article_front(name), PRIMARY)] if alternates else []
    for form, level in [(main, PRIMARY)] + [(alternate, ALTERNATE) for alternate in alternates]:
        display = move_article_front(form)
        keys += [(form, level), (display, level)]
        if stripped := without_article(display, any_language=display != form):
            keys.append((stripped, max(level, ALTERNATE)))  # "Fear" is "Fear (1996)" before "Fear, The (1995)"
        keys += segment_keys(display)
    return keys


def segment_keys(title: str) -> list[tuple[str, int]]:
    """The parts of a subtitled title: its prefixes ("Star Wars") and its subtitle ("The Empire Strikes Back")."""
    segments = [s for s in _SEGMENT.split(title) if s]
    if len(segments) < 2:
        return []
    parts = [(" ".join(segments[:n]), PREFIX) for n in range(1, len(segments))]
    last = segments[-1]
    if len(content_words(normalize(last))) >= _CONTENT_WORDS_MIN and not _GENERIC_SEGMENT.match(last.lower()):
        parts.append((last, SUBTITLE))
        if len(segments) > 2:
            parts.append((f"{segments[0]} {last}", SUBTITLE))
    return parts + [(stripped, level) for part, level in parts if (stripped := without_article(part, False))]


def query_forms(title: str) -> tuple[list[str], list[str]]:
    """The forms of a written title to look up: first the title itself, then its parenthesized alternates and the
    title after a possessive credit of 2+ content words ("Disney's The Lion King"; never "List" of "Schindler's List")."""
    main, alternates = split_alternates(title.strip())
    firsts = [move_article_front(title.strip()), move_article_front(main)]
    credited = _CREDIT.match(main)
    if credited and len(content_words(normalize(credited["rest"]))) >= _CONTENT_WORDS_MIN:
        alternates.append(credited["rest"])
    return firsts, [move_article_front(a) for a in alternates]


@dataclass(frozen=True)
class Match:
    """A written title and the MovieLens movie it names (movie_id None: not in MovieLens, a hallucination)."""

    text: str  # the recommendation as written in the answer
    title: str  # the title read from it
    year: int | None  # the year written with it
    movie_id: int | None
    score: float | None  # rapidfuzz similarity 0-100 to the matched title key (100: exactly, or as the end of the
    #                       written title); None when unmatched
    movie: str | None = None  # the matched movie's MovieLens title, "Matrix, The (1999)"

    def as_dict(self) -> dict:
        return asdict(self)


def sorted_words(key: str) -> str:
    return " ".join(sorted(key.split()))


class TitleIndex:
    """All movies of a movies table under their normalized keys; build once per dataset (see `title_index`).

    A written title is looked up in tiers, the first tier with an acceptable candidate wins: the exact key (or the
    same words in another order: "Jurassic Park: The Lost World"), then the same title with a series number written
    or left out before more words ("Star Trek II: The Wrath of Khan"), then rapidfuzz `ratio` >= MATCH_THRESHOLD with
    the same words up to typos, then, only when a year is written, a MovieLens title of 3+ words that ends the written
    one after a series named by another MovieLens title ("Wallace & Gromit: The Wrong Trousers"). Ties go to the closer
    year, the fuller written form (the title with its parentheses before the title without), the better key level,
    then the most rated movie.
    """

    def __init__(self, movies: pd.DataFrame, popularity: pd.Series | None = None):
        self.raw_titles = dict(zip(movies.index.tolist(), movies["raw_title"].tolist()))
        self.years = {movie_id: int(year) for movie_id, year in movies["year"].dropna().items()}
        self.genres = {movie_id: set(genres) for movie_id, genres in movies["genres"].items()}
        self.popularity = popularity.reindex(movies.index, fill_value=0).to_dict() if popularity is not None else {}
        levels: dict[tuple[str, int], int] = {}
        for movie_id, raw_title in self.raw_titles.items():
            for form, level in dict(sorted(movie_keys(raw_title), key=lambda key: -key[1])).items():  # once, best level
                key = (normalize(form), movie_id)
                if key[0] and levels.get(key, PREFIX + 1) > level:
                    levels[key] = level
        self.keys = [key for key, _ in levels]
        self.key_movies = [movie for _, movie in levels]
        self.key_levels = list(levels.values())
        self.exact: dict[str, list[int]] = {}
        self.reordered: dict[str, list[int]] = {}
        for position, key in enumerate(self.keys):
            self.exact.setdefault(key, []).append(position)
            self.reordered.setdefault(sorted_words(key), []).append(position)
        self.sorted_keys = sorted(self.exact)
        self.whole_titles = {key for key, level in zip(self.keys, self.key_levels) if level <= ALTERNATE}
        self.unnumbered: dict[str, list[int]] = {}  # keys without their numbers ("free willy the adventure home")
        titles_of: dict[int, list[str]] = {}
        for position, key in enumerate(self.keys):
            if self.key_levels[position] != PREFIX:
                self.unnumbered.setdefault(without_numbers(key), []).append(position)
            if self.key_levels[position] <= ALTERNATE:
                titles_of.setdefault(self.key_movies[position], []).append(key)
        self.tails: dict[int, set[str]] = {}  # what follows a movie's series name: "the wrath of khan" after "star trek"
        for position, prefix in enumerate(self.keys):
            if self.key_levels[position] == PREFIX:
                movie = self.key_movies[position]
                tails = {key[len(prefix) + 1 :] for key in titles_of.get(movie, []) if key.startswith(prefix + " ")}
                self.tails.setdefault(movie, set()).update(tails)

    def __len__(self) -> int:
        return len(self.raw_titles)

    def match(self, title: str, year: int | None = None, text: str | None = None) -> Match:
        """The movie a written title (and year, if written) names, or an unmatched Match."""
        ranked = self._ranked(title, year)
        if not ranked:
            return Match(text or title, title, year, None, None)
        score, movie_id = round(-ranked[0][0], 1), ranked[0][-1]
        return Match(text or title, title, year, movie_id, score, self.raw_titles[movie_id])

    def namesakes(self, title: str, year: int | None = None) -> list[int]:
        """Every movie the written title names equally well (the same score, year distance, written form and key
        level; only popularity would tell them apart), the match first, or the movies of a series it names alone ("Star
        Wars"): more than one means the title is ambiguous ("Hamlet" without a year). Empty when nothing matches."""
        ranked = self._ranked(title, year)
        if not ranked:
            return self._series(title, year)
        return list(dict.fromkeys(rank[-1] for rank in ranked if rank[:4] == ranked[0][:4]))

    def _series(self, title: str, year: int | None) -> list[int]:
        """The movies a series name opens when it names several of them ("Star Wars", "Austin Powers"), most rated
        first; none for a series name of one movie (that one is its match) or of none."""
        key = normalize(move_article_front(title.strip()))
        movies = {self.key_movies[p] for p in self.exact.get(key, []) if self.key_levels[p] == PREFIX}
        if year is not None:
            movies = {m for m in movies if abs(self.years.get(m, year) - year) <= MATCH_YEAR_TOLERANCE}
        return sorted(movies, key=lambda m: (-self.popularity.get(m, 0), m)) if len(movies) > 1 else []

    def _ranked(self, title: str, year: int | None) -> list[tuple]:
        """The sorted ranks of the acceptable candidates of the first forms and tier that have any."""
        firsts, alternates = query_forms(title)
        return self._best(firsts, year) or self._best(alternates, year)

    def _best(self, forms: list[str], year: int | None) -> list[tuple]:
        """The sorted ranks (see `_rank`) of the acceptable candidates for any of the forms, from the first tier with one."""
        queries = [q for q in dict.fromkeys(normalize(f) for f in forms) if q]
        tiers = (self._exact_hits, self._renumbered_hits, self._fuzzy_hits) + ((self._suffix_hits,) if year is not None else ())
        for tier in tiers:
            ranked = [
                self._rank(score, position, compared, year, order)
                for order, query in enumerate(queries)
                for score, position, compared in tier(query)
            ]
            ranked = sorted(rank for rank in ranked if rank is not None)
            if ranked:
                return ranked
        return []

    def _exact_hits(self, query: str) -> list[tuple[float, int, str]]:
        positions = self.exact.get(query) or self.reordered.get(sorted_words(query), [])
        return [(100.0, p, query) for p in positions]

    def _renumbered_hits(self, query: str) -> list[tuple[float, int, str]]:
        """Keys that are the query with a series number added or left out before the movie's subtitle (compared to
        themselves: their numbers are checked here): "star trek 2 the wrath of khan" -> "star trek the wrath of khan",
        never "toy story" -> "toy story 2" nor "around the world in days" -> "... in 80 days"; two numbers never agree."""
        written = numbers_of(query)
        hits = []
        for position in self.unnumbered.get(without_numbers(query), []):
            key, movie = self.keys[position], self.key_movies[position]
            if not (written and numbers_of(key)) and self._numbers_a_series(query if written else key, movie):
                hits.append((100.0, position, key))
        return hits

    def _numbers_a_series(self, title: str, movie_id: int) -> bool:
        """Whether a number in a normalized title ends the movie's series name, right before its subtitle."""
        words, tails = title.split(), self.tails.get(movie_id, set())
        return any(word.isdigit() and " ".join(words[i + 1 :]) in tails for i, word in enumerate(words[1:-1], start=1))

    def _fuzzy_hits(self, query: str) -> list[tuple[float, int, str]]:
        found = process.extract(query, self.keys, scorer=fuzz.ratio, score_cutoff=MATCH_THRESHOLD, limit=None)
        return [(score, position, query) for key, score, position in found if differs_by_typos_only(query, key)]

    def _suffix_hits(self, query: str) -> list[tuple[float, int, str]]:
        words = query.split()
        for start in range(1, len(words) - 2):
            suffix = " ".join(words[start:])
            hits = [(100.0, p, suffix) for p in self.exact.get(suffix, []) if self._leads_to(words[:start], p)]
            if hits:
                return hits
        return []

    def _leads_to(self, lead: list[str], position: int) -> bool:
        """Whether the words written before a whole MovieLens title keep it that movie: a series of 2+ content words
        that opens another MovieLens title of a shared genre ("Indiana Jones and the Raiders of the Lost Ark",
        "Wallace & Gromit in The Wrong Trousers"); never "In the City of Angels" for "The Crow: City of Angels"."""
        while lead and lead[-1] in _FUNCTION_WORDS:
            lead = lead[:-1]
        series = " ".join(lead)
        if self.key_levels[position] > ALTERNATE or numbers_of(series) or len(content_words(series)) < _CONTENT_WORDS_MIN:
            return False
        return self._opens_a_title_like(series + " ", self.key_movies[position])

    def _opens_a_title_like(self, opening: str, movie_id: int) -> bool:
        """Whether a MovieLens title other than the movie's, sharing one of its genres, starts with these words."""
        genres = self.genres.get(movie_id, set())
        for i in range(bisect_left(self.sorted_keys, opening), len(self.sorted_keys)):
            if not self.sorted_keys[i].startswith(opening):
                return False
            others = {self.key_movies[p] for p in self.exact[self.sorted_keys[i]]} - {movie_id}
            if any(genres & self.genres.get(other, set()) for other in others):
                return True
        return False

    def _rank(self, score: float, position: int, compared: str, year: int | None, order: int) -> tuple | None:
        """A sortable rank for an acceptable candidate (`order`: which written form found it, the fullest first);
        None when its numbers, year or key level rule it out."""
        key, movie_id, level = self.keys[position], self.key_movies[position], self.key_levels[position]
        movie_year = self.years.get(movie_id)
        distance = 0 if year is None or movie_year is None else abs(movie_year - year)
        if numbers_of(key) != numbers_of(compared) or distance > MATCH_YEAR_TOLERANCE:
            return None
        if level >= SUBTITLE and (key in self.whole_titles or self._movies_fitting(key, year) > 1):
            return None  # part of a title that is another movie's whole title, or that names several movies
        return (-score, distance, order, level, -self.popularity.get(movie_id, 0), movie_id)

    def _movies_fitting(self, key: str, year: int | None) -> int:
        """How many movies a key names within the year tolerance (all of them without a year)."""
        movies = {self.key_movies[p] for p in self.exact[key]}
        return sum(year is None or abs(self.years.get(movie, year) - year) <= MATCH_YEAR_TOLERANCE for movie in movies)

    def suggest(self, text: str, limit: int = 3) -> list[str]:
        """Up to `limit` MovieLens titles close to a text, for "did you mean" messages."""
        query = normalize(move_article_front(split_year(text)[0]))
        found: list[str] = []
        for _, _, position in process.extract(query, self.keys, scorer=fuzz.WRatio, score_cutoff=_SUGGESTION_CUTOFF, limit=50):
            raw_title = self.raw_titles[self.key_movies[position]]
            if raw_title not in found:
                found.append(raw_title)
        return found[:limit]


_INDEXES: dict[str, TitleIndex] = {}


def title_index(source: Dataset | pd.DataFrame | TitleIndex) -> TitleIndex:
    """The index of a dataset's movies (built once per data fingerprint; ties prefer the most rated movie)."""
    if isinstance(source, TitleIndex):
        return source
    if isinstance(source, pd.DataFrame):
        return TitleIndex(source)
    if source.fingerprint not in _INDEXES:
        _INDEXES[source.fingerprint] = TitleIndex(source.movies, source.ratings["movie_id"].value_counts())
    return _INDEXES[source.fingerprint]


def match_title(source: Dataset | pd.DataFrame | TitleIndex, title: str, year: int | None = None) -> Match:
    """Match one title (with its year, if known) to MovieLens."""
    return title_index(source).match(title, year)


def resolve_title(source: Dataset | pd.DataFrame | TitleIndex, text: str) -> int:
    """The MovieLens movie id of a title a person typed ("The Matrix", "matrix (1999)", "Toy Story 2").

    Raises UnknownTitleError with up to 3 "did you mean" suggestions when no movie matches.
    """
    index = title_index(source)
    title, year = split_year(text.strip())
    match = index.match(title, year)
    if match.movie_id is None:
        raise UnknownTitleError(unknown_message(index, text))
    return match.movie_id


def resolve_titles(source: Dataset | pd.DataFrame | TitleIndex, text: str) -> list[int]:
    """Movie ids of a "title; title; ..." list, in order; one UnknownTitleError names every title not found."""
    index = title_index(source)
    titles = [part.strip() for part in text.split(";") if part.strip()]
    if not titles:
        raise UnknownTitleError('No titles given: write them separated by semicolons, e.g. "Toy Story; The Matrix (1999)".')
    ids, problems = [], []
    for title in titles:
        try:
            ids.append(resolve_title(index, title))
        except UnknownTitleError as error:
            problems.append(str(error))
    if problems:
        raise UnknownTitleError(" ".join(problems))
    return ids


def unknown_message(index: TitleIndex, text: str) -> str:
    suggestions = index.suggest(text)
    hint = f" Did you mean: {'; '.join(suggestions)}?" if suggestions else ""
    return f"No MovieLens movie matches {text.strip()!r}.{hint}"


def match_all(source: Dataset | pd.DataFrame | TitleIndex, titles: Iterable[tuple[str, str, int | None]]) -> list[Match]:
    """Match (text, title, year) triples, in order."""
    index = title_index(source)
    return [index.match(title, year, text) for text, title, year in titles]
