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
from vla_kd.errors import unknown_name
from vla_kd.nn.normalization import MinMaxNormalizer, Standardizer
from vla_kd.policies.pretrained import ChunkedPolicy


@dataclass
class ChunkedBCConfig:
    """Shapes and sizes; normalisation statistics live in the weights as buffers."""

    state_dim: int
    horizon: int = 4
    image_size: int = 128
    use_image: bool = True
    hidden: int = 256
    action_dim: int = ACTION_DIM
    image_pooling: str = "flatten"
    #: width of the privileged vector (object/goal poses) that an auxiliary head predicts from
    #: the image features while training; 0 = no such head. Never an input of the policy.
    aux_state_dim: int = 0
    #: the proprio features (indices into ``state``) it reads; None: all. The others are zeroed
    #: after standardising (LIBERO's state: eef position 0-2, axis-angle 3-5, fingers 6-7).
    state_features: tuple[int, ...] | None = None


class SpatialSoftmax(nn.Module):
    """Feature maps (B, C, H, W) -> the expected image position of each channel (B, 2C).

    Each channel becomes a keypoint: a softmax over its map with a learned temperature, then
    the mean (x, y) in [-1, 1]. Unlike flattening, this keeps *where* things are as numbers
    with sub-cell precision (Levine et al. 2016; robomimic and diffusion policy use it for
    precise grasps). torch has no such layer, so it is written here (a few lines).
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(features.flatten(2) / self.log_temperature.exp(), dim=-1)
        return (attention @ self.grid).flatten(1)  # (B, C, 2) -> (B, 2C)


IMAGE_POOLINGS = ("flatten", "spatial_softmax")


class ConvEncoder(nn.Module):
    """uint8 (B, H, W, 3) images -> (B, features).

    ``pooling``: ``flatten`` (NatureCNN: the last feature map, flattened) or ``spatial_softmax``
    (one keypoint per channel of the last map, see :class:`SpatialSoftmax`).
    """

    def __init__(self, image_size: int, features: int = 256, pooling: str = "flatten") -> None:
        super().__init__()
        if pooling not in IMAGE_POOLINGS:
            raise unknown_name("image pooling", pooling, IMAGE_POOLINGS)
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
        )
        with torch.no_grad():
            _, channels, height, width = self.net(torch.zeros(1, 3, image_size, image_size)).shape
        if pooling == "flatten":
            self.pool = nn.Sequential(nn.ReLU(), nn.Flatten())
            flat = channels * height * width
        else:
            self.pool = SpatialSoftmax(height, width)
            flat = 2 * channels
        self.project = nn.Sequential(nn.Linear(flat, features), nn.ReLU())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return self.project(self.pool(self.net(x)))


class ChunkedBCPolicy(ChunkedPolicy):
    """CNN + MLP behaviour cloning with action chunks."""

    policy_type = "chunked_bc"
    config_class = ChunkedBCConfig

    def __init__(self, config: ChunkedBCConfig) -> None:
        super().__init__(config)
        c = config
        self.image_encoder = ConvEncoder(c.image_size, c.hidden, c.image_pooling) if c.use_image else None
        inputs = c.state_dim + (c.hidden if c.use_image else 0)
        self.head = nn.Sequential(
            nn.Linear(inputs, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, c.horizon * c.action_dim),
        )
        # Filled from dataset stats before training; saved with the weights.
        self.state_norm = Standardizer(c.state_dim, c.state_features)
        self.action_norm = MinMaxNormalizer(c.action_dim)
        if c.aux_state_dim:
            if not c.use_image:
                raise ValueError("the auxiliary privileged-state head reads image features: needs use_image")
            self.aux_head = nn.Linear(c.hidden, c.aux_state_dim)
            self.aux_norm = Standardizer(c.aux_state_dim)

    def set_normalization(self, state_stats: dict, action_stats: dict, aux_stats: dict | None = None) -> None:
        """Fit the proprio standardiser and the action normaliser; ``aux_stats`` fits the
        auxiliary head's target normaliser (None leaves it at identity, as TokenVLA does)."""
        self.state_norm.fit(state_stats)
        self.action_norm.fit(action_stats)
        if self.config.aux_state_dim and aux_stats is not None:
            self.aux_norm.fit(aux_stats)

    def forward(
        self, state: torch.Tensor, rgb: torch.Tensor | None = None, return_image_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised action chunk ``(B, horizon, action_dim)`` (and the image features if asked)."""
        features = [self.state_norm(state)]
        image = self.image_encoder(rgb) if self.image_encoder is not None else None
        if image is not None:
            features.append(image)
        out = self.head(torch.cat(features, dim=-1))
        chunk = out.view(-1, self.config.horizon, self.config.action_dim)
        return (chunk, image) if return_image_features else chunk


    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        state = torch.as_tensor(obs["state"])
        rgb = torch.as_tensor(obs["rgb"]) if self.image_encoder is not None else None
        chunk = self.action_norm.unnormalize(self(state, rgb))
        return chunk.clamp(-1, 1).numpy()
