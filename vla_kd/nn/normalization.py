"""Normalisation statistics kept as buffers, so they are saved and loaded with the weights."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Standardizer(nn.Module):
    """(x - mean) / std, with std floored so constant features do not blow up.

    ``keep`` (feature indices; None keeps all) zeroes every other feature after
    standardising, so a model can ignore inputs its demonstrations hardly vary without
    changing any layer's width. The mask comes from the model's config, not the weights."""

    def __init__(self, dim: int, keep: Sequence[int] | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("keep_mask", feature_mask(dim, keep), persistent=False)

    def fit(self, stats: dict) -> None:
        self.mean.copy_(torch.as_tensor(stats["mean"]))
        self.std.copy_(torch.as_tensor(stats["std"]).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.mean.dtype) - self.mean) / self.std * self.keep_mask  # the weights' dtype


def feature_mask(dim: int, keep: Sequence[int] | None) -> torch.Tensor:
    """1 for the kept feature indices (all if ``keep`` is None), 0 elsewhere."""
    if keep is None:
        return torch.ones(dim)
    keep = [int(i) for i in keep]
    if not keep or any(not 0 <= i < dim for i in keep) or len(set(keep)) != len(keep):
        raise ValueError(f"state_features {keep} must be distinct indices in [0, {dim})")
    mask = torch.zeros(dim)
    mask[keep] = 1.0
    return mask


class MinMaxNormalizer(nn.Module):
    """Maps [min, max] to [-1, 1] per dimension; a constant dimension (a gripper that never
    opens) gets a small span instead of a division by zero."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("low", -torch.ones(dim))
        self.register_buffer("high", torch.ones(dim))

    def fit(self, stats: dict) -> None:
        low = torch.as_tensor(stats["min"])
        self.low.copy_(low)
        self.high.copy_(low + (torch.as_tensor(stats["max"]) - low).clamp_min(1e-3))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * (x - self.low) / (self.high - self.low) - 1

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2 * (self.high - self.low) + self.low
