"""AlignedVLA: a vision-language model that acts through a small action expert's decoder
(VITA-VLA).

The VLM (the suite's TokenVLA, or a Hugging Face VLM as ``hf_vla``) reads its usual prompt plus
two new tokens: a *state token* (one linear map per part of the proprioception,
e.g. arm joints and gripper, fused to the hidden width) and a learnable *action token*. An MLP
*mapper* takes the action token's last hidden state into the action expert's feature space,
and the expert's own diffusion decoder (copied with its weights and action normalisation)
turns those features into an action chunk. The VLM's token head is not used.

Two options widen what reaches the mapper; neither is in the paper. ``action_tokens`` > 1
appends that many learnable action tokens and hands the mapper all their hidden states
(concatenated): a small trunk's one hidden state may be too narrow for the expert's features.
With ``state_skip`` the mapper also reads the state token itself, beside the action tokens'
hidden states. The expert's features are a function of its image features and of the proprio
(goal position included on ManiSkill); without the skip the mapper must recover the proprio
from a frozen trunk that was never trained to pass the new state token on. Measured: it
doubled PickCube success at the default recipe and did not help on PushCube
(docs/experiments/align.md), so both options stay off by default.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla_kd.nn.normalization import MinMaxNormalizer
from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionDecoder
from vla_kd.policies.pretrained import ChunkedPolicy, PretrainedPolicy
from vla_kd.policies.token_policy import TokenPolicy
from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

#: the VLM saved in its own subfolder (a Hugging Face VLM keeps its save_pretrained format)
VLM_FOLDER = "vlm"


@dataclass
class AlignedVLAConfig:
    """The VLM's and the expert's own configs (as dicts), the state split and the mapper width."""

    vlm: dict
    expert: dict
    state_parts: list[int] | None = None  # sizes of the proprio parts (None: one part)
    mapper_hidden: int = 512
    #: the mapper also reads the state token (saved policies without the field: False)
    state_skip: bool = False
    #: learnable action tokens whose last hidden states the mapper reads, concatenated
    action_tokens: int = 1
    #: the VLM's policy type: token_vla (weights among this policy's) | hf_vla (saved in vlm/)
    vlm_type: str = "token_vla"

    @property
    def horizon(self) -> int:  # the chunk the reused decoder denoises
        return int(self.expert["horizon"])

    @property
    def image_size(self) -> int:
        return int(self.vlm["image_size"])

    @property
    def cameras(self) -> tuple[str, ...]:  # what it reads: the VLM's cameras
        return tuple(self.vlm.get("cameras", ("rgb",)))


class AlignedVLA(ChunkedPolicy):
    """VLM + state token + action token -> mapper -> the action expert's diffusion decoder."""

    policy_type = "aligned_vla"
    config_class = AlignedVLAConfig

    def __init__(self, config: AlignedVLAConfig, vlm: TokenPolicy | None = None) -> None:
        super().__init__(config)
        if vlm is None and config.vlm_type != "token_vla":
            raise ValueError(f"an aligned {config.vlm_type} is built around its VLM: pass vlm=")
        self.vlm = vlm if vlm is not None else TokenVLA(TokenVLAConfig(**config.vlm))
        expert = ActionExpertConfig(**config.expert)
        hidden, state_dim = self.vlm.trunk_shape.hidden, self.vlm.config.state_dim
        self.parts = list(config.state_parts or [state_dim])
        if sum(self.parts) != state_dim:
            raise ValueError(f"state_parts {self.parts} must add up to the state size {state_dim}")
        self.state_encoders = nn.ModuleList(nn.Linear(size, hidden) for size in self.parts)
        self.state_fuse = nn.Linear(len(self.parts) * hidden, hidden)
        if config.action_tokens < 1:
            raise ValueError(f"action_tokens must be >= 1, got {config.action_tokens}")
        self.action_token = nn.Parameter(torch.randn(1, config.action_tokens, hidden) * 0.02)
        mapper_input = hidden * (config.action_tokens + (1 if config.state_skip else 0))
        self.mapper = nn.Sequential(
            nn.Linear(mapper_input, config.mapper_hidden),
            nn.GELU(),
            nn.Linear(config.mapper_hidden, expert.features),
        )
        self.decoder = DiffusionActionDecoder(expert)
        self.action_norm = MinMaxNormalizer(expert.action_dim)
        self.sample_seed = 0

    @classmethod
    def from_parts(
        cls, vlm, expert, state_parts: list[int] | None = None, mapper_hidden: int = 512,
        state_skip: bool = False, action_tokens: int = 1,
    ) -> AlignedVLA:
        """An aligned VLA holding ``vlm``'s weights and ``expert``'s decoder and normalisation."""
        config = AlignedVLAConfig(
            vlm=dataclasses.asdict(vlm.config),
            expert=dataclasses.asdict(expert.config),
            state_parts=state_parts,
            mapper_hidden=mapper_hidden,
            state_skip=state_skip,
            action_tokens=action_tokens,
            vlm_type=vlm.policy_type,
        )
        if config.vlm_type == "token_vla":
            model = cls(config)
            model.vlm.load_state_dict(vlm.state_dict())
        else:
            model = cls(config, copy.deepcopy(vlm))
        model.decoder.load_state_dict(expert.decoder.state_dict())
        model.action_norm.load_state_dict(expert.action_norm.state_dict())
        return model

    def parts_saved_apart(self) -> dict[str, PretrainedPolicy]:
        return {} if self.config.vlm_type == "token_vla" else {VLM_FOLDER: self.vlm}

    @classmethod
    def from_config(cls, config: AlignedVLAConfig, folder: Path) -> AlignedVLA:
        if config.vlm_type == "token_vla":
            return cls(config)
        return cls(config, PretrainedPolicy.from_pretrained(folder / VLM_FOLDER))

    @property
    def n_action_tokens(self) -> int:
        """Action values per chunk (what a token VLA decodes as tokens), for like-for-like rates."""
        return self.config.horizon * 7

    @property
    def last_iterations(self) -> int:
        """Decoder passes per call: the DDIM denoising steps."""
        return int(self.config.expert["inference_steps"])

    # ------------------------------------------------------------- features
    def state_token(self, state: torch.Tensor) -> torch.Tensor:
        normed = self.vlm.state_norm(state)
        parts = torch.split(normed, self.parts, dim=-1)
        encoded = [encode(part) for encode, part in zip(self.state_encoders, parts, strict=True)]
        return self.state_fuse(torch.cat(encoded, dim=-1))[:, None]

    def action_hidden(
        self, rgb, state: torch.Tensor, instructions: list[str], state_token: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, action_tokens * hidden)``: the trunk's last hidden states of the action tokens,
        concatenated (``rgb``: what the VLM's ``camera_input`` gives; ``state_token``:
        ``state``'s, if already encoded)."""
        state_token = self.state_token(state) if state_token is None else state_token
        extra = torch.cat([state_token, self.action_token.expand(len(state), -1, -1)], dim=1)
        last = self.vlm.hidden_after_prompt(rgb, state, instructions, extra)
        return last[:, -self.config.action_tokens :].flatten(1)

    def with_state_skip(self, hidden: torch.Tensor, state_token: torch.Tensor) -> torch.Tensor:
        """What the mapper reads: the action tokens' ``hidden`` states, followed by the
        ``state_token`` (``(B, 1, hidden)``) with ``state_skip``."""
        return torch.cat([hidden, state_token[:, 0]], dim=-1) if self.config.state_skip else hidden

    def mapper_input(self, rgb, state: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """The mapper's input for an observation (see ``with_state_skip``)."""
        state_token = self.state_token(state)
        return self.with_state_skip(self.action_hidden(rgb, state, instructions, state_token), state_token)

    def features(self, rgb, state: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """``(B, expert features)``: the mapper's output, what the reused decoder reads."""
        return self.mapper(self.mapper_input(rgb, state, instructions))

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        features = self.features(
            self.vlm.camera_input(obs), torch.as_tensor(obs["state"]), list(obs["instruction"])
        )
        # A fixed, advancing seed: rollouts are reproducible, samples still differ per call.
        generator = torch.Generator().manual_seed(self.sample_seed)
        self.sample_seed += 1
        chunk = self.action_norm.unnormalize(self.decoder.sample(features, generator))
        return chunk.clamp(-1, 1).numpy()
