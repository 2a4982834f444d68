"""Stage 2's prompts (docs/design.md §4) and the answer format the parser reads best.

`poster` is the poster's prompt word for word: the last 5 movies, oldest first, in MovieLens' own title form
("- Bug's Life, A (1998) (Animation, Children's, Comedy)"), the LSTM's top-1, and the request for 3 more. `list-k`
asks for K titles in the fixed ANSWER_FORMAT (for evaluation); `full-history` gives the whole history (up to its
FULL_HISTORY_LIMIT most recent movies) instead of 5.
Without an LSTM pick the prompt says there is none; it never names a movie the LSTM did not choose.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dualrec.config import PROMPT_K, PROMPT_TEMPLATE
from dualrec.errors import DualrecError

TEMPLATES = ("poster", "list-k", "full-history")
POSTER_HISTORY = 5  # the poster's "last 5 movies"
FULL_HISTORY_LIMIT = 50  # full-history shows at most this many of the most recent movies

HEADER = "Below is a user's movie watching history:"
PICK = "Based on this, the system (LSTM) recommends: {pick}."
NO_PICK = "The system (LSTM) has no recommendation for this user."
REQUEST = (
    "Now, as a helpful assistant, recommend {k} more full movie titles with release years and genres that this user "
    "would likely enjoy next."
)
# One recommendation per line, as in the poster's example answer; `format_answer` writes it, `parse_answer` reads it.
ANSWER_FORMAT = "{rank}. {title} ({year}) Genres: {genres}"
LIST_REQUEST = (
    "Now, as a helpful assistant, recommend {k} more movies that this user would likely enjoy next, not movies from "
    "the history. Answer with exactly {k} lines and nothing else, one movie per line, in this format:\n"
    + ANSWER_FORMAT.format(rank=1, title="Title", year="Year", genres="Genre, Genre")
)


def movie_line(movies: pd.DataFrame, movie_id: int) -> str:
    """'- Bug's Life, A (1998) (Animation, Children's, Comedy)': a history line of the poster's prompt."""
    movie = movies.loc[movie_id]
    return f"- {movie['raw_title']} ({', '.join(movie['genres'])})"


def build_prompt(
    movies: pd.DataFrame,
    history: Sequence[int],
    lstm_pick: int | None,
    template: str = PROMPT_TEMPLATE,
    k: int = PROMPT_K,
) -> str:
    """The prompt for a history of movie ids (oldest first) and the LSTM's top-1 movie id (None: no pick)."""
    if template not in TEMPLATES:
        raise DualrecError(f"Unknown prompt template {template!r}; choose one of {', '.join(TEMPLATES)}.")
    if not len(history):
        raise DualrecError("The history is empty: a prompt needs at least one movie.")
    if k < 1:
        raise DualrecError(f"k must be at least 1, not {k}.")
    shown = list(history)[-(FULL_HISTORY_LIMIT if template == "full-history" else POSTER_HISTORY) :]
    pick = NO_PICK if lstm_pick is None else PICK.format(pick=movies.loc[lstm_pick, "raw_title"])
    request = (LIST_REQUEST if template == "list-k" else REQUEST).format(k=k)
    return "\n".join([HEADER, *(movie_line(movies, m) for m in shown), pick, request])


def format_answer(movies: pd.DataFrame, movie_ids: Sequence[int]) -> str:
    """Movies as an answer in ANSWER_FORMAT ("1. The Matrix (1999) Genres: Action, Sci-Fi, Thriller"), one a line.

    The format the parser reads best and the matcher finds exactly: the training target of Stage 3 fine-tuning.
    """
    lines = []
    for rank, movie_id in enumerate(movie_ids, start=1):
        movie = movies.loc[movie_id]
        lines.append(ANSWER_FORMAT.format(rank=rank, title=movie["title"], year=movie["year"], genres=", ".join(movie["genres"])))
    return "\n".join(lines)
