"""The training users' sequences as RecBole atomic benchmark files.

RecBole's sequential benchmark format has one row per training sample: the user, the items before the target (at
most `window` of them, oldest first) and the target. Every prefix of each training user's catalogue sequence is a
sample, the augmentation RecBole applies to its own sequential datasets. A `.item` file lists the whole catalogue, so
every catalogue item has a RecBole id even if no training sample contains it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dualrec.data.dataset import PAD_ITEM, Windows

BENCHMARK_PART = "train"


def write_benchmark(samples: Windows, catalogue_size: int, folder: Path, name: str) -> None:
    """Write `{name}.train.inter` (user, history, target) and `{name}.item` (every catalogue item) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    histories = [" ".join(map(str, row[row != PAD_ITEM])) for row in samples.histories]
    inter = pd.DataFrame({"user_id:token": samples.users, "item_id_list:token_seq": histories, "item_id:token": samples.targets})
    inter.to_csv(folder / f"{name}.{BENCHMARK_PART}.inter", sep="\t", index=False)
    pd.DataFrame({"item_id:token": np.arange(catalogue_size)}).to_csv(folder / f"{name}.item", sep="\t", index=False)
