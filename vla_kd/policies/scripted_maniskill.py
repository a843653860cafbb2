"""Scripted experts that read privileged state (object and goal poses) and emit contract actions.

They exist to show the evaluator measures success honestly (a competent policy scores > 0, a
random one 0) and to seed demonstrations. They are finite-state controllers on end-effector
deltas (``pd_ee_delta_pose``: 1.0 = 10 cm / 0.1 rad per step), written by hand because no
library ships EE-delta experts for these tasks. ManiSkill's own motion-planning solutions drive
the simulator directly in joint-position control, so they cannot be run through ``act(obs)``;
they are used for demonstrations instead.
"""
from __future__ import annotations

import numpy as np

from vla_kd.errors import UserError
from vla_kd.policies.base import Policy
from vla_kd.policies.scripted_common import CLOSED, OPEN, StateReader, move_toward


class ScriptedExpert(Policy):
    """Base for per-task experts: one phase counter per batch element."""

    uses_privileged = True
    needs = ("tcp_pose", "obj_pose", "goal_pos")

    def __init__(self, layout: dict[str, dict[str, slice]]) -> None:
        missing = [n for n in self.needs if not any(n in p for p in layout.values())]
        if "privileged" not in layout or missing:
            needed = ", ".join(missing) or "privileged"
            raise UserError(
                f"scripted expert '{self.name}' needs privileged state ({needed}); "
                "set include_privileged=true for the env"
            )
        self.read = StateReader(layout)
        self._phase: dict[int, int] = {}
        self._timer: dict[int, int] = {}

    def reset(self) -> None:
        self._phase.clear()
        self._timer.clear()

    def reset_envs(self, indices) -> None:
        """Forget the phase of the batch elements ``indices`` (their episodes restarted)."""
        for i in indices:
            self._phase.pop(int(i), None)
            self._timer.pop(int(i), None)

    def act(self, obs: dict) -> np.ndarray:
        batch = len(obs["state"])
        return np.stack([self._act_one(obs, i) for i in range(batch)]).astype(np.float32)

    def _act_one(self, obs: dict, i: int) -> np.ndarray:
        raise NotImplementedError


class PickAndPlaceExpert(ScriptedExpert):
    """Above the object, down, close, carry to the goal (PickCube)."""

    name = "scripted_pick_place"

    def _act_one(self, obs: dict, i: int) -> np.ndarray:
        tcp = self.read.get(obs, i, "tcp_pose")[:3]
        obj = self.read.get(obs, i, "obj_pose")[:3]
        goal = self.read.get(obs, i, "goal_pos")
        phase = self._phase.setdefault(i, 0)
        if phase == 0:  # hover above the object, gripper open
            target = obj + np.array([0.0, 0.0, 0.06])
            if np.linalg.norm(target - tcp) < 0.01:
                self._phase[i] = 1
            return move_toward(tcp, target, OPEN)
        if phase == 1:  # descend onto it
            if np.linalg.norm(obj - tcp) < 0.006:
                self._phase[i], self._timer[i] = 2, 0
            return move_toward(tcp, obj, OPEN)
        if phase == 2:  # close the gripper and wait for the fingers
            self._timer[i] += 1
            if self._timer[i] >= 6:
                self._phase[i] = 3
            return move_toward(tcp, obj, CLOSED)
        return move_toward(tcp, goal, CLOSED)  # carry to the goal and hold


class PushToGoalExpert(ScriptedExpert):
    """Get behind the object (seen from the goal), lower, push it onto the goal (PushCube,
    PullCube: pulling toward the robot is pushing from the far side)."""

    name = "scripted_push"
    #: How far behind the object's centre the TCP starts, and the object's half-size.
    standoff, half_size = 0.05, 0.02

    def _act_one(self, obs: dict, i: int) -> np.ndarray:
        tcp = self.read.get(obs, i, "tcp_pose")[:3]
        obj = self.read.get(obs, i, "obj_pose")[:3]
        goal = self.read.get(obs, i, "goal_pos")[:3]
        direction = goal[:2] - obj[:2]
        direction /= np.linalg.norm(direction) + 1e-9
        behind = obj.copy()
        behind[:2] -= direction * self.standoff
        phase = self._phase.setdefault(i, 0)
        if phase == 0:  # above the start point
            target = behind + np.array([0.0, 0.0, 0.08])
            if np.linalg.norm(target - tcp) < 0.01:
                self._phase[i] = 1
            return move_toward(tcp, target, CLOSED)
        if phase == 1:  # down to the object's height
            target = behind.copy()
            target[2] = self.half_size
            if np.linalg.norm(target - tcp) < 0.008:
                self._phase[i] = 2
            return move_toward(tcp, target, CLOSED)
        target = np.array([goal[0], goal[1], self.half_size])
        target[:2] -= direction * (self.standoff - self.half_size)
        return move_toward(tcp, target, CLOSED, gain=0.6)


EXPERTS: dict[str, type[ScriptedExpert]] = {
    "PickCube-v1": PickAndPlaceExpert,
    "PushCube-v1": PushToGoalExpert,
    "PullCube-v1": PushToGoalExpert,
}


def maniskill_expert_for(env) -> ScriptedExpert:
    """The scripted expert for a ManiSkill ``env``'s task, or a one-line error naming the tasks
    that have one."""
    task = getattr(env, "task", "?")
    if task not in EXPERTS:
        raise UserError(
            f"no scripted expert for task '{task}' yet; tasks with one: {', '.join(sorted(EXPERTS))}"
        )
    return EXPERTS[task](env.layout)
