"""``vla-kd train method=dysl teacher=<token_vla folder> dataset=...``: a SkipVLA student that
bypasses its teacher's incremental layers on unimportant steps (DySL-VLA).

Steps, all from the training demonstrations: (1) rank the teacher's layers by how much
bypassing each one changes its action-token distributions and keep the most important ones
as informative; (2) calibrate the prior and post guidance thresholds as quantiles of the demos'
motion statistics; (3) stage 1, adapters only; (4) stage 2, everything, skipping sampled; (5)
with ``dysl.post_calibration=student``, re-derive the post threshold from the trained student's
cheap-path actions on the same demos.
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vla_kd.errors import UserError
from vla_kd.tracking import make_tracker
from vla_kd.trainer import TrainerConfig, run_stages, seed_initial_weights


def demo_episodes(dataset) -> list[np.ndarray]:
    """Each training episode's actions ``(T, 7)``, in frame order."""
    return [dataset.actions[dataset.episode_index == e] for e in np.unique(dataset.episode_index)]


def importance_of_layers(teacher, dataset, frames: int, seed: int) -> np.ndarray:
    """Layer importance (vla_kd.nn.layer_skip) on ``frames`` dataset states drawn by ``seed``,
    teacher-forced on the teacher's own greedy tokens."""
    from vla_kd.nn.layer_skip import layer_importance

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
def cheap_path_jumps(student, dataset, frames: int, seed: int, batch_size: int = 64) -> np.ndarray:
    """The post test's statistic on training data: at up to ``frames`` chunk boundaries (drawn by
    ``seed``), the arm jump from the demo's previous action to the student's cheap-path first
    action. Its quantile is the post threshold under ``dysl.post_calibration=student``."""
    from vla_kd.benchmarks.layer_skip import with_settings
    from vla_kd.policies.skip_guidance import post_jumps

    c = student.config
    rows = boundary_rows(dataset, c.horizon, c.history)
    rows = np.sort(np.random.default_rng(seed).permutation(rows)[:frames])
    cheap = with_settings(student, skipping="always")
    jumps = []
    for start in range(0, len(rows), batch_size):
        picked = rows[start : start + batch_size]
        batch = torch.utils.data.default_collate([dataset[int(i)] for i in picked])
        tokens, _ = cheap.decode_with_guidance(
            student.camera_input(batch), batch["observation.state"], list(batch["task"])
        )
        jumps.append(post_jumps(dataset.actions[picked - 1], student.first_actions(tokens)))
    return np.concatenate(jumps) if jumps else np.zeros(0)


def train_dysl(
    cfg: DictConfig,
    run_dir: Path,
    teacher_folder: str | None,
    dataset_path: str | None,
    output: str | Path,
    trainer_cfg: DictConfig,
) -> tuple[dict, object]:
    """Classify, calibrate, distil in two stages, save to ``output``; (summary, student).
    ``cfg`` holds the ``dysl`` and ``tracker`` nodes (and is tracked whole)."""
    from vla_kd.commands.ceed import load_token_teacher
    from vla_kd.commands.train import dataset_cameras
    from vla_kd.data.lerobot_dataset import LeRobotDataset
    from vla_kd.methods.dysl import SkipAwareDistillation
    from vla_kd.nn.layer_skip import classify_layers
    from vla_kd.policies.skip_guidance import calibrate
    from vla_kd.policies.skip_vla import SkipVLA

    if not dataset_path:
        raise UserError("method=dysl needs dataset=<the teacher's demonstrations>")
    d = cfg.dysl
    teacher = load_token_teacher(teacher_folder, method="dysl")
    if not 1 <= int(d.informative_layers) < teacher.config.layers:  # at least one layer to skip
        raise UserError(
            f"dysl.informative_layers must be at least 1 and below the teacher's {teacher.config.layers} "
            f"layers (the rest are the ones skipped), got {d.informative_layers}"
        )
    if d.post_calibration not in ("demos", "student"):
        raise UserError(f"dysl.post_calibration must be demos or student, got {d.post_calibration!r}")
    dataset = LeRobotDataset(dataset_path, action_horizon=teacher.config.horizon)
    dataset_cameras(dataset, teacher.cameras, "the teacher's cameras")  # the demos must have them
    started = time.perf_counter()
    importance = importance_of_layers(teacher, dataset, int(d.importance_frames), int(trainer_cfg.seed))
    roles = classify_layers(importance.tolist(), int(d.informative_layers))
    try:
        thresholds = calibrate(
            demo_episodes(dataset), teacher.config.horizon, int(d.history), d.prior_quantile, d.post_quantile
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    seed_initial_weights(trainer_cfg.seed)  # the adapters are new weights
    student = SkipVLA.from_teacher(
        teacher,
        layer_roles=roles,
        adapter_rank=int(d.adapter_rank),
        skipping=d.skipping,
        history=int(d.history),
        prior_threshold=thresholds.prior,
        post_threshold=thresholds.post,
    ).train()
    tracker = make_tracker(
        cfg.tracker, run_dir, OmegaConf.to_container(cfg, resolve=True), job_type="train_dysl"
    )
    stages = [
        (
            f"stage{stage}",
            partial(SkipAwareDistillation, student, teacher, stage, float(d.skip_probability)),
            n_steps,
            lr,
        )
        for stage, n_steps, lr in ((1, d.stage1_steps, d.stage1_lr), (2, d.stage2_steps, d.stage2_lr))
    ]
    settings = TrainerConfig(**OmegaConf.to_container(trainer_cfg, resolve=True))
    try:
        done = run_stages(stages, dataset, settings, run_dir, tracker)
        steps, metrics = done.steps, done.metrics
        student.eval().requires_grad_(False)
        if d.post_calibration == "student" and d.post_quantile is not None:
            jumps = cheap_path_jumps(student, dataset, int(d.calibration_frames), int(trainer_cfg.seed))
            if len(jumps) == 0:
                raise UserError("no chunk boundary without a gripper flip in the demos: cannot calibrate")
            post = float(np.quantile(jumps, float(d.post_quantile)))
            thresholds = dataclasses.replace(thresholds, post=post)
            student.config = dataclasses.replace(student.config, post_threshold=thresholds.post)
        extra = {
            "teacher": str(teacher_folder),
            "dataset": str(dataset_path),
            "steps": steps,
            "layer_importance": importance.tolist(),
            "thresholds": {**dataclasses.asdict(thresholds), "post_calibration": d.post_calibration},
        }
        student.save_pretrained(output, extra=extra)
        summary = {
            "model": "skip_vla",
            "method": "dysl",
            "policy": str(output),
            "steps": steps,
            "samples": done.samples,
            "wall_seconds": time.perf_counter() - started,
            "layer_roles": roles,
            **extra,
            **metrics,
        }
        tracker.summary({k: v for k, v in summary.items() if not isinstance(v, list | dict)})
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary, student
    finally:
        tracker.finish()
