"""Stage 1: the multi-modal LSTM that reads a user's watching order (docs/design.md §3).

The model's only input is a batch of histories of catalogue items, oldest first, left-padded with PAD_ITEM. It looks
up each movie's title tokens and genres itself, from constant tables stored among its weights, so a saved `.keras`
file needs nothing but item ids to run, and padded steps are masked so histories of 1 to 30 movies all work.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from dualrec.config import LSTM_MODEL_FILE, LSTM_TRAIN_COMMAND, LSTMConfig, paths  # noqa: E402
from dualrec.data.dataset import PAD_ITEM, Dataset, Windows, pad_history  # noqa: E402
from dualrec.data.features import CatalogueFeatures, catalogue_features  # noqa: E402
from dualrec.data.titles import PAD_TOKEN  # noqa: E402
from dualrec.errors import DualrecError  # noqa: E402

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
VOCABULARY_FILE = "vocabulary.json"
FORMAT_VERSION = 1
PUBLIC_GENRE_DIM = 64  # the public code's Dense(64) over genres
PUBLIC_HIDDEN_DIM = 256  # and its Dense(256) before the softmax
SCORE_BATCH = 1024


class MissingModelError(DualrecError):
    """No trained LSTM where one was expected."""


class ModelMismatchError(DualrecError):
    """A saved LSTM was trained on other data or another split than the one in use."""


def default_model_dir() -> Path:
    return paths().lstm


# ---- the model -----------------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="dualrec")
class StepFeatures(keras.layers.Layer):
    """Items (n, steps) -> per-step [item embedding | mean title-token embedding | genres], masking PAD_ITEM steps.

    The title tokens and genre multi-hots of the catalogue are non-trainable weights, set once with `set_tables`.
    `genre_dim` None feeds the raw 18-d multi-hot (the poster); a number passes it through Dense+ReLU (public code).
    """

    def __init__(
        self,
        catalogue_size: int,
        vocabulary_size: int,
        title_tokens: int,
        genre_count: int,
        item_dim: int,
        title_dim: int,
        genre_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.catalogue_size, self.vocabulary_size, self.title_tokens = catalogue_size, vocabulary_size, title_tokens
        self.genre_count, self.item_dim, self.title_dim, self.genre_dim = genre_count, item_dim, title_dim, genre_dim
        self.item_embedding = keras.layers.Embedding(catalogue_size, item_dim, name="item_embedding")
        self.title_embedding = keras.layers.Embedding(vocabulary_size, title_dim, name="title_embedding")
        self.genre_dense = keras.layers.Dense(genre_dim, activation="relu", name="genre_dense") if genre_dim else None

    def build(self, input_shape: tuple) -> None:
        self.title_table = self.add_weight(
            shape=(self.catalogue_size, self.title_tokens),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="title_tokens",
        )
        self.genre_table = self.add_weight(
            shape=(self.catalogue_size, self.genre_count), dtype="float32", initializer="zeros", trainable=False, name="genres"
        )
        self.item_embedding.build((None,))
        self.title_embedding.build((None, self.title_tokens))
        if self.genre_dense is not None:
            self.genre_dense.build((None, self.genre_count))

    def set_tables(self, features: CatalogueFeatures) -> None:
        self.title_table.assign(features.title_tokens)
        self.genre_table.assign(features.genres)

    def call(self, items):
        real = ops.cast(ops.not_equal(self.title_table, PAD_TOKEN), self.compute_dtype)[..., None]
        titles = ops.sum(self.title_embedding(self.title_table) * real, axis=1) / ops.maximum(ops.sum(real, axis=1), 1.0)
        genres = self.genre_table if self.genre_dense is None else self.genre_dense(self.genre_table)
        movie_table = ops.concatenate([titles, genres], axis=-1)  # (C, title_dim + genre features)
        index = ops.maximum(items, 0)  # padded steps read item 0 and are masked out
        return ops.concatenate([self.item_embedding(index), ops.take(movie_table, index, axis=0)], axis=-1)

    def compute_mask(self, items, mask=None):
        return ops.not_equal(items, PAD_ITEM)

    def get_config(self) -> dict:
        names = ("catalogue_size", "vocabulary_size", "title_tokens", "genre_count", "item_dim", "title_dim", "genre_dim")
        return super().get_config() | {name: getattr(self, name) for name in names}


def build_model(config: LSTMConfig, features: CatalogueFeatures) -> keras.Model:
    """The poster's network (or the public code's variant) over the catalogue described by `features`."""
    catalogue_size, title_tokens = features.title_tokens.shape
    public = config.variant == "public"
    items = keras.Input(shape=(None,), dtype="int32", name="items")
    steps = StepFeatures(
        catalogue_size,
        len(features.vocabulary) + 2,  # + pad and unknown
        title_tokens,
        features.genres.shape[1],
        config.item_dim,
        config.title_dim,
        PUBLIC_GENRE_DIM if public else None,
        name="step_features",
    )
    x = steps(items)
    x = keras.layers.LSTM(config.lstm_units[0], return_sequences=True, name="lstm_1")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout_1")(x)
    x = keras.layers.LSTM(config.lstm_units[1], name="lstm_2")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout_2")(x)
    if public:
        x = keras.layers.Dense(PUBLIC_HIDDEN_DIM, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(catalogue_size, activation="softmax", name="next_item")(x)
    model = keras.Model(items, outputs, name=f"dualrec_lstm_{config.variant}")
    steps.set_tables(features)
    return model


def compile_model(model: keras.Model, config: LSTMConfig) -> None:
    """Adam on sparse categorical cross-entropy; hr@5 is top-5 accuracy over windows (watched movies not excluded)."""
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="hr@5")],
    )


# ---- training ------------------------------------------------------------------------------------------------------


class WindowBatches(keras.utils.PyDataset):
    """(histories, targets) batches cut from Windows on demand, reshuffled each epoch by a seeded generator."""

    def __init__(self, windows: Windows, batch_size: int, shuffle: bool, seed: int = 0):
        super().__init__()
        self.windows, self.batch_size, self.shuffle = windows, batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(windows)) if shuffle else np.arange(len(windows))

    def __len__(self) -> int:
        return -(-len(self.windows) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.windows.histories[rows], self.windows.targets[rows]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = self.rng.permutation(len(self.windows))


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the epoch when one more epoch of the same length would end past the budget."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds, self.stopped = minutes * 60, False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed * (epoch + 2) / (epoch + 1) > self.seconds:
            self.model.stop_training = self.stopped = True


def run_engine(
    model: keras.Model, train: Windows, val: Windows, config: LSTMConfig, callbacks: list, verbose: int | str
) -> tuple[keras.callbacks.History, dict]:
    """`config.engine`'s training loop with the callbacks and Keras's progress lines; the History, and the torch
    engine's threads and version."""
    if config.engine == "keras":
        history = model.fit(
            WindowBatches(train, config.batch_size, shuffle=True, seed=config.seed),
            validation_data=WindowBatches(val, config.batch_size, shuffle=False),
            epochs=config.epochs,
            callbacks=callbacks,
            verbose=verbose,
        )
        return history, {}
    from dualrec.ranking import lstm_torch  # torch loads only to train

    steps = -(-len(train) // config.batch_size)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose, epochs=config.epochs, steps=steps
    )
    threads = lstm_torch.fit(model, train, val, config, callback_list)
    return model.history, {"threads": threads, "torch": lstm_torch.torch.__version__}


def config_from_dict(values: dict) -> LSTMConfig:
    """The LSTMConfig saved in a model's metadata (JSON turns its tuple into a list)."""
    return LSTMConfig(**(values | {"lstm_units": tuple(values["lstm_units"])}))


def train_lstm(dataset: Dataset, config: LSTMConfig | None = None, verbose: int | str = "auto") -> LSTMRecommender:
    """Train on the training split's windows, stopping early on the validation windows; test users are never read."""
    config = config or LSTMConfig()
    train, val = dataset.windows["train"], dataset.windows["val"]
    if not len(train) or not len(val):
        raise DualrecError("The LSTM needs training and validation windows; this data has too few eligible users.")
    keras.utils.set_random_seed(config.seed)
    features = catalogue_features(dataset)
    model = build_model(config, features)
    compile_model(model, config)
    stopper = keras.callbacks.EarlyStopping(
        monitor=config.monitor,
        mode="min" if config.monitor == "val_loss" else "max",
        patience=config.patience,
        restore_best_weights=True,
    )
    budget = TimeBudget(config.max_minutes or float("inf"))
    started = time.perf_counter()
    history, engine = run_engine(model, train, val, config, [stopper, budget], verbose)
    seconds = time.perf_counter() - started
    epochs = [{name: round(float(values[i]), 5) for name, values in history.history.items()} for i in range(len(history.epoch))]
    best = stopper.best_epoch
    metadata = {
        "format": FORMAT_VERSION,
        "data": {"fingerprint": dataset.fingerprint, "config": dataset.config.as_dict()},
        "catalogue": dataset.catalogue.tolist(),
        "lstm": config.as_dict(),
        "seed": config.seed,
        "epochs_run": len(epochs),
        "stopped_by": "early stopping" if stopper.stopped_epoch else "time budget" if budget.stopped else "epoch limit",
        "best_epoch": best + 1,
        "val": epochs[best],
        "history": epochs,
        "train_windows": len(train),
        "val_windows": len(val),
        "training_seconds": round(seconds, 1),
        "samples_per_second": round(len(train) * len(epochs) / seconds, 1),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threads": engine.get("threads"),
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__, "torch": engine.get("torch")},
    }
    return LSTMRecommender(model, json.loads(json.dumps(metadata)), features.vocabulary)  # as it reads back


# ---- inference -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranking:
    """The top-k items for one history, best first, with the model's probability of each."""

    items: np.ndarray  # (k,) catalogue items
    probabilities: np.ndarray  # (k,) float


def history_mask(histories: np.ndarray, catalogue_size: int) -> np.ndarray:
    """(n, C) True where the item appears in that row's history (PAD_ITEM ignored)."""
    rows, steps = np.nonzero(histories != PAD_ITEM)
    mask = np.zeros((len(histories), catalogue_size), dtype=bool)
    mask[rows, histories[rows, steps]] = True
    return mask


class LSTMRecommender:
    """A trained LSTM: batched scores for the harness, fast top-k and top-1 for the app and the prompts."""

    name = "lstm"

    def __init__(self, model: keras.Model, metadata: dict, vocabulary: dict[str, int]):
        self.model, self.metadata, self.vocabulary = model, metadata, vocabulary
        self.window = int(metadata["data"]["config"]["window"])
        self.catalogue = np.asarray(metadata["catalogue"], dtype=np.int32)
        # A direct eager call runs the LSTM loop step by step in Python (~0.9 s); compiled with XLA it takes a few ms.
        spec = tf.TensorSpec((None, self.window), tf.int32)
        self._forward = tf.function(lambda x: self.model(x, training=False), input_signature=[spec], jit_compile=True)

    @property
    def options(self) -> dict:
        """What the results files record about this system."""
        keys = ("lstm", "epochs_run", "stopped_by", "best_epoch", "val", "training_seconds", "seed")
        return {key: self.metadata[key] for key in keys if key in self.metadata}

    def fit(self, dataset: Dataset) -> None:
        """Retrain from scratch on `dataset` with this model's options (the Recommender interface)."""
        trained = train_lstm(dataset, config_from_dict(self.metadata["lstm"]), verbose=0)
        vars(self).update(vars(trained))

    def probabilities(self, histories: np.ndarray) -> np.ndarray:
        """(n, C) next-item probabilities for (n, window) padded histories, in batches of SCORE_BATCH."""
        histories = np.asarray(histories, dtype=np.int32)
        parts = [self._forward(histories[i : i + SCORE_BATCH]).numpy() for i in range(0, len(histories), SCORE_BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.catalogue)), dtype=np.float32)

    def score(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        return self.probabilities(histories)

    def top1(self, histories: np.ndarray) -> np.ndarray:
        """(n,) the most probable item per (n, window) padded history, movies in the history excluded."""
        probabilities = self.probabilities(histories)
        probabilities[history_mask(histories, len(self.catalogue))] = -np.inf
        return probabilities.argmax(axis=1).astype(np.int32)

    def top_k(self, history_items: np.ndarray | list[int], k: int = 10, exclude_watched: bool = True) -> Ranking:
        """The k most probable next items after a history of any length (the model reads its last `window`).

        With exclude_watched, every item of `history_items` is excluded, not only the last `window`.
        """
        items = np.asarray(history_items, dtype=np.int32)
        if not len(items):
            raise DualrecError("The history is empty: give at least one movie.")
        if items.min() < 0 or items.max() >= len(self.catalogue):
            raise DualrecError(f"History items must be catalogue positions 0..{len(self.catalogue) - 1}.")
        probabilities = self._forward(pad_history(items, self.window)[None]).numpy()[0]
        candidates = probabilities.copy()
        if exclude_watched:
            candidates[items] = -np.inf
        best = np.argsort(-candidates, kind="stable")[:k]
        return Ranking(best.astype(np.int32), probabilities[best])

    # ---- persistence ----

    def save(self, folder: str | Path) -> Path:
        """Write model.keras, the title vocabulary and metadata.json into `folder`, replacing it atomically."""
        folder = Path(folder)
        staging = folder.with_name(folder.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.model.save(staging / LSTM_MODEL_FILE)
        (staging / VOCABULARY_FILE).write_text(json.dumps(self.vocabulary))
        (staging / METADATA_FILE).write_text(json.dumps(self.metadata, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        return folder

    def check_data(self, dataset: Dataset, strict: bool) -> None:
        """Refuse another catalogue; refuse (strict) or warn about other data files or split options."""
        if not np.array_equal(self.catalogue, dataset.catalogue):
            raise ModelMismatchError(
                f"This LSTM was trained on another movie catalogue; retrain it on this data: {LSTM_TRAIN_COMMAND}"
            )
        trained = self.metadata["data"]
        differences = []
        if trained["fingerprint"] != dataset.fingerprint:
            differences.append(f"data files (fingerprint {trained['fingerprint'][:8]} vs {dataset.fingerprint[:8]})")
        if not dataset.config.trains_like(trained["config"]):
            differences.append("data options (split, windows)")
        if not differences:
            return
        message = f"This LSTM was trained on other {' and '.join(differences)}"
        if strict:
            raise ModelMismatchError(
                f"{message}, so its training users may include these test users; retrain: {LSTM_TRAIN_COMMAND}"
            )
        log.warning("%s; its recommendations still use the same catalogue.", message)


def load_lstm(folder: str | Path | None = None, dataset: Dataset | None = None, strict: bool = False) -> LSTMRecommender:
    """A saved LSTM, ready to score; checked against `dataset` when one is given (see LSTMRecommender.check_data)."""
    folder = Path(folder) if folder else default_model_dir()
    if not (folder / LSTM_MODEL_FILE).is_file():
        raise MissingModelError(
            f"No trained LSTM in {folder}. Train one with: {LSTM_TRAIN_COMMAND}"
            + ("" if folder == default_model_dir() else f" --out {folder}")
        )
    model = keras.saving.load_model(folder / LSTM_MODEL_FILE, compile=False)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    vocabulary = json.loads((folder / VOCABULARY_FILE).read_text())
    recommender = LSTMRecommender(model, metadata, vocabulary)
    if dataset is not None:
        recommender.check_data(dataset, strict)
    return recommender
