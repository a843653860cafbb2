"""``vla-kd train method=ceed teacher=<token_vla folder> dataset=...``: a consistency-distilled
copy of the teacher that decodes its action tokens by Jacobi iteration with early exit."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla_kd.errors import UserError
from vla_kd.tracking import make_tracker
from vla_kd.trainer import Trainer, TrainerConfig, seed_initial_weights


def load_token_teacher(folder: str | None, method: str = "ceed"):
    """The saved TokenVLA at ``folder``, with one-line errors for a missing or wrong folder."""
    from vla_kd.policies.pretrained import PretrainedPolicy
    from vla_kd.teachers.token_vla import TokenVLA

    if not folder:
        raise UserError(f"method={method} needs teacher=<folder of a saved token_vla policy>")
    teacher = PretrainedPolicy.from_pretrained(folder)
    if not isinstance(teacher, TokenVLA):
        raise UserError(
            f"method={method} distils a token_vla teacher; '{folder}' holds a {teacher.policy_type}"
        )
    return teacher


def jacobi_student(teacher, c: DictConfig):
    """A trainable copy of ``teacher`` set to decode by Jacobi iteration with ``c``'s early exit."""
    from vla_kd.teachers.token_vla import TokenVLA

    config = dataclasses.replace(
        teacher.config,
        decoding="jacobi",
        jacobi_init=c.jacobi_init,
        exit_max_changed=c.exit_max_changed,
        exit_max_bin_change=c.exit_max_bin_change,
        exit_max_iterations=c.exit_max_iterations,
    )
    student = TokenVLA(config)
    student.load_state_dict(teacher.state_dict())
    return student.train()


def train_ceed(
    cfg: DictConfig,
    run_dir: Path,
    teacher_folder: str | None,
    dataset_path: str | None,
    output: str | Path,
    trainer_cfg: DictConfig,
) -> tuple[dict, object]:
    """Collect the teacher's Jacobi trajectories, distil, save to ``output``; (summary, student).
    ``cfg`` holds the ``ceed`` and ``tracker`` nodes (and is tracked whole)."""
    from vla_kd.commands.train import dataset_cameras
    from vla_kd.data.lerobot_dataset import LeRobotDataset
    from vla_kd.methods.ceed import ConsistencyDistillation

    if not dataset_path:
        raise UserError("method=ceed needs dataset=<the teacher's demonstrations>")
    teacher = load_token_teacher(teacher_folder)
    dataset = LeRobotDataset(dataset_path, action_horizon=teacher.config.horizon)
    dataset_cameras(dataset, teacher.cameras, "the teacher's cameras")  # the demos must have them
    c = cfg.ceed
    seed_initial_weights(trainer_cfg.seed)
    method = ConsistencyDistillation(
        jacobi_student(teacher, c),
        teacher,
        consistency_weight=c.consistency_weight,
        ar_weight=c.ar_weight,
        label_threshold=int(c.label_threshold),
        init=c.init,
        windows_per_state=int(c.windows_per_state),
        shift_pad=int(c.shift_pad),
        state_noise=float(c.state_noise),
        token_corruption=float(c.token_corruption),
        fixed_point_weight=float(c.fixed_point_weight),
    )
    settings = TrainerConfig(**OmegaConf.to_container(trainer_cfg, resolve=True))
    tracker = make_tracker(
        cfg.tracker, run_dir, OmegaConf.to_container(cfg, resolve=True), job_type="train_ceed"
    )
    started = time.perf_counter()
    try:
        trainer = Trainer(method, dataset, settings, run_dir, tracker)
        metrics = trainer.fit()
        method.model.eval()
        method.model.save_pretrained(
            output,
            extra={"teacher": str(teacher_folder), "dataset": str(dataset_path), "steps": trainer.step},
        )
        summary = {
            "model": "token_vla",
            "method": "ceed",
            "policy": str(output),
            "steps": trainer.step,
            "samples": trainer.step * settings.batch_size,
            "wall_seconds": time.perf_counter() - started,
            "jacobi_trajectories": len(method.trajectories),
            **metrics,
        }
        tracker.summary(summary)
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary, method.model
    finally:
        tracker.finish()
