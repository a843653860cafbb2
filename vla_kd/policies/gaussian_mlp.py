"""The RL student: stable-baselines3's Gaussian actor-critic, saved as a policy folder.

The network *is* SB3's ``ActorCriticPolicy`` (what PPO trains); this class only rebuilds it from
``config.json`` and runs it on contract observations, so a trained student loads with
``vla-kd eval policy=<folder>`` like any other policy. It reads ``state`` plus either the
privileged object/goal poses (a state student, as ManiSkill's PPO baselines use) or the camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from vla_kd.envs.base import ACTION_DIM, action_space
from vla_kd.envs.rl import repeat_box
from vla_kd.policies.pretrained import ChunkedPolicy
from vla_kd.policies.student_observations import observation_needs, student_keys


class StudentFeatures(BaseFeaturesExtractor):
    """SB3 features extractor over the student's keys only (the buffer also holds the
    teacher's inputs): NatureCNN on the channel-first camera, vectors concatenated."""

    def __init__(
        self, observation_space: gym.spaces.Dict, keys: tuple[str, ...], cnn_features: int = 256
    ) -> None:
        vector_keys = [k for k in keys if k != "rgb"]
        dim = sum(observation_space[k].shape[0] for k in vector_keys)
        super().__init__(observation_space, dim + (cnn_features if "rgb" in keys else 0))
        self.vector_keys = vector_keys
        self.cnn = NatureCNN(observation_space["rgb"], features_dim=cnn_features) if "rgb" in keys else None

    def forward(self, observations: dict) -> torch.Tensor:
        parts = [observations[k].float() for k in self.vector_keys]
        if self.cnn is not None:  # SB3's preprocessing has already scaled the image to [0, 1]
            parts.insert(0, self.cnn(observations["rgb"]))
        return torch.cat(parts, dim=-1)


@dataclass
class GaussianStudentConfig:
    """The observation space the actor-critic was trained on and its sizes."""

    observation: str = "state"  # state | rgb
    #: Every key of the training observation (the teacher's inputs too) -> its shape.
    observation_shapes: dict = field(default_factory=dict)
    net_arch: list = field(default_factory=lambda: [256, 256, 256])
    activation: str = "tanh"
    cnn_features: int = 256
    log_std_init: float = -0.5
    #: Actions per prediction: the actor outputs ``action_chunk * 7`` numbers, executed open-loop.
    action_chunk: int = 1

    @property
    def horizon(self) -> int:  # what ChunkedPolicy reads
        return self.action_chunk

    @property
    def image_size(self) -> int | None:
        shape = self.observation_shapes.get("rgb")
        return int(shape[-1]) if shape else None


def observation_space_from_shapes(shapes: dict) -> gym.spaces.Dict:
    spaces = {}
    for key, shape in shapes.items():
        if key == "rgb":
            spaces[key] = gym.spaces.Box(0, 255, shape=tuple(shape), dtype=np.uint8)
        else:
            spaces[key] = gym.spaces.Box(-np.inf, np.inf, shape=tuple(shape), dtype=np.float32)
    return gym.spaces.Dict(spaces)


def sb3_policy_kwargs(config: GaussianStudentConfig) -> dict:
    """``policy_kwargs`` that make SB3 build exactly this student's network."""
    activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[config.activation]
    return dict(
        net_arch=dict(pi=list(config.net_arch), vf=list(config.net_arch)),
        activation_fn=activation,
        log_std_init=config.log_std_init,
        features_extractor_class=StudentFeatures,
        features_extractor_kwargs=dict(
            keys=student_keys(config.observation), cnn_features=config.cnn_features
        ),
    )


class GaussianStudent(ChunkedPolicy):
    """A PPO/RPD-trained actor-critic acting with the Gaussian's mean (or, after
    :meth:`sample_with`, with seeded samples from it: the policy PPO's rollouts ran); a
    student trained with ``action_chunk = k`` executes each predicted k-action chunk open-loop."""

    policy_type = "gaussian_student"
    config_class = GaussianStudentConfig

    def __init__(self, config: GaussianStudentConfig) -> None:
        super().__init__(config)
        self.uses_privileged = observation_needs(config.observation)[1]
        self.actor_critic = MultiInputActorCriticPolicy(
            observation_space_from_shapes(config.observation_shapes),
            repeat_box(action_space(), config.action_chunk) if config.action_chunk > 1 else action_space(),
            lr_schedule=lambda _: 0.0,
            **sb3_policy_kwargs(config),
        )
        self._sampler: torch.Generator | None = None

    def sample_with(self, seed: int) -> None:
        """Act with samples from N(mean, std) drawn from a generator seeded by ``seed``.

        Early in training the learnt std is still wide and the mean alone can act very
        differently from the noisy policy that collected the rollouts (measured: a PushCube
        student succeeded in 0 of 40 episodes with its mean and 25 of 40 sampling)."""
        self._sampler = torch.Generator().manual_seed(int(seed))

    @property
    def observation_mode(self) -> str:
        """The contract obs_mode this student needs from an env."""
        return observation_needs(self.config.observation)[0]

    def mean_action(self, obs: dict) -> torch.Tensor:
        """The Gaussian's mean for a batch of tensors keyed like the training observation."""
        return actor_mean(self.actor_critic, obs)

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        """``(batch, action_chunk, 7)``: the mean (or a sample), clipped to the action space."""
        batch = {}
        for key in student_keys(self.config.observation):
            value = torch.as_tensor(np.asarray(obs[key]))
            batch[key] = value.permute(0, 3, 1, 2) if key == "rgb" else value  # contract rgb is HWC
        action = self.mean_action(batch)
        if self._sampler is not None:
            std = torch.exp(self.actor_critic.log_std)
            action = action + std * torch.randn(action.shape, generator=self._sampler)
        action = action.clamp(-1.0, 1.0)
        return action.numpy().astype(np.float32).reshape(-1, self.config.action_chunk, ACTION_DIM)


def actor_mean(policy: MultiInputActorCriticPolicy, obs: dict) -> torch.Tensor:
    """An SB3 actor-critic's Gaussian mean for a batch of tensors holding (at least) the keys
    its features extractor reads; the critic is not run."""
    features = policy.pi_features_extractor(_preprocess(obs))
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


def _preprocess(obs: dict) -> dict:
    """SB3's preprocessing for the keys given: uint8 images to [0, 1], vectors as float."""
    return {k: (v.float() / 255.0 if k == "rgb" else v.float()) for k, v in obs.items()}
