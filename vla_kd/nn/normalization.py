"""Normalisation statistics kept as buffers, so they are saved and loaded with the weights."""
from __future__ import annotations

import torch
from torch import nn


class Standardizer(nn.Module):
    """(x - mean) / std, with std floored so constant features do not blow up."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, stats: dict) -> None:
        self.mean.copy_(torch.as_tensor(stats["mean"]))
        self.std.copy_(torch.as_tensor(stats["std"]).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


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
