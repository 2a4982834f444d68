"""NIR's three chained prompts (Wang & Lim 2023, "Zero-Shot Next-Item Recommendation using Large Pretrained Language
Models", arXiv:2304.03153), in the wording of the authors' code (AGI-Edgerunners/LLM-Next-Item-Rec, three_stage_0_NIR.py,
temp_1..temp_3), and the reading of the third answer.

Each prompt holds the candidate set and the watched movies; step 2 adds step 1's answer, step 3 both answers. Movies are
written "Title (Year)" (the reference writes bare titles: ML-1M has movies that share a title, and the year is what the
matcher and the grounded answer's choices read). The third answer's format, "[no. a watched movie - a candidate
movie]", is read by dropping each line's watched movie, so the line's candidate is what the parser and the matcher see.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

import pandas as pd

from dualrec.data.titles import split_year
from dualrec.grounding.matching import TitleIndex, match_title

# The reference's templates, without their leading line break (each is a chat message here, not a completion prompt).
CONTEXT = "Candidate Set (candidate movies): {candidates}.\nThe movies I have watched (watched movies): {watched}.\n"
STEP_1 = "Step 1: What features are most important to me when selecting movies (Summarize my preferences briefly)? \n"
STEP_2_ASKED = (  # step 2 as the second prompt asks it
    "Step 2: Selecting the most featured movies from the watched movies according to my preferences "
    "(Format: [no. a watched movie.]). \n"
)
STEP_2_RECALLED = (  # step 2 as the third prompt recalls it (the reference words it differently there)
    "Step 2: Selecting the most featured movies (at most 5 movies) from the watched movies according to my preferences "
    "in descending order (Format: [no. a watched movie.]). \n"
)
STEP_3 = (
    "Step 3: Can you recommend 10 movies from the Candidate Set similar to the selected movies I've watched "
    "(Format: [no. a watched movie - a candidate movie])?.\n"
)
OPEN = "Answer: \n"
ANSWERED = "Answer: {answer}.\n"

_NUMBERED = re.compile(r"^\s*\[?\s*(?P<number>\d{1,3}[.):])\s*(?P<rest>.*?)\s*\]?\s*$")
_PAIR = re.compile(r"\s+(?:-{1,2}>?|<-{1,2}|[–—→])\s+")  # "Heat (1995) - Ronin (1998)", "Heat <- Ronin"


def movie_name(movies: pd.DataFrame, movie_id: int) -> str:
    """A movie as the prompts write it: 'Toy Story (1995)'."""
    movie = movies.loc[movie_id]
    return f"{movie['title']} ({movie['year']})"


def movie_names(movies: pd.DataFrame, movie_ids: Sequence[int]) -> str:
    return ", ".join(movie_name(movies, movie_id) for movie_id in movie_ids)


def nir_prompt(movies: pd.DataFrame, candidates: Sequence[int], watched: Sequence[int], answers: Sequence[str]) -> str:
    """The prompt of step len(answers) + 1 (1, 2 or 3), given the earlier steps' answers."""
    context = CONTEXT.format(candidates=movie_names(movies, candidates), watched=movie_names(movies, watched))
    asked = [STEP_1, STEP_2_ASKED if len(answers) == 1 else STEP_2_RECALLED, STEP_3][: len(answers) + 1]
    recalled = [step + ANSWERED.format(answer=answer.strip()) for step, answer in zip(asked, answers)]
    return context + "".join(recalled) + asked[len(answers)] + OPEN


def candidate_lines(answer: str, index: TitleIndex, watched: Collection[int]) -> str:
    """The answer with the watched movie dropped from each "[1. a watched movie - a candidate movie]" line ("1. a
    candidate movie"); a line whose text before the dash names no watched movie is kept whole."""
    lines = []
    for line in answer.splitlines():
        numbered = _NUMBERED.match(line)
        if numbered:
            rest = numbered["rest"]
            pair = next((found for found in _PAIR.finditer(rest) if names_watched(index, rest[: found.start()], watched)), None)
            line = f"{numbered['number']} {rest[pair.end() :] if pair else rest}"
        lines.append(line)
    return "\n".join(lines)


def names_watched(index: TitleIndex, text: str, watched: Collection[int]) -> bool:
    """Whether a written title ("Heat (1995)", "Heat") is matched to one of the watched movie ids."""
    title, year = split_year(text.strip().strip("[]\"'*"))
    return bool(title) and match_title(index, title, year).movie_id in watched
