"""OpenVLA-style action tokens: each action dimension, normalised by its 1st/99th percentiles to
[-1, 1], is cut into ``n_bins`` uniform bins; a token is a bin index, decoded to the bin centre."""
from __future__ import annotations

import torch
from torch import nn


class ActionTokenizer(nn.Module):
    """Continuous actions <-> integer tokens in ``[0, n_bins)``; bounds are saved as buffers."""

    def __init__(self, action_dim: int = 7, n_bins: int = 256) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.register_buffer("low", -torch.ones(action_dim))
        self.register_buffer("high", torch.ones(action_dim))

    def fit(self, actions: torch.Tensor, quantile: float = 0.01) -> ActionTokenizer:
        """Set per-dimension bounds from data (``quantile`` and ``1 - quantile``)."""
        actions = torch.as_tensor(actions, dtype=torch.float32).reshape(-1, self.low.numel())
        low = torch.quantile(actions, quantile, dim=0)
        high = torch.quantile(actions, 1 - quantile, dim=0)
        span = (high - low).clamp_min(1e-4)  # a constant dimension (gripper always closed)
        self.low.copy_(low)
        self.high.copy_(low + span)
        return self

    @property
    def bin_edges(self) -> torch.Tensor:
        """The ``n_bins + 1`` edges in normalised [-1, 1] units."""
        return torch.linspace(-1.0, 1.0, self.n_bins + 1, device=self.low.device)

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        return (2 * (actions - self.low) / (self.high - self.low) - 1).clamp(-1.0, 1.0)

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """``(..., action_dim)`` actions -> ``(..., action_dim)`` long tokens."""
        scaled = (self.normalize(actions) + 1) / 2 * self.n_bins
        return scaled.floor().long().clamp(0, self.n_bins - 1)

    def soft_targets(self, actions: torch.Tensor, sigma: float) -> torch.Tensor:
        """Gaussian-smoothed token targets ``(..., action_dim, n_bins)`` (sigma in bins).

        Classification over ordered bins learns faster when a near miss costs less than a far
        one; smoothing the one-hot target over neighbouring bins ("HL-Gauss", Imani & White 2018;
        Farebrother et al. 2024) gives it that ordinal signal while decoding stays argmax.
        """
        position = (self.normalize(actions) + 1) / 2 * self.n_bins - 0.5  # in bin-centre units
        centres = torch.arange(self.n_bins, device=actions.device, dtype=position.dtype)
        logits = -0.5 * ((centres - position.unsqueeze(-1)) / sigma) ** 2
        return torch.softmax(logits, dim=-1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> actions at the bin centres (in the original action units)."""
        centres = (tokens.float() + 0.5) / self.n_bins * 2 - 1
        return (centres + 1) / 2 * (self.high - self.low) + self.low
