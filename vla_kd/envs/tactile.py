"""Touch in ManiSkill: the contact forces between the gripper's two fingers and the task's object.

The contract's optional ``tactile`` observation is, per control step::

    [left force, right force, left change, right change, grasped]

``force``: the magnitude (N) of the contact force between a finger link and the task's object,
from the simulator's pairwise contact query (``scene.get_pairwise_contact_forces``, summed over
the step's contacts); ``change``: its difference from the previous control step (0 after a
reset); ``grasped``: ManiSkill's own grasp test (``agent.is_grasping``: both fingers press the
object with at least 0.5 N within 85 degrees of their closing direction), 1.0 or 0.0. A task
whose object is not known here reads each finger's net contact force (anything it touches) and
never reports a grasp.

The *grasp force* of a step, the safety figure the evaluator reports for every policy, is the
mean of the two finger forces: for a parallel gripper holding an object still, both fingers press
with the grip force.
"""

from __future__ import annotations

import numpy as np

#: the object a task's gripper is meant to touch, as its env names the actor
GRASPED_OBJECT = {
    "PickCube-v1": "cube",
    "StackCube-v1": "cubeA",
    "PegInsertionSide-v1": "peg",
    "PushCube-v1": "obj",
    "PullCube-v1": "obj",
    "LiftPegUpright-v1": "peg",
    "PokeCube-v1": "cube",
    "PickSingleYCB-v1": "obj",
    "PlaceSphere-v1": "obj",
}
FIELDS = ("left_force", "right_force", "left_change", "right_change", "grasped")
TACTILE_DIM = len(FIELDS)


class FingerForces:
    """Reads the tactile vector of one ManiSkill env (``base``: the unwrapped ``BaseEnv``) after
    each step; :meth:`reset` at every episode start."""

    def __init__(self, base, task: str) -> None:
        agent = base.agent
        self.fingers = (getattr(agent, "finger1_link", None), getattr(agent, "finger2_link", None))
        self.scene, self.agent = base.scene, agent
        name = GRASPED_OBJECT.get(task)
        self.object = getattr(base, name, None) if name else None
        self.available = all(f is not None for f in self.fingers)
        self._last = np.zeros(2, np.float32)

    def reset(self) -> None:
        self._last = np.zeros(2, np.float32)

    def finger_forces(self) -> np.ndarray:
        """``(2,)`` contact force magnitudes (N) of the left and right finger now: ManiSkill's
        pairwise query on one fetch of the step's contacts (its scene method fetches them again
        for every pair)."""
        if not self.available:
            return np.zeros(2, np.float32)
        if self.object is None:
            forces = [f.get_net_contact_forces().cpu().numpy() for f in self.fingers]
            return np.array([np.linalg.norm(f.reshape(-1, 3)[0]) for f in forces], np.float32)
        from mani_skill.utils.sapien_utils import get_pairwise_contact_impulse  # optional: maniskill extra

        contacts = self.scene.px.get_contacts()
        target = self.object._bodies[0].entity
        impulses = [get_pairwise_contact_impulse(contacts, f._bodies[0].entity, target) for f in self.fingers]
        forces = np.linalg.norm(np.asarray(impulses, np.float64), axis=1) / self.scene.px.timestep
        return forces.astype(np.float32)

    def grasped(self) -> bool:
        if self.object is None or not self.available or not hasattr(self.agent, "is_grasping"):
            return False
        return bool(np.asarray(self.agent.is_grasping(self.object).cpu()).reshape(-1)[0])

    def read(self, grasp: bool = True) -> np.ndarray:
        """The tactile vector (see the module docstring); updates the change's reference.
        ``grasp=False`` leaves the grasp flag 0 (it costs two more contact fetches)."""
        now = self.finger_forces()
        change, self._last = now - self._last, now
        return np.concatenate([now, change, [float(grasp and self.grasped())]]).astype(np.float32)


def grasp_force(tactile: np.ndarray) -> float:
    """The step's grasp force (N) from its tactile vector: the mean of the two finger forces."""
    return float(np.mean(tactile[:2]))


def episode_forces(forces: list[float]) -> dict[str, float | None]:
    """An episode's grasp-force figures from its steps' ``info["grasp_force"]``: the peak, and the
    mean over the steps in contact (force above 0; 0.0 when it never touched). None: the
    simulator reports no forces."""
    if not forces:
        return {"peak_grasp_force": None, "mean_grasp_force": None}
    values = np.asarray(forces, dtype=np.float64)
    touching = values[values > 0]
    return {"peak_grasp_force": float(values.max()),
            "mean_grasp_force": float(touching.mean()) if len(touching) else 0.0}


def touched_peaks(peaks: list[float | None], means: list[float | None]) -> list[float]:
    """The episode peaks of the episodes that touched (an in-contact mean above 0)."""
    return [p for p, m in zip(peaks, means, strict=True) if p is not None and m]


def force_summary(peaks: list[float | None], means: list[float | None]) -> dict[str, float]:
    """Over episodes: the mean and the largest episode peak, the mean peak of the episodes that
    touched (a policy that rarely grasps has a low ``peak_mean`` for that reason alone; the
    touched mean compares how hard policies press when they do) and the mean of the episodes'
    in-contact means (episodes that touched only)."""
    peaks_known = [p for p in peaks if p is not None]
    peaks_touched = touched_peaks(peaks, means)
    touched = [m for m in means if m]
    return {
        "peak_mean": float(np.mean(peaks_known)) if peaks_known else 0.0,
        "peak_max": float(np.max(peaks_known)) if peaks_known else 0.0,
        "peak_mean_touched": float(np.mean(peaks_touched)) if peaks_touched else 0.0,
        "in_contact_mean": float(np.mean(touched)) if touched else 0.0,
    }
