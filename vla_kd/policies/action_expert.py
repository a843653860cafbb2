"""The action expert: a small diffusion policy with separable encoder and action decoder.

``encoder(images, state) -> features`` and ``decoder.sample(features) -> action chunk`` are
separate modules on purpose: action-expert alignment (VITA-VLA) later maps a VLM's hidden
states into ``features`` and reuses this decoder unchanged. The decoder denoises a whole
action chunk (diffusion policy, Chi et al. 2023) with diffusers' DDPM schedule for training
and DDIM for fast sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from vla_kd.envs.base import ACTION_DIM
from vla_kd.nn.normalization import MinMaxNormalizer, Standardizer
from vla_kd.policies.base import views_by_camera
from vla_kd.policies.mlp_bc import ConvEncoder
from vla_kd.policies.pretrained import ChunkedPolicy


@dataclass
class ActionExpertConfig:
    """Encoder width, denoiser size and the diffusion schedule."""
    state_dim: int
    horizon: int = 4
    action_dim: int = ACTION_DIM
    image_size: int = 128
    features: int = 256
    hidden: int = 512
    train_timesteps: int = 100
    inference_steps: int = 10
    image_pooling: str = "flatten"
    #: what the denoiser predicts: "epsilon" (the noise, as diffusion policy does) or "sample"
    #: (the clean chunk; diffusers' x0 parameterisation). The model config that `vla-kd train`
    #: uses defaults to "sample"; this default stays "epsilon" because checkpoints saved before
    #: the field existed were noise predictors and load with it.
    prediction_type: str = "epsilon"
    #: width of the privileged vector (object/goal poses) that an auxiliary head predicts from
    #: the image features while training (0: no head); the expert never reads it when it acts
    aux_state_dim: int = 0
    #: the cameras it reads, by observation key: "rgb" (the agent view) and, on LIBERO,
    #: "wrist_rgb" (the eye-in-hand camera); each has its own CNN
    cameras: tuple[str, ...] = ("rgb",)
    #: the proprio features (indices into ``state``) it reads; None: all. The others are zeroed
    #: after standardising (LIBERO's state: eef position 0-2, axis-angle 3-5, fingers 6-7).
    state_features: tuple[int, ...] | None = None


class ObservationEncoder(nn.Module):
    """Camera images + proprio -> one feature vector (the decoder's conditioning input)."""
    def __init__(self, c: ActionExpertConfig) -> None:
        super().__init__()
        self.cameras = tuple(c.cameras)
        if not self.cameras:
            raise ValueError("the action expert needs at least one camera")
        self.image = ConvEncoder(c.image_size, c.features, c.image_pooling)  # the first camera
        self.other_images = nn.ModuleDict(
            {name: ConvEncoder(c.image_size, c.features, c.image_pooling) for name in self.cameras[1:]}
        )
        # Several cameras are merged back to one image feature vector, the width the auxiliary
        # head and an aligned VLA's mapper expect whatever the number of cameras.
        self.merge = (
            nn.Sequential(nn.Linear(len(self.cameras) * c.features, c.features), nn.Mish())
            if len(self.cameras) > 1 else nn.Identity()
        )
        self.fuse = nn.Sequential(nn.Linear(c.features + c.state_dim, c.features), nn.Mish())
        self.state_norm = Standardizer(c.state_dim, c.state_features)

    def forward(
        self, images: torch.Tensor | dict[str, torch.Tensor], state: torch.Tensor,
        return_image_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The fused features (and the image features alone, if asked). ``images``: uint8
        ``(B, H, W, 3)`` per camera name, or the one camera's tensor for a one-camera expert."""
        images = views_by_camera(images, self.cameras, "action expert")
        parts = [self.image(images[self.cameras[0]])]
        parts += [encoder(images[name]) for name, encoder in self.other_images.items()]
        image = self.merge(torch.cat(parts, dim=-1)) if len(parts) > 1 else parts[0]
        fused = self.fuse(torch.cat([image, self.state_norm(state)], dim=-1))
        return (fused, image) if return_image_features else fused


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ChunkDenoiser(nn.Module):
    """The MLP that maps a noised (normalised) action chunk, the conditioning features and the
    timestep to a chunk-shaped prediction; subclasses say what it predicts (their
    ``prediction_types``) and how a chunk is sampled."""

    prediction_types: tuple[str, ...] = ()

    def __init__(self, c) -> None:
        super().__init__()
        if c.prediction_type not in self.prediction_types:
            allowed = " or ".join(repr(p) for p in self.prediction_types)
            raise ValueError(f"prediction_type must be {allowed}, not {c.prediction_type!r}")
        self.config = c
        size = c.horizon * c.action_dim
        self.net = nn.Sequential(
            nn.Linear(size + c.features + 64, c.hidden), nn.Mish(),
            nn.Linear(c.hidden, c.hidden), nn.Mish(),
            nn.Linear(c.hidden, c.hidden), nn.Mish(),
            nn.Linear(c.hidden, size),
        )

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = torch.cat([noisy.flatten(1), features, timestep_embedding(t, 64)], dim=-1)
        return self.net(x).view_as(noisy)


class DiffusionActionDecoder(ChunkDenoiser):
    """Predicts the noise in a noised (normalised) action chunk, or the clean chunk itself
    (``prediction_type``), given features and the timestep."""

    prediction_types = ("epsilon", "sample")

    def scheduler(self, kind: str = "ddpm"):

        cls = DDPMScheduler if kind == "ddpm" else DDIMScheduler
        return cls(num_train_timesteps=self.config.train_timesteps, beta_schedule="squaredcos_cap_v2",
                   clip_sample=True, prediction_type=self.config.prediction_type)

    @torch.no_grad()
    def sample(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM sampling of a normalised action chunk ``(B, horizon, action_dim)``."""
        c = self.config
        scheduler = self.scheduler("ddim")
        scheduler.set_timesteps(c.inference_steps)
        x = torch.randn(len(features), c.horizon, c.action_dim, generator=generator, device=features.device)
        for t in scheduler.timesteps:
            noise = self(x, t.expand(len(x)), features)
            x = scheduler.step(noise, t, x).prev_sample
        return x


class DiffusionActionExpert(ChunkedPolicy):
    """encoder + diffusion decoder; actions normalised to [-1, 1] by dataset min/max."""
    policy_type = "diffusion_action_expert"
    config_class = ActionExpertConfig

    def __init__(self, config: ActionExpertConfig) -> None:
        super().__init__(config)
        self.encoder = ObservationEncoder(config)
        self.decoder = DiffusionActionDecoder(config)
        self.action_norm = MinMaxNormalizer(config.action_dim)
        if config.aux_state_dim:
            # Only shapes the image encoder while training (see methods.bc.ChunkedBC).
            self.aux_head = nn.Linear(config.features, config.aux_state_dim)
            self.aux_norm = Standardizer(config.aux_state_dim)
        self.sample_seed = 0

    def set_normalization(self, state_stats: dict, action_stats: dict, aux_stats: dict | None = None) -> None:
        """Fit the proprio standardiser and the action normaliser; ``aux_stats`` fits the
        auxiliary head's target normaliser (None leaves it at identity, as TokenVLA does)."""
        self.encoder.state_norm.fit(state_stats)
        self.action_norm.fit(action_stats)
        if self.config.aux_state_dim and aux_stats is not None:
            self.aux_norm.fit(aux_stats)

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        images = {name: torch.as_tensor(obs[name]) for name in self.config.cameras if name in obs}
        features = self.encoder(images, torch.as_tensor(obs["state"]))
        # A fixed, advancing seed: rollouts are reproducible, samples still differ per call.
        generator = torch.Generator().manual_seed(self.sample_seed)
        self.sample_seed += 1
        chunk = self.action_norm.unnormalize(self.decoder.sample(features, generator))
        return chunk.clamp(-1, 1).numpy()
