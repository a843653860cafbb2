"""The demonstrations and the OPD aggregate as one training set."""

from __future__ import annotations

import torch


class SharedKeys(torch.utils.data.ConcatDataset):
    """Datasets back to back, each item cut to the keys every dataset's items have (the
    demonstrations carry privileged state and the aggregate does not: a batch must not mix them)."""

    def __init__(self, datasets) -> None:
        super().__init__(datasets)
        self.keys = set.intersection(*(set(d[0]) for d in datasets))

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        return {k: v for k, v in item.items() if k in self.keys}
