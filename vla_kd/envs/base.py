"""The one environment contract both simulators are wrapped into.

Observation: a ``gymnasium.spaces.Dict`` with
  * ``rgb``        uint8 (H, W, 3), agent-view camera (only when ``obs_mode="rgb"``),
  * ``state``      float32 proprioception (+ the task-specifying extras the simulator gives
                   visual policies, e.g. ManiSkill's goal position),
  * ``privileged`` float32 object / goal poses (optional; for scripted experts and state-based
                   RL students only, never for a VLA),
  * ``tactile``    float32 finger contact forces (optional, ManiSkill; vla_kd.envs.tactile):
                   a tactile teacher's input, never a student's at inference.
Action: 7-D end-effector delta (xyz, rpy, gripper) in [-1, 1].
``info["success"]`` and ``info["instruction"]`` are always present; ``env.instruction`` too;
ManiSkill adds ``info["grasp_force"]`` (N) every step.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from vla_kd.errors import UserError, unknown_name

ACTION_DIM = 7
OBS_MODES = ("state", "rgb")
BACKENDS = ("maniskill", "libero")


def action_space() -> gym.spaces.Box:
    """The shared 7-D end-effector delta action space."""
    return gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)


def observation_space(
    state_dim: int, rgb_shape: tuple[int, int, int] | None, privileged_dim: int | None,
    tactile_dim: int | None = None,
) -> gym.spaces.Dict:
    """The contract's observation space for the given parts."""
    spaces: dict[str, gym.Space] = {}
    if rgb_shape is not None:
        spaces["rgb"] = gym.spaces.Box(0, 255, shape=rgb_shape, dtype=np.uint8)
    spaces["state"] = gym.spaces.Box(-np.inf, np.inf, shape=(state_dim,), dtype=np.float32)
    if privileged_dim is not None:
        spaces["privileged"] = gym.spaces.Box(
            -np.inf, np.inf, shape=(privileged_dim,), dtype=np.float32
        )
    if tactile_dim is not None:
        spaces["tactile"] = gym.spaces.Box(-np.inf, np.inf, shape=(tactile_dim,), dtype=np.float32)
    return gym.spaces.Dict(spaces)


def flatten_values(parts: dict) -> np.ndarray:
    """Concatenate a (possibly nested) dict of scalars/arrays into one float32 vector.

    Keys are taken in insertion order, which both simulators keep stable across steps.
    """
    chunks: list[np.ndarray] = []
    for value in parts.values():
        if isinstance(value, dict):
            chunks.append(flatten_values(value))
        else:
            chunks.append(np.asarray(value, dtype=np.float32).reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def layout_of(parts: dict) -> dict[str, slice]:
    """Name -> slice of each top-level entry in ``flatten_values(parts)``'s output."""
    layout, start = {}, 0
    for key, value in parts.items():
        size = flatten_values(value).size if isinstance(value, dict) else np.asarray(value).size
        layout[key] = slice(start, start + size)
        start += size
    return layout


@dataclass(frozen=True)
class TaskId:
    """A parsed task name: ``maniskill/PickCube-v1`` or ``libero/libero_spatial/0``."""

    backend: str
    name: str
    index: int | None = None

    @classmethod
    def parse(cls, text: str) -> TaskId:
        parts = str(text).strip("/").split("/")
        if parts[0] not in BACKENDS:

            raise unknown_name("simulator in task", parts[0], BACKENDS)
        if parts[0] == "maniskill":
            if len(parts) != 2:
                raise UserError(f"ManiSkill task must look like 'maniskill/PickCube-v1', got '{text}'")
            return cls("maniskill", parts[1])
        if len(parts) != 3 or not parts[2].isdigit():
            raise UserError(f"LIBERO task must look like 'libero/libero_spatial/0', got '{text}'")
        return cls("libero", parts[1], int(parts[2]))

    def __str__(self) -> str:
        suffix = f"/{self.index}" if self.index is not None else ""
        return f"{self.backend}/{self.name}{suffix}"


def check_obs_mode(obs_mode: str) -> None:
    if obs_mode not in OBS_MODES:

        raise unknown_name("obs_mode", obs_mode, OBS_MODES)
