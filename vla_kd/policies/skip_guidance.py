"""Prior-post skipping guidance (DySL-VLA): decide per control step whether the cheap, skipped
model may act.

*Prior* (before any compute), from the trajectory: a step is critical when the gripper command
flipped within the recent executed actions (grasp or release) or the arm command changed a lot
between consecutive actions (the motion is not a near-straight continuation); at the start of an
episode there is no history, so the step is critical. *Post* (after the informative layers
decoded the first action): the step is escalated to full depth when that action jumps from the
last executed one by more than a threshold, or flips the gripper (DeeR-VLA's L2 test between
successive outputs).

Both thresholds are quantiles of the same statistics over the *training demonstrations*
(:func:`calibrate`), never over evaluation episodes. The post threshold can instead be a
quantile of the trained student's own cheap-path jumps on the training demos (:func:`post_jumps`
on its proposals; ``post_calibration=student``): a policy's actions jump more than a
planner's smooth ones, so the demos' quantile rejects far more cheap actions than it names.
Closeness to contact is not used: a VLA student sees no object poses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ARM = slice(0, 6)
GRIPPER = 6


@dataclass
class SkipThresholds:
    """``prior``: motion-change score above which a step is critical; ``post``: jump (L2, arm
    command) above which the cheap action is rejected. None: that test is off."""

    prior: float | None
    post: float | None


def motion_change(history: np.ndarray) -> np.ndarray:
    """``(B, T, 7)`` executed actions -> ``(B,)`` mean L2 change of the arm command between
    consecutive actions."""
    return np.linalg.norm(np.diff(history[..., ARM], axis=1), axis=-1).mean(-1)


def gripper_flipped(actions: np.ndarray) -> np.ndarray:
    """``(B, T, 7)`` -> ``(B,)``: did the gripper command change sign anywhere in the sequence."""
    closed = actions[..., GRIPPER] >= 0
    return (closed[:, 1:] != closed[:, :-1]).any(axis=1)


def prior_critical(history: np.ndarray, complete: np.ndarray, thresholds: SkipThresholds) -> np.ndarray:
    """``(B,)`` True where the step must run at full depth. ``complete``: the row has a full
    history (False at the start of an episode)."""
    critical = ~np.asarray(complete, dtype=bool) | gripper_flipped(history)
    if thresholds.prior is not None:
        critical |= motion_change(history) > thresholds.prior
    return critical


def post_rejects(last_executed: np.ndarray, proposed: np.ndarray, thresholds: SkipThresholds) -> np.ndarray:
    """``(B,)`` True where the cheap path's first action ``proposed`` ``(B, 7)`` disagrees with
    the last executed action ``(B, 7)``: a gripper flip, or an arm jump above the threshold."""
    pair = np.stack([last_executed, proposed], axis=1)
    rejects = gripper_flipped(pair)
    if thresholds.post is not None:
        rejects |= np.linalg.norm(proposed[:, ARM] - last_executed[:, ARM], axis=-1) > thresholds.post
    return rejects


def post_jumps(last_executed: np.ndarray, proposed: np.ndarray) -> np.ndarray:
    """The post test's statistic: the L2 arm jump from ``last_executed`` ``(B, 7)`` to
    ``proposed`` ``(B, 7)``, for the rows whose gripper does not flip (a flip is always
    rejected, so it would only inflate a quantile)."""
    keep = ~gripper_flipped(np.stack([last_executed, proposed], axis=1))
    return np.linalg.norm(proposed[keep, ARM] - last_executed[keep, ARM], axis=-1)


def demo_statistics(
    episodes: Sequence[np.ndarray], horizon: int, history: int
) -> tuple[np.ndarray, np.ndarray]:
    """At every chunk boundary ``t = k * horizon >= history`` of every episode's actions
    ``(T, 7)``: the prior score of the ``history`` actions before ``t`` and the post jump from
    action ``t - 1`` to action ``t`` (only where the gripper does not flip: flips are always
    critical and would inflate the quantiles)."""
    scores, jumps = [], []
    for actions in episodes:
        for t in range(max(horizon, history), len(actions), horizon):
            window = actions[None, t - history : t]
            if not gripper_flipped(window)[0]:
                scores.append(float(motion_change(window)[0]))
            jumps.extend(post_jumps(actions[None, t - 1], actions[None, t]).tolist())
    return np.array(scores), np.array(jumps)


def calibrate(
    episodes: Sequence[np.ndarray],
    horizon: int,
    history: int,
    prior_quantile: float | None,
    post_quantile: float | None,
) -> SkipThresholds:
    """Thresholds from training demonstrations: the given quantiles of :func:`demo_statistics`
    (a quantile of 0.8 marks the demos' 20% least continuous steps as critical). None: off."""
    scores, jumps = demo_statistics(episodes, horizon, history)
    if len(scores) == 0 or len(jumps) == 0:
        raise ValueError(f"the demonstrations are too short for history {history} and chunk {horizon}")
    prior = None if prior_quantile is None else float(np.quantile(scores, prior_quantile))
    post = None if post_quantile is None else float(np.quantile(jumps, post_quantile))
    return SkipThresholds(prior=prior, post=post)
