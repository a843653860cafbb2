"""HapticVLA's teacher: a flow-matching action expert that reads touch beside camera and proprio.

The fingers' contact forces (``obs["tactile"]``, :mod:`vla_kd.envs.tactile`) pass through a small
MLP into a compact **tactile token**; the action expert's observation features and the token are
fused into the decoder's conditioning vector, and the decoder turns noise into a normalised
action chunk by flow matching (:mod:`vla_kd.nn.flow_matching`). The token is what the HapticVLA
student learns to predict from camera and proprio alone (:mod:`vla_kd.methods.tactile`), so the
student never needs the sensor. How the teacher is trained (reward-weighted flow matching):
:mod:`vla_kd.methods.tactile.teacher`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vla_kd.envs.tactile import TACTILE_DIM
from vla_kd.errors import UserError
from vla_kd.nn.flow_matching import euler_sample
from vla_kd.nn.normalization import MinMaxNormalizer, Standardizer
from vla_kd.policies.action_expert import ActionExpertConfig, ChunkDenoiser, ObservationEncoder
from vla_kd.policies.pretrained import ChunkedPolicy


@dataclass
class TactileExpertConfig(ActionExpertConfig):
    """The action expert's sizes plus the touch input; ``train_timesteps`` is the flow's time
    scale (the timestep the decoder sees is ``sigma * train_timesteps``), ``inference_steps``
    the Euler steps of a sample."""

    train_timesteps: int = 1000
    #: what the decoder predicts: "sample" (the clean chunk ``x0``, as the diffusion expert's
    #: default; the velocity the Euler steps follow is then ``(x - x0) / sigma``) or "velocity"
    #: (``eps - x0``, rectified flow's target)
    prediction_type: str = "sample"
    tactile_dim: int = TACTILE_DIM
    #: width of the tactile token (the embedding the student predicts)
    tactile_token_dim: int = 32


class FlowActionDecoder(ChunkDenoiser):
    """Predicts the flow's velocity at a point of a normalised action chunk's path, or the clean
    chunk (``prediction_type``), given the conditioning features and the timestep (the
    diffusion decoder's MLP)."""

    prediction_types = ("velocity", "sample")

    @torch.no_grad()
    def sample(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A normalised action chunk ``(B, horizon, action_dim)`` per row of ``features``."""
        c = self.config
        shape = (len(features), c.horizon, c.action_dim)
        return euler_sample(lambda x, t: self.velocity(x, t, features), shape, c.inference_steps,
                            c.train_timesteps, generator, features.device)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The flow's velocity at ``x`` and timesteps ``t``, whatever the decoder predicts."""
        predicted = self(x, t, features)
        if self.config.prediction_type == "velocity":
            return predicted
        sigma = (t.to(x.dtype) / self.config.train_timesteps).view(-1, *([1] * (x.dim() - 1)))
        return (x - predicted) / sigma


class TactileFlowExpert(ChunkedPolicy):
    """camera + proprio encoder, tactile token, flow-matching decoder; actions normalised to
    [-1, 1] by dataset min/max, touch standardised by the dataset's statistics."""

    policy_type = "tactile_flow_expert"
    config_class = TactileExpertConfig
    #: the evaluator builds its env with the ``tactile`` observation
    reads_tactile = True

    def __init__(self, config: TactileExpertConfig) -> None:
        super().__init__(config)
        c = config
        self.encoder = ObservationEncoder(c)
        self.tactile_norm = Standardizer(c.tactile_dim)
        self.tactile_encoder = nn.Sequential(
            nn.Linear(c.tactile_dim, 64), nn.Mish(), nn.Linear(64, c.tactile_token_dim)
        )
        self.condition = nn.Sequential(nn.Linear(c.features + c.tactile_token_dim, c.features), nn.Mish())
        self.decoder = FlowActionDecoder(c)
        self.action_norm = MinMaxNormalizer(c.action_dim)
        if c.aux_state_dim:
            # Only shapes the image encoder while training, as in the diffusion expert.
            self.aux_head = nn.Linear(c.features, c.aux_state_dim)
            self.aux_norm = Standardizer(c.aux_state_dim)
        self.sample_seed = 0

    def set_normalization(self, state_stats: dict, action_stats: dict, tactile_stats: dict,
                          aux_stats: dict | None = None) -> None:
        """Fit the proprio and touch standardisers, the action normaliser and (given
        ``aux_stats``) the auxiliary head's target normaliser."""
        self.encoder.state_norm.fit(state_stats)
        self.action_norm.fit(action_stats)
        self.tactile_norm.fit(tactile_stats)
        if self.config.aux_state_dim and aux_stats is not None:
            self.aux_norm.fit(aux_stats)

    def tactile_token(self, tactile: torch.Tensor) -> torch.Tensor:
        """``(B, tactile_token_dim)``: the compact embedding of the fingers' forces."""
        return self.tactile_encoder(self.tactile_norm(tactile))

    def conditioning(
        self, images, state: torch.Tensor, tactile: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the decoder's conditioning vector, the image features, the tactile token)."""
        fused, image = self.encoder(images, state, return_image_features=True)
        token = self.tactile_token(tactile)
        return self.condition(torch.cat([fused, token], dim=-1)), image, token

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        if "tactile" not in obs:
            raise UserError("the tactile teacher reads obs['tactile']: run it on a ManiSkill env made "
                            "with tactile=True (vla-kd eval and the trainers' evaluations do this)")
        images = {name: torch.as_tensor(obs[name]) for name in self.config.cameras if name in obs}
        features, _, _ = self.conditioning(images, torch.as_tensor(obs["state"]),
                                           torch.as_tensor(obs["tactile"]))
        # A fixed, advancing seed: rollouts are reproducible, samples still differ per call.
        generator = torch.Generator().manual_seed(self.sample_seed)
        self.sample_seed += 1
        chunk = self.action_norm.unnormalize(self.decoder.sample(features, generator))
        return chunk.clamp(-1, 1).numpy()
