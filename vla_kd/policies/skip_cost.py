"""Whether a DySL student's guidance pays for itself, judged on its training demonstrations.

A guided call costs a full decode (prior: critical), a cheap decode (accepted), or the cheap
path's first action *and* a full decode (rejected by the post test). On a small trunk the cheap
path saves little (half the layers, none of the per-token overhead), so a guidance that rejects
many cheap actions costs more than the teacher. The expected cost of a call, as a share of a
full decode, is::

    ratio = p_full + p_skip * t_skip / t_full + p_rejected * (t_first + t_full) / t_full

with the path times ``t_*`` measured on demo frames at batch 1 on one thread (as an evaluation
worker decodes), in the thread's CPU time, and the path shares ``p_*`` from replaying the guidance
at the demos' chunk boundaries with the demos' own executed actions as history (an episode's first
call is always full). :func:`fit_post_threshold` raises the post threshold until the ratio is at
most a limit; when even a post test that only rejects gripper flips cannot reach it, the guidance does not pay
and the student runs at full depth (``skipping="off"``).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from vla_kd.policies.skip_calibration import cheap_path_replay
from vla_kd.policies.skip_guidance import SkipThresholds, prior_critical
from vla_kd.policies.skip_vla import with_settings


@dataclasses.dataclass
class PathTimes:
    """Median seconds of one call at batch 1: a full decode, a cheap decode, the cheap path's
    first action alone (what a rejected call wastes)."""

    full: float
    skip: float
    first: float


@dataclasses.dataclass
class GuidanceStatistics:
    """The guidance replayed at the demos' chunk boundaries: ``critical`` (B,) the prior sends the
    call to full depth; for the other rows, the cheap first action's arm ``jumps`` (B,) from the
    demo's previous action and its gripper ``flips`` (B,); ``start_share``: the share of calls
    that are an episode's first (always full)."""

    critical: np.ndarray
    jumps: np.ndarray
    flips: np.ndarray
    start_share: float


def shares(stats: GuidanceStatistics, post: float | None) -> tuple[float, float, float]:
    """(full, skip, rejected) shares of all calls under post threshold ``post`` (None: only
    gripper flips are rejected)."""
    cheap = ~stats.critical
    rejected = cheap & (stats.flips | ((stats.jumps > post) if post is not None else False))
    n, start = len(cheap), stats.start_share
    p_rejected = (1 - start) * rejected.sum() / n
    p_skip = (1 - start) * (cheap & ~rejected).sum() / n
    return 1.0 - p_skip - p_rejected, float(p_skip), float(p_rejected)


def cost_ratio(times: PathTimes, share: tuple[float, float, float]) -> float:
    """Expected cost of a guided call as a share of a full decode (the module's formula)."""
    p_full, p_skip, p_rejected = share
    return p_full + p_skip * times.skip / times.full + p_rejected * (times.first + times.full) / times.full


def fit_post_threshold(stats: GuidanceStatistics, times: PathTimes, post: float | None,
                       limit: float) -> tuple[float | None, float, bool]:
    """(post threshold, its cost ratio, whether the guidance pays): ``post`` if its ratio is at
    most ``limit``, else the smallest observed jump above it whose ratio is; if none is, the
    most permissive threshold's ratio and False (run at full depth)."""
    ratio = cost_ratio(times, shares(stats, post))
    if ratio <= limit:
        return post, ratio, True
    candidates = np.unique(stats.jumps[~stats.critical & ~stats.flips])
    for value in candidates[candidates > (post if post is not None else -np.inf)]:
        ratio = cost_ratio(times, shares(stats, float(value)))
        if ratio <= limit:
            return float(value), ratio, True
    return post, cost_ratio(times, shares(stats, None)), False


def guidance_statistics(student, dataset, frames: int, seed: int, batch_size: int = 64) -> GuidanceStatistics:
    """Replay the prior and the cheap path at up to ``frames`` of the demos' chunk boundaries
    (drawn by ``seed``), each with the demo's previous ``history`` actions as executed history."""
    c = student.config
    rows, jumps, flips = cheap_path_replay(student, dataset, frames, seed, batch_size)
    history = np.stack([dataset.actions[i - c.history : i] for i in rows])
    critical = prior_critical(history, np.ones(len(rows), bool), SkipThresholds(c.prior_threshold, None))
    episodes = np.unique(dataset.episode_index)
    calls = sum(-(-int((dataset.episode_index == e).sum()) // c.horizon) for e in episodes)
    return GuidanceStatistics(critical, jumps, flips, start_share=len(episodes) / max(calls, 1))


@torch.no_grad()
def path_times(student, dataset, frames: int = 24, seed: int = 0) -> PathTimes:
    """Median times of the three paths on ``frames`` demo frames at batch 1 and one torch thread,
    interleaved frame by frame. The time is the calling thread's CPU time (at one torch thread
    every kernel runs in it), not the wall clock: beside another training (the pipeline's
    trainings side by side) the wall clock also counts the time the process waited for a core,
    and measured 3.3x the quiet full-decode time where the thread's CPU time measured 1.3x
    (docs/experiments/speed.md)."""
    c = student.config
    full, cheap = with_settings(student, skipping="off"), with_settings(student, skipping="always")
    picks = np.random.default_rng(seed).choice(len(dataset), size=min(frames, len(dataset)), replace=False)

    def first_action(rgb, state, tasks):
        prefix = student.encode(rgb, state, tasks)[0]
        student._greedy(prefix, c.action_dim, student.skip_plan())

    calls = {"full": full.decode_with_guidance, "skip": cheap.decode_with_guidance, "first": first_action}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in picks:
            batch = torch.utils.data.default_collate([dataset[int(i)]])
            args = (student.camera_input(batch), batch["observation.state"], list(batch["task"]))
            for name, call in calls.items():
                started = time.thread_time()
                call(*args)
                seconds[name].append(time.thread_time() - started)
    finally:
        torch.set_num_threads(threads)
    # the first frame pays one-off allocations; the median ignores it
    return PathTimes(**{name: float(np.median(values)) for name, values in seconds.items()})
