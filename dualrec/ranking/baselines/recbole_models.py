"""SLIM, FPMC, GRU4Rec, NARM, STAMP and SASRec: RecBole 1.2.1's reference models behind the Recommender interface.

Each model is built by RecBole from atomic benchmark files of the training users' sequences (every prefix, at most
`window` items, see recbole_data), trained with Adam on RecBole's own losses (`calculate_loss`) under a budget of
epochs and minutes, with early stopping on NDCG@10 of the validation cases (full ranking, history excluded), and
scores any history through RecBole's own `full_sort_predict`, its columns mapped back to catalogue items.
Hyper-parameters are RecBole's defaults (properties/model/*.yaml and overall.yaml) unless `params` overrides them.

RecBole is an optional extra (requirements-baselines.txt). `import_recbole` makes 1.2.1 work here: numpy 2 lost
aliases RecBole still uses, its SINE module turns on torch's anomaly detection for the whole process (halving
training speed), and torch.utils.tensorboard, which it imports, would load TensorFlow unless told not to.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time
import types
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch

from dualrec.data.dataset import PAD_ITEM, Dataset, prefix_windows
from dualrec.errors import DualrecError
from dualrec.ranking.baselines.fitting import (
    VALIDATION_K,
    TrainingBudget,
    baseline_file,
    device_name,
    early_stopping,
    gradient_steps,
    torch_device,
    validation_ndcg,
)
from dualrec.ranking.baselines.recbole_data import BENCHMARK_PART, write_benchmark

log = logging.getLogger(__name__)

MODELS = {"slim": "SLIMElastic", "fpmc": "FPMC", "gru4rec": "GRU4Rec", "narm": "NARM", "stamp": "STAMP", "sasrec": "SASRec"}
DATASET_NAME = "dualrec"
CACHE_VERSION = 1
SCORE_BATCH = 1024
NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_, "bool8": np.bool_}


class MissingRecBoleError(DualrecError):
    """RecBole, an optional extra, is not installed."""


# The reference runs' budgets on this shared 2-core CPU (one torch thread, 498k training samples; an epoch takes
# roughly 8-25 minutes for GRU4Rec and NARM, twice that for SASRec, 3 for STAMP, 20 s for FPMC; SLIM has no epochs).
BUDGETS = {
    "fpmc": TrainingBudget(max_epochs=100, max_minutes=15),
    "gru4rec": TrainingBudget(max_minutes=60),
    "narm": TrainingBudget(max_minutes=60),
    "stamp": TrainingBudget(max_minutes=30),
    "sasrec": TrainingBudget(max_minutes=90),
}
# The one setting tuned on validation: a training batch of 512 instead of RecBole's 2048, four times the updates per
# epoch (GRU4Rec's validation NDCG@10 after one epoch: 0.104 against 0.052), for the cross-entropy sequence models.
TUNED_PARAMS = dict.fromkeys(("gru4rec", "narm", "stamp", "sasrec"), {"train_batch_size": 512})


@functools.cache
def import_recbole() -> types.SimpleNamespace:
    """Import the parts of RecBole used here, with the compatibility fixes of the module docstring."""
    for alias, target in NUMPY_ALIASES.items():
        if not hasattr(np, alias):
            setattr(np, alias, target)
    # tensorboard's documented switch to its TensorFlow stub; RecBole only needs tensorboard to import.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    try:
        import recbole
        from recbole.config import Config
        from recbole.data import create_dataset
        from recbole.data.dataloader import TrainDataLoader
        from recbole.data.interaction import Interaction
        from recbole.model import sequential_recommender  # (its SINE module enables anomaly detection)
        from recbole.sampler import Sampler
        from recbole.utils import InputType, get_model, init_seed
        from scipy import sparse
    except ImportError as error:
        raise MissingRecBoleError(
            f"RecBole is not installed ({error}): pip install --no-deps -r requirements-baselines.txt"
        ) from error
    torch.autograd.set_detect_anomaly(False)
    return types.SimpleNamespace(
        Config=Config, create_dataset=create_dataset, TrainDataLoader=TrainDataLoader, Interaction=Interaction,
        Sampler=Sampler, InputType=InputType, get_model=get_model, init_seed=init_seed, sparse=sparse,
        SASRec=sequential_recommender.SASRec, version=recbole.__version__,
    )  # fmt: skip


def build_train_set(recbole: types.SimpleNamespace, config):
    """RecBole's dataset from the benchmark files: its training part, ids remapped."""
    with warnings.catch_warnings():  # pandas FutureWarnings from RecBole's own code
        warnings.simplefilter("ignore", FutureWarning)
        return recbole.create_dataset(config).build()[0]


@dataclass
class RecBoleRecommender:
    """One RecBole model (by its key in MODELS), trained on the training users and scored on any history."""

    name: str
    budget: TrainingBudget = TrainingBudget()
    seed: int = 42
    params: dict = field(default_factory=dict)  # RecBole settings that override its defaults
    use_cache: bool = True  # reuse (and keep) the model trained with the same data and options
    training: dict = field(default_factory=dict, init=False)  # what fit() did: epochs, seconds, validation scores
    model: torch.nn.Module | None = field(default=None, init=False, repr=False)
    item_ids: np.ndarray | None = field(default=None, init=False, repr=False)  # RecBole id of each catalogue item
    user_ids: pd.Series | None = field(default=None, init=False, repr=False)  # RecBole id of each training user

    inter_columns = ("user_id", "item_id_list", "item_id")
    gpu_capable = True

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(f"unknown RecBole baseline {self.name!r}; choose from {', '.join(MODELS)}")

    @property
    def settings(self) -> dict:
        """What decides the trained model (with the data): the cache key."""
        return {
            "recbole": import_recbole().version,
            "model": self.title,
            "seed": self.seed,
            "budget": asdict(self.budget),
            "params": self.params,
        }

    @property
    def options(self) -> dict:
        """The settings and what training did, for results files."""
        return self.settings | {"training": self.training}

    def cache_file(self, dataset: Dataset) -> Path:
        """Where the model trained on this data with these options is kept."""
        return baseline_file(self.name, dataset, self.settings, CACHE_VERSION)

    def fit(self, dataset: Dataset) -> None:
        recbole = import_recbole()
        cached = self.cache_file(dataset)
        if self.use_cache and cached.is_file():
            self.load(cached)
            log.info("%s loaded from %s (trained in %s s)", self.name, cached, self.training.get("seconds"))
            return
        started = time.monotonic()
        samples = prefix_windows(dataset, dataset.split_users["train"])
        with tempfile.TemporaryDirectory(prefix="dualrec-recbole-") as folder:
            write_benchmark(samples, dataset.catalogue_size, Path(folder) / DATASET_NAME, DATASET_NAME)
            config = self.recbole_config(recbole, folder, dataset.config.window)
            recbole.init_seed(self.seed, reproducibility=True)
            train_set = build_train_set(recbole, config)
            self.item_ids = train_set.token2id(train_set.iid_field, [str(i) for i in range(dataset.catalogue_size)])
            user_tokens = train_set.field2id_token[train_set.uid_field][1:].astype(np.int64)  # id 0 is RecBole's [PAD]
            self.user_ids = pd.Series(np.arange(1, len(user_tokens) + 1), index=user_tokens)
            self.model = self.build_model(recbole, config, train_set, dataset).to(config["device"])
            self.train(recbole, config, train_set, dataset)
        self.model.eval()
        self.training.update(
            samples=len(samples), seconds=round(time.monotonic() - started, 1), device=device_name(config["device"])
        )
        log.info("%s trained: %s", self.name, self.training)
        if self.use_cache:
            self.save(cached)

    def save(self, file: Path) -> None:
        """The trained RecBole model (pickled whole: rebuilding it would need its dataset) and the id maps."""
        file.parent.mkdir(parents=True, exist_ok=True)
        staging = file.with_suffix(".part")
        torch.save(
            {"model": self.model, "item_ids": self.item_ids, "user_ids": self.user_ids, "training": self.training}, staging
        )
        os.replace(staging, file)

    def load(self, file: Path) -> None:
        import_recbole()  # unpickling needs RecBole's classes, importable only through the fixes
        state = torch.load(file, weights_only=False, map_location=self.device)  # our own cache file, written by save()
        self.model, self.item_ids, self.user_ids = state["model"], state["item_ids"], state["user_ids"]
        self.model.device = self.device  # RecBole models place new tensors on the device they were built for
        self.training = state["training"] | {"loaded_from": str(file)}

    @property
    def device(self) -> torch.device:
        """Where the model trains and scores: the GPU when CUDA is available, else the CPU."""
        return torch_device(self.gpu_capable)

    @property
    def title(self) -> str:
        """The model's name in RecBole (and in results)."""
        return MODELS[self.name]

    def model_class(self, recbole: types.SimpleNamespace) -> type:
        return recbole.get_model(self.title)

    def optimizer(self, config) -> torch.optim.Adam:
        """RecBole's default learner: Adam at the configured learning rate and weight decay."""
        return torch.optim.Adam(self.model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])

    def build_model(self, recbole: types.SimpleNamespace, config, train_set, dataset: Dataset) -> torch.nn.Module:
        """The untrained model on RecBole's training set (`dataset`: ours, for models that read more of it)."""
        return self.model_class(recbole)(config, train_set)

    def recbole_config(self, recbole: types.SimpleNamespace, folder: str, window: int):
        """RecBole's configuration: its defaults for the model, our files, the device, the seed, then `params`."""
        model_class = self.model_class(recbole)
        # BPR models (FPMC, or a sequential model given loss_type BPR) train on one sampled negative per sample
        pairwise = getattr(model_class, "input_type", None) == recbole.InputType.PAIRWISE or self.params.get("loss_type") == "BPR"
        settings = {
            "data_path": folder,
            "checkpoint_dir": folder,  # RecBole reloads any saved dataset it finds there
            "benchmark_filename": [BENCHMARK_PART],
            "load_col": {"inter": list(self.inter_columns), "item": ["item_id"]},
            "alias_of_item_id": [c for c in self.inter_columns if c.startswith("item_id_")],  # one id space for items
            "MAX_ITEM_LIST_LENGTH": window,
            "eval_args": {"order": "TO", "split": {"LS": "valid_and_test"}, "group_by": "user", "mode": "full"},
            "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1} if pairwise else None,
            "seed": self.seed,
            "reproducibility": True,
            "use_gpu": self.device.type == "cuda",
            "show_progress": False,
            "state": "WARNING",
            **self.params,
        }
        with mock.patch.object(sys, "argv", sys.argv[:1]):  # RecBole would read --key=value from our command line
            return recbole.Config(model=model_class, dataset=DATASET_NAME, config_dict=settings)

    def train(self, recbole: types.SimpleNamespace, config, train_set, dataset: Dataset) -> None:
        """Adam on the model's own loss, one validation per epoch; keeps the best epoch's weights."""
        sampler = None
        if config["train_neg_sample_args"]["distribution"] != "none":
            sampler = recbole.Sampler([BENCHMARK_PART], [train_set], config["train_neg_sample_args"]["distribution"]).set_phase(
                BENCHMARK_PART
            )
        loader = recbole.TrainDataLoader(config, train_set, sampler, shuffle=True)
        optimizer = self.optimizer(config)

        def run_epoch(deadline: float) -> float:
            return gradient_steps(optimizer, loader, lambda batch: self.model.calculate_loss(batch.to(self.device)), deadline)

        self.training = early_stopping(self.name, self.model, self.budget, run_epoch, validation_ndcg(self, dataset))

    def score(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise DualrecError(f"{self.name} has not been trained: call fit(dataset) first.")
        parts = []
        with torch.no_grad():
            for start in range(0, len(histories), SCORE_BATCH):
                batch = slice(start, start + SCORE_BATCH)
                parts.append(self.predict(histories[batch], np.asarray(users)[batch]).reshape(len(histories[batch]), -1))
        return np.concatenate(parts)[:, self.item_ids] if parts else np.zeros((0, len(self.item_ids)), np.float32)

    def predict(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        """RecBole's full_sort_predict on the histories: scores over RecBole's item ids."""
        real = histories != PAD_ITEM
        order = np.argsort(~real, axis=1, kind="stable")  # RecBole wants items first, then 0-padding
        items = np.where(np.take_along_axis(real, order, axis=1), self.item_ids[np.take_along_axis(histories, order, axis=1)], 0)
        interaction = import_recbole().Interaction({
            self.model.ITEM_SEQ: torch.from_numpy(items.astype(np.int64)),
            self.model.ITEM_SEQ_LEN: torch.from_numpy(real.sum(axis=1).clip(min=1)),  # an empty history reads one padding step
            self.model.USER_ID: torch.from_numpy(self.user_ids.reindex(users).fillna(0).to_numpy(np.int64)),
        })  # fmt: skip
        return self.model.full_sort_predict(interaction.to(self.device)).cpu().numpy()


class FPMCRecommender(RecBoleRecommender):
    """FPMC (Rendle et al., WWW 2010). It has a user embedding, and our test users were never trained: they are scored
    with RecBole's padding user (id 0), whose embedding is set to the mean of the trained users' embeddings."""

    def predict(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        self.model.UI_emb.weight[0] = self.model.UI_emb.weight[1:].mean(dim=0)  # row 0 is never trained
        return super().predict(histories, users)


class SLIMRecommender(RecBoleRecommender):
    """SLIM (Ning and Karypis, ICDM 2011), RecBole's SLIMElastic: fitted by ElasticNet in its constructor, on the
    training users' interactions (every item after each sequence's first). A history is scored by folding it in as
    a user row, which is what full_sort_predict computes for trained users (their row times the item weights)."""

    inter_columns = ("user_id", "item_id")
    gpu_capable = False  # fitted by scikit-learn, scored with scipy

    @property
    def settings(self) -> dict:
        return {key: value for key, value in super().settings.items() if key != "budget"}  # no epochs to budget

    def train(self, recbole: types.SimpleNamespace, config, train_set, dataset: Dataset) -> None:
        self.training = {
            "epochs": 0,
            f"val_ndcg@{VALIDATION_K}": [validation_ndcg(self, dataset)()],
        }

    def predict(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        rows, cols = np.nonzero(histories != PAD_ITEM)
        shape = (len(histories), self.model.n_items)
        self.model.interaction_matrix = import_recbole().sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, self.item_ids[histories[rows, cols]])), shape=shape
        )
        interaction = import_recbole().Interaction({self.model.USER_ID: torch.arange(len(histories))})
        return self.model.full_sort_predict(interaction).numpy()


def recbole_recommender(name: str, **options) -> RecBoleRecommender:
    """The Recommender for one of MODELS' keys, with its model's fallbacks and (unless given) its budget and params."""
    kinds = {"fpmc": FPMCRecommender, "slim": SLIMRecommender}
    options.setdefault("budget", BUDGETS.get(name, TrainingBudget()))
    options.setdefault("params", dict(TUNED_PARAMS.get(name, {})))
    return kinds.get(name, RecBoleRecommender)(name, **options)
