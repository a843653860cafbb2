"""A small visual behaviour-cloning policy that predicts chunks of actions.

A 3-layer CNN over the agent camera plus an MLP over proprioception predicts the next
``horizon`` actions; ``act`` executes the whole chunk open-loop before predicting again (action
chunking, as in ACT/diffusion policy: re-predicting every step from a BC policy compounds its
errors). It is the baseline every distilled student is compared with, and the trainer's
simplest client.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vla_kd.envs.base import ACTION_DIM
from vla_kd.nn.normalization import MinMaxNormalizer, Standardizer
from vla_kd.policies.pretrained import ChunkedPolicy
from vla_kd.policies.registry import register_policy_type


@dataclass
class ChunkedBCConfig:
    """Shapes and sizes; normalisation statistics live in the weights as buffers."""

    state_dim: int
    horizon: int = 4
    image_size: int = 128
    use_image: bool = True
    hidden: int = 256
    action_dim: int = ACTION_DIM


class ConvEncoder(nn.Module):
    """uint8 (B, H, W, 3) images -> (B, features)."""

    def __init__(self, image_size: int, features: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.net(torch.zeros(1, 3, image_size, image_size)).shape[1]
        self.project = nn.Sequential(nn.Linear(flat, features), nn.ReLU())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return self.project(self.net(x))


@register_policy_type
class ChunkedBCPolicy(ChunkedPolicy):
    """CNN + MLP behaviour cloning with action chunks."""

    policy_type = "chunked_bc"
    config_class = ChunkedBCConfig

    def __init__(self, config: ChunkedBCConfig) -> None:
        super().__init__(config)
        c = config
        self.image_encoder = ConvEncoder(c.image_size, c.hidden) if c.use_image else None
        inputs = c.state_dim + (c.hidden if c.use_image else 0)
        self.head = nn.Sequential(
            nn.Linear(inputs, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, c.horizon * c.action_dim),
        )
        # Filled from dataset stats before training; saved with the weights.
        self.state_norm = Standardizer(c.state_dim)
        self.action_norm = MinMaxNormalizer(c.action_dim)

    def set_normalization(self, state_stats: dict, action_stats: dict) -> None:
        self.state_norm.fit(state_stats)
        self.action_norm.fit(action_stats)

    def forward(self, state: torch.Tensor, rgb: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised action chunk ``(B, horizon, action_dim)``."""
        features = [self.state_norm(state)]
        if self.image_encoder is not None:
            features.append(self.image_encoder(rgb))
        out = self.head(torch.cat(features, dim=-1))
        return out.view(-1, self.config.horizon, self.config.action_dim)


    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        state = torch.as_tensor(obs["state"])
        rgb = torch.as_tensor(obs["rgb"]) if self.image_encoder is not None else None
        chunk = self.action_norm.unnormalize(self(state, rgb))
        return chunk.clamp(-1, 1).numpy()
