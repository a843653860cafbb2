"""Tactile rewards of demonstration frames and the sample weights of HapticVLA's reward-weighted
flow matching.

The teacher learns, at frame ``t``, the chunk of the next ``H`` actions; the reward judges what
touch that chunk produced in the demonstration, over the frames ``W_t = t .. t+H-1`` of its
episode. From each frame's tactile vector (:mod:`vla_kd.envs.tactile`): the grasp force ``g_s``
(mean of the two finger forces), its change ``d_s = |mean of the two finger changes|``, and
whether a finger touches the object without ManiSkill's grasp test passing (``slip_s``)::

    excess_t = mean over W_t of max(0, g_s - force_limit) / force_limit   squeezing harder than needed
    spike_t  = mean over W_t of max(0, d_s - spike_limit) / spike_limit   force spikes
    slip_t   = mean over W_t of slip_s                                   touching without a grasp
    r_t      = -(excess_t + spike_t + slip_weight * slip_t)              (<= 0)
    w_t      = max(exp(r_t / temperature), min_weight), then divided by its mean over the dataset

HapticVLA penalises excessive grasp force and poor grasp trajectories; the three terms, their
limits, the exponential weighting (advantage-weighted regression's form, Peng et al. 2019) and
the floor that keeps every demonstration in the objective are this suite's choices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LEFT, RIGHT, LEFT_CHANGE, RIGHT_CHANGE, GRASPED = range(5)  # vla_kd.envs.tactile.FIELDS


@dataclass(frozen=True)
class RewardSettings:
    """The limits and the weighting of the formula above (newtons; change per control step)."""

    force_limit: float
    spike_limit: float
    contact_force: float
    slip_weight: float
    temperature: float
    min_weight: float


def frame_penalties(tactile: np.ndarray, s: RewardSettings) -> dict[str, np.ndarray]:
    """Per frame: the excess-force, spike and slip terms before the window mean."""
    force = tactile[:, [LEFT, RIGHT]].mean(1)
    change = np.abs(tactile[:, [LEFT_CHANGE, RIGHT_CHANGE]].mean(1))
    touching = tactile[:, [LEFT, RIGHT]].max(1) > s.contact_force
    return {
        "excess": np.maximum(force - s.force_limit, 0.0) / s.force_limit,
        "spike": np.maximum(change - s.spike_limit, 0.0) / s.spike_limit,
        "slip": (touching & (tactile[:, GRASPED] < 0.5)).astype(np.float64),
    }


def episode_ends(episode_index: np.ndarray) -> np.ndarray:
    """For each frame of a dataset whose episodes are contiguous: one past its episode's last frame."""
    starts = np.flatnonzero(np.r_[True, episode_index[1:] != episode_index[:-1]])
    stops = np.r_[starts[1:], len(episode_index)]
    return np.repeat(stops, stops - starts)


def window_means(values: np.ndarray, ends: np.ndarray, horizon: int) -> np.ndarray:
    """Mean of ``values`` over each frame's window ``t .. min(t + horizon, episode end) - 1``."""
    cumulative = np.r_[0.0, np.cumsum(values)]
    index = np.arange(len(values))
    stop = np.minimum(index + horizon, ends)
    return (cumulative[stop] - cumulative[index]) / (stop - index)


def tactile_rewards(
    tactile: np.ndarray, episode_index: np.ndarray, horizon: int, settings: RewardSettings
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(``r_t`` per frame, the three window terms per frame)."""
    ends = episode_ends(episode_index)
    terms = {k: window_means(v, ends, horizon) for k, v in frame_penalties(tactile, settings).items()}
    reward = -(terms["excess"] + terms["spike"] + settings.slip_weight * terms["slip"])
    return reward, terms


def reward_weights(reward: np.ndarray, settings: RewardSettings) -> np.ndarray:
    """``w_t``: exponentiated rewards, floored, with mean 1 over the dataset."""
    weights = np.maximum(np.exp(reward / settings.temperature), settings.min_weight)
    return weights / weights.mean()


class FrameWeights:
    """Sample weights looked up by a batch's ``(episode_index, frame_index)``."""

    def __init__(self, weights: np.ndarray, episode_index: np.ndarray, frame_index: np.ndarray) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float32)
        self.start = np.zeros(int(episode_index.max()) + 1, np.int64)
        # frame_index counts from 0 in each episode, so the first row of an episode is its start
        firsts = frame_index == 0
        self.start[episode_index[firsts]] = np.flatnonzero(firsts)

    def of(self, batch: dict) -> torch.Tensor:
        rows = self.start[np.asarray(batch["episode_index"])] + np.asarray(batch["frame_index"])
        return self.weights[torch.as_tensor(rows)]


def weight_summary(reward: np.ndarray, terms: dict[str, np.ndarray], weights: np.ndarray) -> dict:
    """What the run summary and the tracker report about the weighting."""
    return {
        "reward_mean": float(reward.mean()),
        "penalised_share": float((reward < 0).mean()),
        **{f"{k}_share": float((v > 0).mean()) for k, v in terms.items()},
        "weight_min": float(weights.min()),
        "weight_max": float(weights.max()),
        # Kish's effective sample size as a share of the frames: 1 = unweighted
        "effective_share": float(weights.sum() ** 2 / (weights ** 2).sum() / len(weights)),
    }
