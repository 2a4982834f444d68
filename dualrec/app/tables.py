"""What the app shows, as plain records and tables (no Streamlit), so every view can be tested without a browser.

Users and histories, the LSTM's ranking, the title search of the history builder, an answer's matched movies with
their marks, the model choices (presets and LoRA adapters), the dataset's figures and the evaluation results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process, utils

from dualrec.app.streaming import LiveAnswer
from dualrec.config import GENRES, PROMPT_K, PROMPT_TEMPLATE, DataConfig
from dualrec.data.dataset import Dataset, choose_catalogue, describe_user
from dualrec.data.titles import fold_text
from dualrec.errors import DualrecError
from dualrec.evaluation.results import (
    POSTER_BASELINE_PROTOCOL,
    POSTER_RESULTS,
    poster_comparison,
    read_results,
    seeds_text,
    table_rows,
)
from dualrec.grounding.pipeline import Stage2Result, user_history
from dualrec.llm import DEFAULT_PRESET, PRESETS, LLMError, adapter_on, resolve_preset
from dualrec.llm.adapters import ADAPTER_CONFIG, adapter_dir, read_metadata
from dualrec.llm.presets import ADAPTER_SEPARATOR, CUSTOM, ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, engine_for

if TYPE_CHECKING:
    from dualrec.ranking.lstm import LSTMRecommender

MAX_HISTORY = DataConfig().window  # a built history holds 1 to 30 movies, the LSTM's window
MOVIELENS_URL = "https://movielens.org/movies/{movie_id}"
SEARCH_CUTOFF = 50.0
EVAL_COMMANDS = (
    "dualrec train lstm --profile quick",
    "dualrec evaluate --systems lstm,mostpop",
    "dualrec evaluate --protocol freeform --model smollm2-135m --limit 50",
)


# ---- movies and users ----------------------------------------------------------------------------------------------


def movie_label(movies: pd.DataFrame, movie_id: int) -> str:
    """'A Bug's Life (1998)': a movie as people write it."""
    movie = movies.loc[movie_id]
    return f"{movie['title']} ({movie['year']})" if pd.notna(movie["year"]) else movie["title"]


def movie_table(dataset: Dataset, movie_ids: Sequence[int]) -> pd.DataFrame:
    """Title, year, genres and catalogue membership of movies, in the given order."""
    movies = dataset.movies.loc[list(movie_ids)]
    return pd.DataFrame(
        {
            "movie_id": movies.index,
            "title": movies["title"].to_numpy(),
            "year": movies["year"].to_numpy(),
            "genres": [", ".join(g) for g in movies["genres"]],
            "in_catalogue": dataset.item_of(movies.index.to_numpy()) >= 0,
        }
    )


@dataclass(frozen=True)
class HistoryChoice:
    """The history the Recommend page works on, and what is known about what came next."""

    history: list[int]  # movie ids, oldest first: what the LSTM and the prompt read
    watched: set[int]  # movies marked "already watched" in answers
    next_movie: int | None = None  # a test or validation user's real next movie
    revealed: bool = False  # whether the page may say it (hits and misses)


@dataclass(frozen=True)
class UserView:
    """A MovieLens user as the Recommend page shows them."""

    profile: dict  # describe_user: gender, age group and occupation decoded
    history: pd.DataFrame  # chronological ratings, the held-out movie and everything after it left out
    prompt_history: list[int]  # movie ids the LSTM and the prompt read (pipeline.user_history)
    next_movie: int | None  # the held-out movie of a test or validation user, behind "reveal"
    hidden: int  # ratings left out of `history`


def held_out_movie(dataset: Dataset, user_id: int) -> int | None:
    """The movie a test or validation user really watched next (their evaluation case's target), else None."""
    split = dataset.split_of(user_id)
    cases = dataset.cases.get(split) if split else None
    rows = np.flatnonzero(cases.users == user_id) if cases is not None else []
    return int(dataset.catalogue[cases.targets[rows[-1]]]) if len(rows) else None


def user_view(dataset: Dataset, user_id: int) -> UserView:
    """Profile, visible history and prompt history of a user; raises UnknownUserError / DualrecError with advice."""
    profile = describe_user(dataset, user_id)
    prompt_history = user_history(dataset, user_id)
    table = dataset.history(user_id)
    next_movie = held_out_movie(dataset, user_id)
    cut = int(np.flatnonzero(table["movie_id"].to_numpy() == next_movie)[0]) if next_movie is not None else len(table)
    shown = table.iloc[:cut].assign(genres=lambda t: t["genres"].map(", ".join))
    columns = ["date", "movie_id", "title", "year", "genres", "rating", "in_catalogue"]
    return UserView(profile, shown[columns].reset_index(drop=True), prompt_history, next_movie, len(table) - cut)


def sample_test_users(dataset: Dataset, limit: int = 12) -> list[int]:
    """A few test users, whose real next movie can be revealed."""
    return [int(u) for u in dataset.split_users["test"][:limit]]


# ---- the history builder -------------------------------------------------------------------------------------------


def _search_key(text: str) -> str:
    return utils.default_process(fold_text(text))


def search_catalogue(dataset: Dataset, query: str, limit: int = 8) -> list[int]:
    """Catalogue movies whose 'Title (year)' is closest to a typed query (rapidfuzz WRatio), best first."""
    if not query.strip():
        return []
    labels = {int(m): movie_label(dataset.movies, int(m)) for m in dataset.catalogue}
    found = process.extract(query, labels, scorer=fuzz.WRatio, processor=_search_key, limit=limit, score_cutoff=SEARCH_CUTOFF)
    return [movie_id for _, _, movie_id in found]


def add_movie(history: list[int], movie_id: int) -> list[int]:
    """The history with a movie appended; a movie already there or a 31st movie is refused with a message."""
    if movie_id in history:
        raise DualrecError("That movie is already in the history.")
    if len(history) >= MAX_HISTORY:
        raise DualrecError(f"A history holds at most {MAX_HISTORY} movies (the LSTM's window); remove one first.")
    return [*history, movie_id]


def move_movie(history: list[int], index: int, offset: int) -> list[int]:
    """The history with the movie at `index` moved by `offset` places (kept inside the list)."""
    target = min(max(index + offset, 0), len(history) - 1)
    moved = list(history)
    moved.insert(target, moved.pop(index))
    return moved


# ---- the LSTM ------------------------------------------------------------------------------------------------------


def lstm_ranking(dataset: Dataset, lstm: LSTMRecommender, history: Sequence[int], k: int = 10) -> pd.DataFrame | None:
    """The LSTM's top k after a history of movie ids (watched movies excluded); None without catalogue movies."""
    items = dataset.item_of(list(history))
    items = items[items >= 0]
    if not len(items):
        return None
    ranking = lstm.top_k(items, k)
    table = movie_table(dataset, dataset.catalogue[ranking.items].tolist())
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["label"] = [movie_label(dataset.movies, m) for m in table["movie_id"]]
    table["probability"] = ranking.probabilities.astype(float)
    return table


# ---- answers -------------------------------------------------------------------------------------------------------


def answer_rows(dataset: Dataset, result: Stage2Result, watched: set[int], next_movie: int | None = None) -> pd.DataFrame:
    """One row per recommended title: what was written, the MovieLens movie it names, the match score and marks."""
    rows = []
    for rank, match in enumerate(result.titles, start=1):
        known = match.movie_id is not None
        in_catalogue = known and bool(dataset.item_of([match.movie_id])[0] >= 0)
        marks = [
            "in the 1,000-movie catalogue" if in_catalogue else "outside the catalogue" if known else "not in MovieLens",
            *(["already watched"] if known and match.movie_id in watched else []),
            *(["the real next movie"] if known and match.movie_id == next_movie else []),
        ]
        rows.append(
            {
                "rank": rank,
                "written": match.title + (f" ({match.year})" if match.year else ""),
                "movie": movie_label(dataset.movies, match.movie_id) if known else None,
                "score": match.score,
                "marks": " · ".join(marks),
                "link": MOVIELENS_URL.format(movie_id=match.movie_id) if known else None,
                "in_movielens": known,
                "in_catalogue": in_catalogue,
                "watched": known and match.movie_id in watched,
            }
        )
    return pd.DataFrame(rows)


def hit_message(dataset: Dataset, result: Stage2Result, next_movie: int) -> str:
    """Whether the user's real next movie is among an answer's recommendations, and where."""
    title = movie_label(dataset.movies, next_movie)
    if next_movie in result.recommended:
        return f"Hit: the real next movie, {title}, is #{result.recommended.index(next_movie) + 1} of this answer."
    return f"Miss: the real next movie, {title}, is not among this answer's movies."


def overlap_lists(lstm_pick: int | None, results: dict[str, Stage2Result | None]) -> dict[str, list[int]]:
    """The lists whose genres are compared with the history's: the LSTM pick and each model's matched movies."""
    lists = {"LSTM pick": [lstm_pick]} if lstm_pick is not None else {}
    return lists | {name: result.recommended for name, result in results.items() if result is not None and result.recommended}


def status_line(answer: LiveAnswer, queued: bool, stopped: bool = False) -> str:
    """A column's progress in words: waiting, streaming (tokens so far, time to first token, rate), done or stopped."""
    if answer.first_chunk_s is None:
        if answer.done or stopped:
            return "stopped before the first token" if stopped else "finished without text"
        return "waiting for the model: another session is using it" if queued else "waiting for the first token…"
    rate = answer.chunks_per_s
    figures = f"{len(answer.chunks)} tokens · first token {answer.first_chunk_s:.2f} s" + (
        f" · {rate:.1f} tokens/s" if rate else ""
    )
    if answer.done:
        return f"{'stopped' if stopped else 'done'} in {answer.finished_s:.1f} s · {figures}"
    return f"{'stopping' if stopped else 'generating'}… {figures}"


# ---- models --------------------------------------------------------------------------------------------------------


def find_adapters(models_dir: Path) -> list[str]:
    """'PRESET+ADAPTER' specs of the LoRA adapters (peft folders, training checkpoints aside) under the models folder,
    the adapter as a path relative to it (how dualrec.llm.peft_backend reads a spec)."""
    by_model = {preset.model: name for name, preset in PRESETS.items()}
    specs = []
    for config in sorted(models_dir.glob(f"**/{ADAPTER_CONFIG}")) if models_dir.is_dir() else []:
        folder = config.parent.relative_to(models_dir)
        if any(part.startswith("checkpoint-") for part in folder.parts):
            continue
        try:
            base = json.loads(config.read_text()).get("base_model_name_or_path", "")
            trained_on = read_metadata(models_dir / folder).get("base", {}).get("preset")
        except (OSError, ValueError, AttributeError):
            continue
        specs.append(f"{trained_on or by_model.get(base, base)}{ADAPTER_SEPARATOR}{folder}")
    return specs


def model_choices(models_dir: Path) -> list[str]:
    """Every model a column can run: the presets, an endpoint or local model from the environment, the adapters."""
    return [*PRESETS, CUSTOM, *find_adapters(models_dir)]


def default_models(choices: Sequence[str]) -> tuple[str, str]:
    """Column A: the embedded base model; column B: its LoRA adapter when one exists, else the same base model."""
    return DEFAULT_PRESET, adapter_on(DEFAULT_PRESET, choices) or DEFAULT_PRESET


@dataclass(frozen=True)
class PromptChoice:
    """A prompt template and how many movies it asks for."""

    template: str
    k: int


def trained_prompt(spec: str) -> PromptChoice | None:
    """The prompt a model was fine-tuned on, as its adapter's metadata records it; None for a model without an adapter,
    or an adapter whose metadata does not say (made elsewhere, or unreadable)."""
    _, separator, adapter = spec.partition(ADAPTER_SEPARATOR)
    if not separator:
        return None
    try:
        examples = read_metadata(adapter_dir(adapter)).get("examples", {})
        return PromptChoice(examples["template"], int(examples["targets"])) if examples.get("template") else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def default_prompt(specs: Sequence[str]) -> tuple[PromptChoice, str]:
    """The prompt both columns start with, and why: the one a column's adapter was trained on (the first column's
    first), else the poster's prompt, which no model here was trained on."""
    for label, spec in zip("AB", specs):
        if trained := trained_prompt(spec):
            return trained, f"the prompt {label}'s adapter was trained on"
    return PromptChoice(PROMPT_TEMPLATE, PROMPT_K), "the poster's prompt"


def prompt_caption(spec: str, template: str, k: int) -> str:
    """What a column says about its prompt: the one its adapter was trained on, or how it differs from it."""
    trained = trained_prompt(spec)
    if trained is None:
        why = "its adapter's training prompt is not recorded" if ADAPTER_SEPARATOR in spec else "not fine-tuned on a prompt"
        return f"Prompt: {template}, K {k} ({why})."
    if (trained.template, trained.k) == (template, k):
        return f"Prompt: {template}, K {k}: the prompt its adapter was trained on."
    return f"Prompt: {template}, K {k}; its adapter was trained on {trained.template}, K {trained.k}: this prompt is new to it."


def model_description(spec: str) -> str:
    base, _, adapter = spec.partition("+")
    preset = PRESETS.get(base)
    if base == CUSTOM:
        text = f"an OpenAI-compatible endpoint ({ENV_BASE_URL}, {ENV_MODEL}, {ENV_API_KEY}) or a local model ({ENV_MODEL})"
    else:
        text = preset.description if preset else f"{base} (a local model)"
    if not adapter:
        return text
    if preset and engine_for(preset) == "llama.cpp":
        engine = "llama.cpp, the adapter converted to a GGUF LoRA"
    else:
        engine = "transformers, the GGUF weights dequantized" if preset and preset.gguf_file else "transformers"
    return f"{text}, with the LoRA adapter {adapter} (run by {engine}){adapter_training_note(adapter)}"


def adapter_training_note(adapter: str) -> str:
    """What an adapter's metadata says it was trained for (generation or ranking), and whether its training stopped
    early; nothing for an adapter made elsewhere."""
    try:
        metadata = read_metadata(adapter_dir(adapter))
        examples = metadata.get("examples", {})
    except (OSError, ValueError, AttributeError):
        return ""
    if not metadata:
        return ""
    if metadata.get("task") == "rerank":
        task = f"trained for ranking: the hybrid's {examples.get('scorer', 'likelihood')} scorer, not free answers"
    else:
        task = f"trained for generation: the {examples.get('template', 'list-k')} answer of {examples.get('targets', 5)} movies"
    stopped = f"; its training stopped at step {metadata.get('steps')}" if metadata.get("status") == "interrupted" else ""
    return f"; {task}{stopped}"


def runs_locally(spec: str) -> bool:
    """Whether a model spec runs on this machine (llama.cpp or transformers) rather than behind an API."""
    try:
        return engine_for(resolve_preset(spec.partition("+")[0])) != "openai"
    except LLMError:
        return False


def grounding_caption(asked: bool, engine: str | None, replayed: bool = False) -> str:
    """What a column says about grounding: off, on and by which engine, or that its engine cannot ground."""
    if not asked:
        return "Grounded answers off: free text, matched afterwards."
    if replayed:
        return "Grounded answers: a recorded grounded answer."
    if engine is None:
        return "Grounded answers asked, but this engine cannot ground: its answer is free text, NOT grounded."
    return f"Grounded answers: only real, unwatched catalogue movies, by {engine}."


# ---- the dataset's figures -----------------------------------------------------------------------------------------


def ratings_per_user(dataset: Dataset) -> pd.Series:
    return dataset.ratings.groupby("user_id").size().rename("ratings")


def popularity(dataset: Dataset) -> pd.DataFrame:
    """Every rated movie by number of ratings (rank 1 = most rated), the share of ratings up to it, the catalogue mark."""
    movie_ids, counts = choose_catalogue(dataset.ratings, dataset.ratings["movie_id"].nunique())  # the catalogue's order
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(counts) + 1),
            "movie_id": movie_ids,
            "ratings": counts,
            "cumulative_share": counts.cumsum() / counts.sum(),
            "in_catalogue": dataset.item_of(movie_ids) >= 0,
        }
    )


def genre_counts(dataset: Dataset) -> pd.DataFrame:
    """Per genre: movies in movies.dat, movies in the catalogue, and its share of all ratings."""
    vectors = np.stack(dataset.movies["genre_vector"].to_numpy())
    in_catalogue = dataset.item_of(dataset.movies.index.to_numpy()) >= 0
    per_movie = dataset.ratings["movie_id"].value_counts().reindex(dataset.movies.index, fill_value=0).to_numpy()
    return pd.DataFrame(
        {
            "genre": GENRES,
            "movies": vectors.sum(axis=0),
            "catalogue_movies": vectors[in_catalogue].sum(axis=0),
            "rating_share": (vectors * per_movie[:, None]).sum(axis=0) / per_movie.sum(),
        }
    )


# ---- evaluation results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """Every entry of the results files found, each with the file it came from, and the files that could not be read."""

    entries: list[dict]
    problems: list[str]


def load_results(folders: Sequence[Path]) -> Results:
    entries, problems = [], []
    for path in sorted({p for folder in folders if folder.is_dir() for p in folder.glob("*.json")}):
        try:
            document = read_results(path)
        except DualrecError as error:
            problems.append(str(error))
            continue
        entries += [entry | {"file": path.name, "protocol_note": protocol_note(document, entry)} for entry in document["results"]]
    return Results(entries, problems)


def protocol_note(document: dict, entry: dict) -> str:
    """How an entry was scored, in words: the protocol, its candidates and their seeds, the cases and the intervals."""
    extra = entry.get("extra", {})
    candidates = extra.get("candidates") or ("free-form answers, matched to MovieLens" if entry["protocol"] == "freeform" else "")
    boot = document.get("bootstrap", {})
    level = f"{boot.get('level', 0.95):.0%} bootstrap CI over {boot.get('samples', '?')} resamples"
    cases = f"{entry['cases']} {document['data'].get('split', 'test')} cases"
    return "; ".join(part for part in (f"{entry['protocol']}: {candidates}", seeds_note(extra), cases, level) if part)


def seeds_note(extra: dict) -> str:
    """The seeds that drew an entry's candidates ('negative seeds 0, 1'), so that rows of different draws tell apart."""
    named = {"negative_seeds": "negative seed", "candidate_seeds": "candidate seed"}
    return ", ".join(seeds_text(label, seeds) for key, label in named.items() if (seeds := extra.get(key)))


def our_table(entries: list[dict]) -> pd.DataFrame:
    """Our rows: system, protocol, each metric as 'value [low, high]' (± spread over negative seeds), how scored."""
    rows = table_rows(entries)
    for row, entry in zip(rows, entries):
        row |= {"cases": entry["cases"], "how": entry["protocol_note"], "file": entry["file"]}
    return pd.DataFrame(rows)


def metric_frame(entries: list[dict], metric: str) -> pd.DataFrame:
    """One metric of every entry that has it: value, interval and results file, for a chart."""
    columns = ["system", "protocol", "value", "low", "high", "file"]
    rows = [
        [e["system"], e["protocol"], m["value"], m["low"], m["high"], e.get("file", "")]
        for e in entries
        if (m := e["metrics"].get(metric))
    ]
    return pd.DataFrame(rows, columns=columns)


def poster_table() -> pd.DataFrame:
    return pd.DataFrame(POSTER_RESULTS)


def poster_protocol_frame(entries: list[dict]) -> pd.DataFrame:
    """The poster's baseline rows beside ours under the poster protocol on its 150 training sessions, a row per poster
    system: per metric the poster's figure, marked ⚠ where it lies outside our interval, and ours with the interval
    (blank: no row of ours yet)."""
    rows: dict[str, dict[str, str]] = {}
    for figure in poster_comparison(entries):
        row = rows.setdefault(figure["poster system"], {"poster's row": figure["poster system"], "ours": figure["ours"] or ""})
        metric, ours = figure["metric"], figure["ours"]
        row[f"{metric} poster"] = ("⚠ " if figure["outside"] else "") + f"{figure['poster']:.4f}"
        row[f"{metric} ours"] = f"{figure['value']:.4f} [{figure['low']:.3f}, {figure['high']:.3f}]" if ours else ""
        if figure["as_po4isr"] is not None:
            row[f"{metric} ours"] += f"; PO4ISR's way {figure['as_po4isr']:.4f}"
    return pd.DataFrame(list(rows.values()))


def system_key(name: str) -> str:
    """A system's name as the poster and `dualrec evaluate` both spell it: 'GRU4Rec' and 'gru4rec' are one key, and so
    are 'UniSRec' and 'unisrec (from scratch, ...)' (a row's setting in brackets)."""
    return name.split(" (")[0].lower().replace("-", "").replace(" ", "")


def poster_baselines_without_results(entries: list[dict]) -> tuple[list[str], list[str]]:
    """The poster's baselines that have no row of ours: (those `dualrec evaluate` can run, those not implemented yet)."""
    from dualrec.ranking.registry import system_names

    ours = {system_key(entry["system"]) for entry in entries}
    missing = [
        row["system"]
        for row in POSTER_RESULTS
        if row["protocol"] == POSTER_BASELINE_PROTOCOL and system_key(row["system"]) not in ours
    ]
    implemented = {system_key(name) for name in system_names()}
    return [name for name in missing if system_key(name) in implemented], [
        name for name in missing if system_key(name) not in implemented
    ]


def evaluate_command(poster_names: list[str]) -> str:
    """The `dualrec evaluate` command that scores these of the poster's baselines."""
    from dualrec.ranking.registry import system_names

    by_key = {system_key(name): name for name in system_names()}
    return f"dualrec evaluate --systems {','.join(by_key[system_key(name)] for name in poster_names)}"


def answer_files(entries: list[dict], folders: Sequence[Path]) -> list[tuple[str, Path]]:
    """(system, file) of the saved free-form answers that exist (as recorded, or beside the results)."""
    found = []
    for entry in entries:
        recorded = entry.get("options", {}).get("answers")
        if not recorded:
            continue
        candidates = [Path(recorded), *(folder / Path(recorded).name for folder in folders)]
        path = next((p for p in candidates if p.is_file()), None)
        if path:
            found.append((entry["system"], path))
    return found
