"""Calibrating a DySL student's guidance on training demonstrations: the demos' episodes, the
chunk boundaries where a deployed student decides its path, the post test's statistic on the
student's own cheap path, and the teacher's layer importance on dataset states."""
from __future__ import annotations

import numpy as np
import torch

from vla_kd.nn.layer_skip import layer_importance
from vla_kd.policies.skip_guidance import ARM, gripper_flipped
from vla_kd.policies.skip_vla import with_settings


def demo_episodes(dataset) -> list[np.ndarray]:
    """Each training episode's actions ``(T, 7)``, in frame order."""
    return [dataset.actions[dataset.episode_index == e] for e in np.unique(dataset.episode_index)]


def importance_of_layers(teacher, dataset, frames: int, seed: int) -> np.ndarray:
    """Layer importance (vla_kd.nn.layer_skip) on ``frames`` dataset states drawn by ``seed``,
    teacher-forced on the teacher's own greedy tokens."""
    picks = np.random.default_rng(seed).choice(len(dataset), size=min(frames, len(dataset)), replace=False)
    batch = torch.utils.data.default_collate([dataset[int(i)] for i in picks])
    rgb, state, tasks = teacher.camera_input(batch), batch["observation.state"], list(batch["task"])
    tokens = teacher.generate_tokens(rgb, state, tasks)
    return layer_importance(teacher, rgb, state, tasks, tokens)


def boundary_rows(dataset, horizon: int, history: int) -> np.ndarray:
    """Dataset rows at the chunk boundaries ``t = k * horizon >= history`` of every episode:
    where a deployed student decides its path (the steps :func:`calibrate` reads)."""
    rows = []
    for episode in np.unique(dataset.episode_index):
        frames = np.flatnonzero(dataset.episode_index == episode)
        rows.extend(frames[max(horizon, history) :: horizon].tolist())
    return np.array(rows, dtype=int)


@torch.no_grad()
def cheap_path_replay(student, dataset, frames: int, seed: int, batch_size: int = 64):
    """The student's cheap path at up to ``frames`` chunk boundaries (drawn by ``seed``): (those
    dataset rows, the arm jump from the demo's previous action to the cheap first action, whether
    the gripper flips between them), one entry per row."""
    c = student.config
    rows = boundary_rows(dataset, c.horizon, c.history)
    rows = np.sort(np.random.default_rng(seed).permutation(rows)[:frames])
    cheap = with_settings(student, skipping="always")
    jumps, flips = [], []
    for start in range(0, len(rows), batch_size):
        picked = rows[start : start + batch_size]
        batch = torch.utils.data.default_collate([dataset[int(i)] for i in picked])
        tokens, _ = cheap.decode_with_guidance(
            student.camera_input(batch), batch["observation.state"], list(batch["task"])
        )
        last, first = dataset.actions[picked - 1], student.first_actions(tokens)
        jumps.append(np.linalg.norm(first[:, ARM] - last[:, ARM], axis=-1))
        flips.append(gripper_flipped(np.stack([last, first], axis=1)))
    if not jumps:
        return rows, np.zeros(0), np.zeros(0, bool)
    return rows, np.concatenate(jumps), np.concatenate(flips)


def cheap_path_jumps(student, dataset, frames: int, seed: int, batch_size: int = 64) -> np.ndarray:
    """The post test's statistic on training data: at up to ``frames`` chunk boundaries (drawn by
    ``seed``), the arm jump from the demo's previous action to the student's cheap-path first
    action, where the gripper holds (:func:`vla_kd.policies.skip_guidance.post_jumps`). Its
    quantile is the post threshold under ``post_calibration=student``."""
    _, jumps, flips = cheap_path_replay(student, dataset, frames, seed, batch_size)
    return jumps[~flips]
