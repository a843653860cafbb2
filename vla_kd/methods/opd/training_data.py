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


def training_mix(demos, aggregate, aggregate_share: float) -> torch.utils.data.Dataset:
    """The round's training set: the aggregate alone, or with the demonstrations. With
    ``aggregate_share`` > 0 the aggregate is repeated until it makes about that share of the
    frames (the demonstrations would otherwise outnumber a few rounds' labels a hundred to one);
    0: every frame counts once, DAgger's plain aggregate."""
    if demos is None:
        return aggregate
    repeats = 1
    if aggregate_share > 0:
        wanted = aggregate_share / (1 - aggregate_share) * len(demos)
        repeats = max(1, round(wanted / len(aggregate)))
    return SharedKeys([demos, *[aggregate] * repeats])
