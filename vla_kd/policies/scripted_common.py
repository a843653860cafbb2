"""What the scripted experts share: gripper commands, the move-toward-a-target action and a reader
of named fields in the contract's state vectors. Each simulator's experts live in their own
module (``scripted_maniskill``, ``scripted_libero``) and import only this one."""
from __future__ import annotations

import numpy as np

from vla_kd.envs.base import ACTION_DIM

OPEN, CLOSED = 1.0, -1.0
POS_SCALE = 0.1  # metres per unit action in ManiSkill's pd_ee_delta_pose


def move_toward(
    tcp: np.ndarray, target: np.ndarray, gripper: float, gain: float = 1.0, scale: float = POS_SCALE
) -> np.ndarray:
    """A contract action moving the end effector toward ``target`` (``scale`` metres per unit)."""
    action = np.zeros(ACTION_DIM, np.float32)
    action[:3] = np.clip(gain * (target - tcp) / scale, -1.0, 1.0)
    action[6] = gripper
    return action


class StateReader:
    """Reads named fields out of the contract's state/privileged vectors via the env layout."""

    def __init__(self, layout: dict[str, dict[str, slice]]) -> None:
        self.layout = layout

    def get(self, obs: dict, i: int, name: str) -> np.ndarray:
        for part in ("state", "privileged"):
            if name in self.layout.get(part, {}):
                return np.asarray(obs[part][i][self.layout[part][name]], dtype=np.float64)
        raise KeyError(name)
