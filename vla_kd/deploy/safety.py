"""Every command a deployed policy sends passes through here: non-finite actions are refused,
steps are clipped per tick, the gripper to its range, and (when the robot reports where its
end effector is) the next position to a workspace box. Written by hand: the limits are
specific to this action contract."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SafetyLimits:
    """Limits on one tick's command. Translation in metres, rotation in radians, per tick."""

    max_translation: float = 0.02
    max_rotation: float = 0.1
    gripper_range: tuple[float, float] = (-1.0, 1.0)
    workspace_low: tuple[float, float, float] | None = None  # end-effector box, metres
    workspace_high: tuple[float, float, float] | None = None
    linear_scale: float = 0.1  # metres per unit of the contract's xyz action (pd_ee_delta_pose)
    angular_scale: float = 0.1  # radians per unit of its rpy action


@dataclass
class SafeCommand:
    """A vetted end-effector delta in SI units and the gripper command, with what was changed."""

    linear: np.ndarray  # (3,) metres this tick
    angular: np.ndarray  # (3,) radians this tick
    gripper: float
    flags: list[str] = field(default_factory=list)  # "non_finite", "clipped_step", "workspace", ...

    @property
    def is_hold(self) -> bool:
        return not self.linear.any() and not self.angular.any()


def hold(gripper: float, flag: str | None = None) -> SafeCommand:
    """Stand still, keep the gripper where it was commanded last."""
    return SafeCommand(np.zeros(3), np.zeros(3), float(gripper), [flag] if flag else [])


def _clip_norm(vector: np.ndarray, limit: float) -> tuple[np.ndarray, bool]:
    norm = float(np.linalg.norm(vector))
    if norm <= limit:
        return vector, False
    return vector * (limit / norm), True


def vet_action(
    action: np.ndarray, limits: SafetyLimits, last_gripper: float, ee_position: np.ndarray | None = None
) -> SafeCommand:
    """The contract's 7-D action (xyz, rpy, gripper in [-1, 1]) as a command within ``limits``."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (7,) or not np.isfinite(action).all():
        return hold(last_gripper, "non_finite")
    flags = []
    linear, clipped = _clip_norm(action[:3] * limits.linear_scale, limits.max_translation)
    angular, clipped_rotation = _clip_norm(action[3:6] * limits.angular_scale, limits.max_rotation)
    if clipped or clipped_rotation:
        flags.append("clipped_step")
    low, high = limits.gripper_range
    gripper = float(np.clip(action[6], low, high))
    if gripper != action[6]:
        flags.append("clipped_gripper")
    if ee_position is not None and limits.workspace_low is not None and limits.workspace_high is not None:
        position = np.asarray(ee_position, dtype=np.float64)
        target = np.clip(position + linear, limits.workspace_low, limits.workspace_high)
        if not np.allclose(target, position + linear):
            flags.append("workspace")
            # back toward the box from outside, but never faster than one step
            linear, _ = _clip_norm(target - position, limits.max_translation)
    return SafeCommand(linear, angular, gripper, flags)
