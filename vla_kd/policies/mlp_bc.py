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
from vla_kd.policies.pretrained import PretrainedPolicy
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
class ChunkedBCPolicy(PretrainedPolicy):
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
        # Normalisation (filled from dataset stats before training; saved with the weights).
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        self.register_buffer("action_low", -torch.ones(c.action_dim))
        self.register_buffer("action_high", torch.ones(c.action_dim))
        self._queue: torch.Tensor | None = None
        self._cursor = 0

    def set_normalization(self, state_stats: dict, action_stats: dict) -> None:
        self.state_mean.copy_(torch.as_tensor(state_stats["mean"]))
        self.state_std.copy_(torch.as_tensor(state_stats["std"]).clamp_min(1e-3))
        low = torch.as_tensor(action_stats["min"])
        high = torch.as_tensor(action_stats["max"])
        span = (high - low).clamp_min(1e-3)  # constant dims (e.g. a gripper always closed)
        self.action_low.copy_(low)
        self.action_high.copy_(low + span)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return 2 * (actions - self.action_low) / (self.action_high - self.action_low) - 1

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions + 1) / 2 * (self.action_high - self.action_low) + self.action_low

    def forward(self, state: torch.Tensor, rgb: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised action chunk ``(B, horizon, action_dim)``."""
        features = [(state.float() - self.state_mean) / self.state_std]
        if self.image_encoder is not None:
            features.append(self.image_encoder(rgb))
        out = self.head(torch.cat(features, dim=-1))
        return out.view(-1, self.config.horizon, self.config.action_dim)

    def reset(self) -> None:
        self._queue, self._cursor = None, 0

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        state = torch.as_tensor(obs["state"])
        rgb = torch.as_tensor(obs["rgb"]) if self.image_encoder is not None else None
        chunk = self.unnormalize_actions(self(state, rgb))
        return chunk.clamp(-1, 1).numpy()

    def act(self, obs: dict) -> np.ndarray:
        exhausted = self._queue is None or self._cursor >= self.config.horizon
        if exhausted or len(self._queue) != len(obs["state"]):
            self._queue, self._cursor = self.predict_action_chunk(obs), 0
        action = self._queue[:, self._cursor]
        self._cursor += 1
        return action.astype(np.float32)
