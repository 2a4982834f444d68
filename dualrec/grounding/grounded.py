"""Catalogue-grounded answers: the AnswerConstraint (dualrec.llm.constraint) that lets a model write only real,
unwatched catalogue movies, in the answer format.

Each catalogue movie is one choice: the model writes its title and year as `format_answer` writes them
(" Toy Story (1995)"), and we write the rest of the line, its genres. The choices and their prefix tree do not
depend on the history, so they are built once per catalogue; a request only excludes the history's movies.

`grounded_answer` streams an answer asked to be grounded and reports how it was: by the engine, or, where the engine
or server cannot (or will not) ground it, a free answer that says plainly that it is not grounded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError
from dualrec.grounding.prompts import ANSWER_FORMAT, format_answer
from dualrec.llm.constraint import AnswerConstraint, Choice, ChoiceSet, GroundingUnsupportedError

_HEAD = ANSWER_FORMAT.partition("{title}")[0]  # "{rank}. "
LINE_START = _HEAD.rstrip()  # "{rank}.": the space goes with the title, as the tokenizers read " Toy"
_SPACE = _HEAD[len(LINE_START) :]
_CACHE: dict[tuple, tuple[ChoiceSet, dict[int, int]]] = {}
_CACHE_SIZE = 4


def movie_choice(dataset: Dataset, movie_id: int) -> Choice:
    """A movie as a choice: " Title (Year)" for the model, then the rest of its `format_answer` line (its genres)."""
    movie = dataset.movies.loc[movie_id]
    title = f"{movie['title']} ({movie['year']})"
    line = format_answer(dataset.movies, [movie_id])
    return Choice(_SPACE + title, line.partition(title)[2])


def catalogue_choices(dataset: Dataset) -> tuple[ChoiceSet, dict[int, int]]:
    """The catalogue's movies as choices (in catalogue order) and movie id -> choice position; cached per catalogue."""
    key = (dataset.fingerprint, tuple(dataset.catalogue.tolist()))
    if key not in _CACHE:
        movie_ids = dataset.catalogue.tolist()
        choices = ChoiceSet([movie_choice(dataset, movie_id) for movie_id in movie_ids])
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (choices, {movie_id: position for position, movie_id in enumerate(movie_ids)})
    return _CACHE[key]


def answer_constraint(
    dataset: Dataset, history: Iterable[int], k: int, allowed: Collection[int] | None = None
) -> AnswerConstraint:
    """A grounded answer of `k` lines for a history of movie ids: catalogue movies the history does not hold, and
    only those of `allowed` (movie ids, e.g. a candidate set to pick from) when given."""
    choices, position = catalogue_choices(dataset)
    excluded = {position[movie_id] for movie_id in history if movie_id in position}
    if allowed is not None:
        unknown = [movie_id for movie_id in allowed if movie_id not in position]
        if unknown:
            raise DualrecError(f"A grounded answer can only name catalogue movies; not in the catalogue: {unknown[:5]}.")
        excluded |= set(range(len(choices))) - {position[movie_id] for movie_id in allowed}
    if k < 1:
        raise DualrecError(f"A grounded answer needs at least one line, not k={k}.")
    if len(excluded) == len(choices):
        if allowed is not None:
            raise DualrecError(
                f"Every one of the {len(allowed):,} allowed movies is in this history (or none was given), so a grounded "
                "answer has no movie left to recommend."
            )
        raise DualrecError(
            f"Every one of the {len(choices):,} catalogue movies is in this history, so a grounded answer has no movie "
            "left to recommend; ask for a free answer instead."
        )
    return AnswerConstraint(choices, k, frozenset(excluded), LINE_START)


@dataclass(frozen=True)
class Grounding:
    """An answer asked to be grounded: whether it is, and the engine that grounded it or why it is not."""

    grounded: bool
    note: str

    @property
    def summary(self) -> str:
        return f"grounded by {self.note}" if self.grounded else self.note

    def as_dict(self) -> dict:
        return {"grounded": self.grounded, "grounding": self.note}


def grounded_answer(
    stream: Callable[..., Iterator[str]],
    constraint: AnswerConstraint,
    engine: str | None,
    report: Callable[[Grounding], None],
) -> Iterator[str]:
    """The chunks of `stream(constraint=constraint)` (a backend's stream, its prompt and settings bound), reported as
    grounded by `engine`; when the engine cannot ground it before writing anything, the free `stream(constraint=None)`,
    reported as not grounded, with the reason."""
    report(Grounding(True, engine or "?"))
    answered = False
    try:
        for chunk in stream(constraint=constraint):
            answered = True
            yield chunk
    except GroundingUnsupportedError as error:
        if answered:
            raise
        report(Grounding(False, f"NOT grounded, a free answer: {error}"))
        yield from stream(constraint=None)
