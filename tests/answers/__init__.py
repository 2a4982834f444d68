"""The realistic answer set (see README.md here): loading it, and scoring the matcher on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from dualrec.grounding.matching import TitleIndex

FOLDER = Path(__file__).parent


@dataclass(frozen=True)
class Expected:
    title: str  # as written in the answer
    year: int | None  # as written
    movie: str | None  # the movies.dat title meant; None: not in MovieLens 1M
    miss: bool = False  # a known miss: the matcher may leave it unmatched


@dataclass(frozen=True)
class Answer:
    file: str
    name: str
    answer: str
    prompt: str | None
    expect: list[Expected]

    @property
    def id(self) -> str:
        return f"{self.file}: {self.name}"


def load_answers() -> list[Answer]:
    answers = []
    for path in sorted(FOLDER.glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text(encoding="utf-8")):
            expect = [Expected(*item[:3], miss=item[3:] == ["miss"]) for item in entry["expect"]]
            answers.append(Answer(path.stem, entry["name"], entry["answer"], entry.get("prompt"), expect))
    return answers


@dataclass(frozen=True)
class Quality:
    titles: int  # recommended titles in the set
    in_movielens: int  # of them, movies that are in MovieLens 1M
    correct: int  # matched to the right movie
    wrong: int  # matched to a movie, but not the one meant (or meant none)
    missed: list[str]  # in MovieLens, left unmatched

    @property
    def precision(self) -> float:
        return self.correct / max(self.correct + self.wrong, 1)

    @property
    def recall(self) -> float:
        return self.correct / max(self.in_movielens, 1)


def evaluate(index: TitleIndex, answers: list[Answer]) -> tuple[Quality, list[str]]:
    """Match every expected title as written (the parser is tested apart): the matcher's quality, a line per wrong match."""
    ids_by_title = {raw: movie_id for movie_id, raw in index.raw_titles.items()}
    titles = in_movielens = correct = 0
    wrong, missed = [], []
    for answer in answers:
        for expected in answer.expect:
            match = index.match(expected.title, expected.year)
            meant = ids_by_title[expected.movie] if expected.movie else None
            titles += 1
            in_movielens += meant is not None
            if match.movie_id is not None and match.movie_id == meant:
                correct += 1
            elif match.movie_id is not None:
                wrong.append(f"{answer.id}: {expected.title!r} ({expected.year}) -> {match.movie}, meant {expected.movie}")
            elif meant is not None:
                missed.append(
                    f"{answer.id}: {expected.title!r} ({expected.year}), meant {expected.movie}"
                    + (" [known miss]" if expected.miss else "")
                )
    return Quality(titles, in_movielens, correct, len(wrong), missed), wrong
