"""UniSRec's network (Hou et al., "Towards Universal Sequence Representation Learning for Recommender Systems", KDD
2022) on top of RecBole 1.2.1's SASRec, following the authors' code RUCAIBox/UniSRec@05aa5cba2809 (unisrec.py: PWLayer,
MoEAdaptorLayer, UniSRec; data/transform.py: PLMEmb, the pre-training augmentation), module for module and with its
parameter names, so that a checkpoint of theirs loads (finetune.py's load_state_dict(strict=False)).

- Item text vectors (fixed, `plm_embedding`, row 0 pads) pass the MoE adaptor: `n_exps` parametric whitening
  experts (x - b) W, mixed by a softmax gate (gate noise in training); the SASRec transformer reads the adapted
  vectors plus positions (plus the item-ID embedding in the transductive setting); sequence and item vectors are
  L2-normalised and compared by dot product / temperature.
- Fine-tuning loss (and the "from scratch" setting, which is fine-tuning without a pre-trained checkpoint):
  cross-entropy over the whole catalogue of those logits (`calculate_loss`).
- Pre-training losses (`pretrain`): the sequence-item contrastive loss over the batch's target items and the
  sequence-sequence contrastive loss against an augmented view (items dropped, or words of the item text dropped),
  weighted by `lambda`; in-batch sequences with the same target are not negatives.

UniSRecRecommender fits it as RecBoleRecommender fits RecBole's models (the training prefixes, early stopping on the
validation cases, the budget, the cache) and scores with `full_sort_predict`; the settings are unisrec's. The module
imports RecBole when it is imported (the network derives from its SASRec).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dualrec.data.dataset import Dataset
from dualrec.data.text_features import TextEncoder, catalogue_text_features, text_encoder
from dualrec.errors import DualrecError
from dualrec.ranking.baselines.fitting import TrainingBudget, baseline_file, gradient_steps
from dualrec.ranking.baselines.recbole_models import CACHE_VERSION, TUNED_PARAMS, RecBoleRecommender, import_recbole
from dualrec.ranking.baselines.unisrec import NAME, REFERENCE, REFERENCE_PARAMS, UniSRecOptions

log = logging.getLogger(__name__)

_recbole = import_recbole()
TRAIN_STAGES = ("pretrain", "inductive_ft", "transductive_ft")


class PWLayer(nn.Module):
    """One parametric whitening expert: (dropout(x) - b) W."""

    def __init__(self, input_size: int, output_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.bias = nn.Parameter(torch.zeros(input_size))
        self.lin = nn.Linear(input_size, output_size, bias=False)
        nn.init.normal_(self.lin.weight, mean=0.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.dropout(x) - self.bias)


class MoEAdaptorLayer(nn.Module):
    """The mixture-of-experts adaptor: `n_exps` whitening experts mixed by a softmax gate, noisy in training."""

    def __init__(self, n_exps: int, layers: list[int], dropout: float = 0.0, noise: bool = True) -> None:
        super().__init__()
        self.n_exps = n_exps
        self.noisy_gating = noise
        self.experts = nn.ModuleList([PWLayer(layers[0], layers[1], dropout) for _ in range(n_exps)])
        self.w_gate = nn.Parameter(torch.zeros(layers[0], n_exps))
        self.w_noise = nn.Parameter(torch.zeros(layers[0], n_exps))

    def noisy_top_k_gating(self, x: torch.Tensor, train: bool, noise_epsilon: float = 1e-2) -> torch.Tensor:
        logits = x @ self.w_gate
        if self.noisy_gating and train:
            noise_stddev = F.softplus(x @ self.w_noise) + noise_epsilon
            logits = logits + torch.randn_like(logits) * noise_stddev
        return F.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.noisy_top_k_gating(x, self.training)  # (..., n_exps)
        expert_outputs = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (..., n_exps, D)
        return (gates.unsqueeze(-1) * expert_outputs).sum(dim=-2)


def text_embedding(vectors: torch.Tensor) -> nn.Embedding:
    """The fixed item-text table (the reference's weight2emb): not trained, row 0 pads."""
    embedding = nn.Embedding(*vectors.shape, padding_idx=0)
    embedding.weight.requires_grad = False
    embedding.weight.data.copy_(vectors)
    return embedding


class UniSRec(_recbole.SASRec):
    """UniSRec as the reference defines it; `dataset.plm_embedding` (and, for pre-training, `plm_embedding_aug`)
    are the item-text tables over RecBole's item ids."""

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.train_stage = config["train_stage"]
        self.temperature = config["temperature"]
        self.lam = config["lambda"]
        if self.train_stage not in TRAIN_STAGES:
            raise ValueError(f"unknown UniSRec train stage {self.train_stage!r}; choose from {', '.join(TRAIN_STAGES)}")
        if self.train_stage in ("pretrain", "inductive_ft"):
            self.item_embedding = None  # text only; transductive fine-tuning keeps SASRec's item-ID embedding
        self.plm_embedding = copy.deepcopy(dataset.plm_embedding)
        self.moe_adaptor = MoEAdaptorLayer(config["n_exps"], config["adaptor_layers"], config["adaptor_dropout_prob"])

    def forward(self, item_seq: torch.Tensor, item_emb: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        input_emb = item_emb + self.position_embedding(position_ids)
        if self.train_stage == "transductive_ft":
            input_emb = input_emb + self.item_embedding(item_seq)
        input_emb = self.dropout(self.LayerNorm(input_emb))
        trm_output = self.trm_encoder(input_emb, self.get_attention_mask(item_seq), output_all_encoded_layers=True)
        return self.gather_indexes(trm_output[-1], item_seq_len - 1)  # (B, H)

    def contrastive_loss(self, seq_output: torch.Tensor, others: torch.Tensor, same_pos_id: torch.Tensor) -> torch.Tensor:
        """-log(exp(s_ii / t) / sum_j exp(s_ij / t)) over the batch, the pairs of `same_pos_id` counted as exp(0)."""
        pos_logits = torch.exp((seq_output * others).sum(dim=1) / self.temperature)
        neg_logits = torch.matmul(seq_output, others.transpose(0, 1)) / self.temperature
        neg_logits = torch.where(same_pos_id, torch.zeros((), device=same_pos_id.device), neg_logits)
        return -torch.log(pos_logits / torch.exp(neg_logits).sum(dim=1)).mean()

    def seq_item_contrastive_task(self, seq_output: torch.Tensor, same_pos_id: torch.Tensor, interaction) -> torch.Tensor:
        pos_items_emb = F.normalize(self.moe_adaptor(interaction["pos_item_emb"]), dim=1)
        return self.contrastive_loss(seq_output, pos_items_emb, same_pos_id)

    def seq_seq_contrastive_task(self, seq_output: torch.Tensor, same_pos_id: torch.Tensor, interaction) -> torch.Tensor:
        item_emb_list_aug = self.moe_adaptor(interaction["item_emb_list_aug"])
        seq_output_aug = self.forward(
            interaction[self.ITEM_SEQ + "_aug"], item_emb_list_aug, interaction[self.ITEM_SEQ_LEN + "_aug"]
        )
        return self.contrastive_loss(seq_output, F.normalize(seq_output_aug, dim=1), same_pos_id)

    def pretrain(self, interaction) -> torch.Tensor:
        """The pre-training loss: sequence-item + lambda * sequence-sequence contrastive (`augment` fills the batch)."""
        item_emb_list = self.moe_adaptor(interaction["item_emb_list"])
        seq_output = F.normalize(self.forward(interaction[self.ITEM_SEQ], item_emb_list, interaction[self.ITEM_SEQ_LEN]), dim=1)
        pos_id = interaction["item_id"]
        same_pos_id = pos_id.unsqueeze(1) == pos_id.unsqueeze(0)  # other sequences with the same next item
        same_pos_id = torch.logical_xor(same_pos_id, torch.eye(pos_id.shape[0], dtype=torch.bool, device=pos_id.device))
        loss_seq_item = self.seq_item_contrastive_task(seq_output, same_pos_id, interaction)
        loss_seq_seq = self.seq_seq_contrastive_task(seq_output, same_pos_id, interaction)
        return loss_seq_item + self.lam * loss_seq_seq

    def sequence_and_items(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised sequence vectors and the normalised vectors of every item."""
        item_seq = interaction[self.ITEM_SEQ]
        item_emb_list = self.moe_adaptor(self.plm_embedding(item_seq))
        seq_output = self.forward(item_seq, item_emb_list, interaction[self.ITEM_SEQ_LEN])
        items_emb = self.moe_adaptor(self.plm_embedding.weight)
        if self.train_stage == "transductive_ft":
            items_emb = items_emb + self.item_embedding.weight
        return F.normalize(seq_output, dim=-1), F.normalize(items_emb, dim=-1)

    def calculate_loss(self, interaction) -> torch.Tensor:
        if self.train_stage == "pretrain":
            return self.pretrain(interaction)
        seq_output, items_emb = self.sequence_and_items(interaction)
        logits = torch.matmul(seq_output, items_emb.transpose(0, 1)) / self.temperature
        return self.loss_fct(logits, interaction[self.POS_ITEM_ID])

    def full_sort_predict(self, interaction) -> torch.Tensor:
        seq_output, items_emb = self.sequence_and_items(interaction)
        return torch.matmul(seq_output, items_emb.transpose(0, 1))  # (B, n_items)


def augment(
    interaction, plm_embedding: nn.Embedding, plm_embedding_aug: nn.Embedding, drop_ratio: float, drop_coefficient: float
):
    """The reference's PLMEmb transform: the batch's text vectors and an augmented view of each sequence, with
    probability `drop_coefficient` its items dropped (each at `drop_ratio`, the first kept), else the text vectors of
    the same items with words dropped (`plm_embedding_aug`), mixed in where an item is dropped."""
    item_seq_len = interaction["item_length"]
    item_seq = interaction["item_id_list"]
    item_emb_seq = plm_embedding(item_seq)
    pos_item_emb = plm_embedding(interaction["item_id"])
    mask = torch.bernoulli(torch.full_like(item_seq, 1 - drop_ratio, dtype=torch.float)).to(torch.bool)
    if random.random() < drop_coefficient:  # item drop
        mask = torch.logical_or(mask, item_seq.eq(0))
        mask[:, 0] = True
        drop_index = torch.cumsum(mask, dim=1) - 1
        item_seq_aug = torch.zeros_like(item_seq).scatter(dim=-1, index=drop_index, src=item_seq)
        item_seq_len_aug = torch.gather(drop_index, 1, (item_seq_len - 1).unsqueeze(1)).squeeze(1) + 1
        item_emb_seq_aug = plm_embedding(item_seq_aug)
    else:  # word drop
        item_seq_aug, item_seq_len_aug = item_seq, item_seq_len
        item_emb_seq_aug = torch.where(mask.unsqueeze(-1), item_emb_seq, plm_embedding_aug(item_seq))
    interaction.update(
        _recbole.Interaction({
            "item_emb_list": item_emb_seq,
            "pos_item_emb": pos_item_emb,
            "item_id_list_aug": item_seq_aug,
            "item_length_aug": item_seq_len_aug,
            "item_emb_list_aug": item_emb_seq_aug,
        })
    )  # fmt: skip
    return interaction


# On the shared 2-core CPU a training step of 512 prefixes took 41 s against SASRec's 0.8 s (hidden 300 vs 64, eight
# experts; benchmarks/bench_session_models.py at load 6-8), about 11 hours an epoch: no CPU budget reaches early
# stopping (docs/results.md); a GPU does.
BUDGET = TrainingBudget(max_epochs=50, max_minutes=120)


@dataclass
class UniSRecRecommender(RecBoleRecommender):
    """UniSRec trained on the training users (RecBoleRecommender's fitting, early stopping and scoring)."""

    name: str = NAME
    unisrec: UniSRecOptions = field(default_factory=UniSRecOptions)

    def __post_init__(self) -> None:
        self.encoder: TextEncoder = text_encoder(self.unisrec.text_encoder)
        self.name = f"{NAME} ({self.unisrec.setting}; {self.encoder.model} item text)"
        stage = {"train_stage": self.unisrec.train_stage, "plm_size": self.encoder.size}
        self.params = {**REFERENCE_PARAMS, **stage, **self.params}
        self.params["adaptor_layers"] = [self.encoder.size, self.params["hidden_size"]]

    @property
    def settings(self) -> dict:
        return super().settings | {
            "reference": REFERENCE,
            "setting": self.unisrec.setting,
            "text_encoder": self.encoder.name,
            "text_encoder_digest": self.encoder.digest,
            "unisrec": dataclasses.asdict(self.unisrec),
        }

    @property
    def title(self) -> str:
        return "UniSRec"

    def cache_file(self, dataset: Dataset) -> Path:
        return baseline_file(NAME, dataset, self.settings, CACHE_VERSION)

    def model_class(self, recbole: types.SimpleNamespace) -> type:
        return UniSRec

    def text_table(self, dataset: Dataset, item_ids: np.ndarray, word_drop: float = 0.0) -> torch.nn.Embedding:
        """The item-text vectors over RecBole's item ids (row 0, RecBole's padding, is zeros)."""
        features = catalogue_text_features(dataset, self.encoder, word_drop, self.seed)
        table = np.zeros((int(item_ids.max()) + 1, features.shape[1]), np.float32)
        table[item_ids] = features
        return text_embedding(torch.from_numpy(table))

    def build_model(self, recbole: types.SimpleNamespace, config, train_set, dataset: Dataset) -> torch.nn.Module:
        train_set.plm_embedding = self.text_table(dataset, self.item_ids)
        model = self.model_class(recbole)(config, train_set)
        if self.unisrec.checkpoint:
            load_checkpoint(model, Path(self.unisrec.checkpoint), self.unisrec.fix_encoder)
        return model

    def train(self, recbole: types.SimpleNamespace, config, train_set, dataset: Dataset) -> None:
        """Contrastive pre-training first when asked (pretrain_epochs), then fine-tuning with early stopping."""
        pretraining = {}
        if self.unisrec.pretrain_epochs:
            pretraining = self.pretrain(recbole, config, train_set, dataset)
        super().train(recbole, config, train_set, dataset)
        self.training |= {"pretraining": pretraining} if pretraining else {}

    def pretrain(self, recbole: types.SimpleNamespace, config, train_set, dataset: Dataset) -> dict:
        """`pretrain_epochs` epochs of the pre-training losses (text only, as the reference's pretrain stage), within
        the budget's minutes; the fine-tuning that follows gets a new optimiser, as finetune.py's."""
        started = time.monotonic()
        augmented = self.text_table(dataset, self.item_ids, self.unisrec.word_drop).to(self.device)
        plain = self.model.plm_embedding
        loader = recbole.TrainDataLoader(config, train_set, None, shuffle=True)
        optimizer = self.optimizer(config)
        stage, self.model.train_stage = self.model.train_stage, "pretrain"

        def loss_of(batch) -> torch.Tensor:
            batch = augment(batch.to(self.device), plain, augmented, config["item_drop_ratio"], config["item_drop_coefficient"])
            return self.model.calculate_loss(batch)

        losses = []
        deadline = started + 60 * self.budget.max_minutes
        self.model.train()
        try:
            for _ in range(self.unisrec.pretrain_epochs):
                losses.append(round(gradient_steps(optimizer, loader, loss_of, deadline), 5))
                if time.monotonic() > deadline:
                    break
        finally:
            self.model.train_stage = stage
        return {"epochs": len(losses), "loss": losses, "seconds": round(time.monotonic() - started, 1)}


def load_checkpoint(model: torch.nn.Module, file: Path, fix_encoder: bool) -> None:
    """A pre-trained checkpoint into the model as finetune.py loads it (strict=False: the item tables are the data's
    own); its position table is cut to this model's window. With `fix_encoder`, the transformer and the positions
    are not trained."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)  # a file the user named; the authors' holds a Config
    except Exception as error:  # noqa: BLE001 - any unreadable file is one message
        raise DualrecError(f"{file} is not a readable PyTorch checkpoint ({error}).") from error
    state = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(state, dict):
        raise DualrecError(f"{file} holds no state dict (a dict of tensors, or one under 'state_dict').")
    state = {key: value for key, value in state.items() if not key.startswith(("plm_embedding", "item_embedding"))}
    rows = model.position_embedding.weight.shape[0]
    if "position_embedding.weight" in state:
        state["position_embedding.weight"] = state["position_embedding.weight"][:rows]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise DualrecError(
            f"{file} does not fit this UniSRec (its text size or hidden size differ: the authors' checkpoint needs a "
            f"768-d BERT text encoder): {str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else error}"
        ) from error
    if result.unexpected_keys:
        raise DualrecError(f"{file} is not a UniSRec checkpoint: it holds {', '.join(result.unexpected_keys[:3])} ...")
    log.info("UniSRec loaded %s (missing: %s)", file, ", ".join(result.missing_keys) or "nothing")
    if fix_encoder:
        for parameter in (*model.position_embedding.parameters(), *model.trm_encoder.parameters()):
            parameter.requires_grad = False


def unisrec_recommender(name: str = NAME, **options):
    """The registered UniSRec: its budget and the batch of the other cross-entropy sequence models, unless given."""
    if name != NAME:
        raise DualrecError(f"unisrec_recommender makes {NAME!r}, not {name!r}.")
    options.setdefault("budget", BUDGET)
    options.setdefault("params", dict(TUNED_PARAMS["sasrec"]))
    return UniSRecRecommender(**options)
