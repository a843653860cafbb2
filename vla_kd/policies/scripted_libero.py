"""A privileged-state pick-and-place expert for LIBERO tasks whose goal is one object ``in`` or
``on`` another (LIBERO-Object and LIBERO-Spatial): above the object, down, close, lift, carry
above the target, lower, open. Positions come from the env's privileged vector; the object
and target come from the task's BDDL goal. OSC_POSE moves 5 cm per unit action."""
from __future__ import annotations

import numpy as np

from vla_kd.errors import UserError
from vla_kd.policies.base import Policy
from vla_kd.policies.scripted_common import CLOSED, OPEN, StateReader, move_toward

OSC_SCALE = 0.05


def pick_place_target(goal: list[list[str]]) -> tuple[str, str]:
    """(object, target object) from goals like ``in(obj, basket_1_contain_region)``."""
    if len(goal) != 1 or goal[0][0] not in ("in", "on") or len(goal[0]) != 3:
        raise UserError(f"the LIBERO expert handles one in/on goal, not {goal}")
    _, obj, target = goal[0]
    for suffix in ("_contain_region", "_top_region", "_region"):
        if target.endswith(suffix):
            target = target[: -len(suffix)]
            break
    return obj, target


class LiberoPickPlaceExpert(Policy):
    """Finite-state pick and place with per-episode phase memory (batch of one)."""

    name = "scripted_libero_pick_place"
    uses_privileged = True
    hover, grasp_depth, carry_height, release_height = 0.10, 0.0, 0.18, 0.10

    def __init__(self, layout: dict, goal: list[list[str]]) -> None:
        if "privileged" not in layout:
            raise UserError("the LIBERO expert needs include_privileged=true")
        self.obj, self.target = pick_place_target(goal)
        for name in (self.obj, self.target):
            if f"{name}_pos" not in layout["privileged"]:
                raise UserError(f"LIBERO object '{name}' is not in the privileged state")
        self.read = StateReader(layout)
        self.reset()

    def reset(self) -> None:
        self.phase, self.timer, self.grasp_point = 0, 0, None
        self.rest_height, self.held_offset, self.attempts = None, np.zeros(3), 0

    def act(self, obs: dict) -> np.ndarray:
        if len(obs["state"]) != 1:
            raise UserError("the LIBERO expert drives one env at a time")
        return self._act_one(obs)[None]

    def _act_one(self, obs: dict) -> np.ndarray:
        eef = self.read.get(obs, 0, "eef_pos")
        obj = self.read.get(obs, 0, f"{self.obj}_pos")
        target = self.read.get(obs, 0, f"{self.target}_pos")
        self.timer += 1
        up = np.array([0.0, 0.0, 1.0])
        grasp = obj + self.grasp_offset()
        if self.phase == 0:  # hover over the object
            goal = grasp + up * self.hover
            if np.linalg.norm(goal - eef) < 0.015 or self.timer > 60:
                self.phase, self.timer = 1, 0
            return move_toward(eef, goal, OPEN, scale=OSC_SCALE)
        if self.phase == 1:  # descend onto it
            goal = grasp + up * self.grasp_depth
            if np.linalg.norm(goal - eef) < 0.01 or self.timer > 40:
                self.phase, self.timer, self.grasp_point = 2, 0, goal
                self.rest_height = obj[2]
            return move_toward(eef, goal, OPEN, scale=OSC_SCALE)
        if self.phase == 2:  # close the gripper
            if self.timer > 12:
                self.phase, self.timer = 3, 0
            return move_toward(eef, self.grasp_point, CLOSED, scale=OSC_SCALE)
        if self.phase == 3:  # lift
            goal = self.grasp_point + up * self.carry_height
            if eef[2] > goal[2] - 0.02 or self.timer > 40:
                if obj[2] - self.rest_height < 0.03 and self.attempts < 2:  # missed: open, retry
                    self.phase, self.timer, self.attempts = 0, 0, self.attempts + 1
                    return move_toward(eef, eef, OPEN, scale=OSC_SCALE)
                # Carry and lower so that the *object* ends above the target: the grasp rarely
                # holds it centred (the fingers stop on its rim), and that offset, up to 10 cm,
                # used to drop it beside the basket.
                self.held_offset = eef - obj
                self.held_offset[2] = 0.0
                self.phase, self.timer = 4, 0
            return move_toward(eef, goal, CLOSED, scale=OSC_SCALE)
        held = self.held_offset  # at half speed while holding: an off-centre grasp slips
        if self.phase == 4:  # carry above the target
            goal = target + held + up * self.carry_height
            goal[2] = max(goal[2], eef[2])
            if np.linalg.norm((goal - eef)[:2]) < 0.015 or self.timer > 100:
                self.phase, self.timer = 5, 0
            return self._slow(move_toward(eef, goal, CLOSED, scale=OSC_SCALE))
        if self.phase == 5:  # lower toward it
            goal = target + held + up * self.release_height
            if np.linalg.norm(goal - eef) < 0.015 or self.timer > 40:
                self.phase, self.timer = 6, 0
            return self._slow(move_toward(eef, goal, CLOSED, scale=OSC_SCALE))
        return move_toward(eef, eef, OPEN, scale=OSC_SCALE)  # release and hold

    #: Rim grasps: a bowl is wider than the open gripper, so the fingers pinch its wall at
    #: this distance (m) from the centre, a little above its base; each retry tries the next side.
    rim_radius, rim_height = 0.055, 0.02
    rim_sides = ((0.0, 1.0), (0.0, -1.0), (1.0, 0.0))  # the fingers close along x

    def grasp_offset(self) -> np.ndarray:
        """Where to close the fingers relative to the object's origin."""
        if "bowl" not in self.obj:
            return np.zeros(3)
        dx, dy = self.rim_sides[self.attempts % len(self.rim_sides)]
        return np.array([dx * self.rim_radius, dy * self.rim_radius, self.rim_height])

    @staticmethod
    def _slow(action: np.ndarray, limit: float = 0.5) -> np.ndarray:
        action[:3] = np.clip(action[:3], -limit, limit)
        return action
