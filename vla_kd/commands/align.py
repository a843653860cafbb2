"""``vla-kd train method=align stage=1|2|both|scratch ...``: action-expert alignment (VITA-VLA).

* ``stage=1``: build an AlignedVLA from ``teacher=`` (the VLM) and ``expert=`` (the diffusion
  action expert), align it; ``stage=2``: fine-tune ``init=<a stage-1 folder>``; ``stage=both``:
  one after the other.
* ``stage=scratch``: the baseline, the same architecture from random weights (the VLM's config
  and the data's normalisation only) trained end to end on the stage-2 loss for the same number
  of steps as both stages together.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla_kd.errors import UserError
from vla_kd.tracking import make_tracker
from vla_kd.trainer import TrainerConfig, run_stages, seed_initial_weights

STAGES = ("1", "2", "both", "scratch")


def load_policy_of_type(folder: str | None, policy_type: str, role: str):
    from vla_kd.policies.pretrained import PretrainedPolicy

    if not folder:
        raise UserError(f"method=align needs {role}=<folder of a saved {policy_type} policy>")
    policy = PretrainedPolicy.from_pretrained(folder)
    if policy.policy_type != policy_type:
        raise UserError(f"{role}='{folder}' holds a {policy.policy_type}, not a {policy_type}")
    return policy


def initial_student(
    a: DictConfig, stage: str, teacher: str | None, expert: str | None, init: str | None, dataset
):
    """The AlignedVLA a run starts from (``a``: the ``align`` node), and the expert stage 1
    aligns to (None for stage 2)."""
    from vla_kd.commands.ceed import load_token_teacher
    from vla_kd.policies.aligned_vla import AlignedVLA

    parts = list(a.state_parts) if a.state_parts else None
    if stage == "2":
        return load_policy_of_type(init, "aligned_vla", "init"), None
    action_expert = load_policy_of_type(expert, "diffusion_action_expert", "expert")
    vlm = load_token_teacher(teacher, method="align")
    student = AlignedVLA.from_parts(
        vlm, action_expert, parts, int(a.mapper_hidden), bool(a.state_skip), int(a.action_tokens)
    )
    if stage == "scratch":  # the architecture and the data's normalisation, no learned weights
        student = AlignedVLA(student.config)
        # A teacher trained with the auxiliary pose head passes that head on; align never trains
        # it, so its target normaliser stays at identity.
        student.vlm.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
        student.action_norm.fit(dataset.feature_stats("action"))
    return student, action_expert


def train_align(
    cfg: DictConfig,
    run_dir: Path,
    stage: str,
    teacher: str | None,
    expert: str | None,
    init: str | None,
    dataset_path: str | None,
    output: str | Path,
    trainer_cfg: DictConfig,
) -> tuple[dict, object]:
    """Run ``stage`` (see the module doc); save the student to ``output``; (summary, student).
    ``cfg`` holds the ``align`` and ``tracker`` nodes (and is tracked whole)."""
    from vla_kd.data.lerobot_dataset import LeRobotDataset
    from vla_kd.methods.align import ActionFineTuning, FeatureAlignment

    stage = str(stage)
    if stage not in STAGES:
        from vla_kd.errors import unknown_name

        raise unknown_name("stage", stage, STAGES)
    if not dataset_path:
        raise UserError("method=align needs dataset=<demonstrations>")
    a = cfg.align
    started = time.perf_counter()
    dataset = LeRobotDataset(dataset_path, action_horizon=1)
    seed_initial_weights(trainer_cfg.seed)
    student, action_expert = initial_student(a, stage, teacher, expert, init, dataset)
    dataset.action_horizon = student.config.horizon  # chunks as long as the decoder's
    student.train()

    # Built when their stage starts: each one sets which parts train.
    def stage1():
        return FeatureAlignment(student, action_expert, output_weight=float(a.stage1_output_weight))

    def stage2():
        return ActionFineTuning(student, tuple(a.stage2_parts), int(a.top_layers))

    def scratch():
        return ActionFineTuning(student, train_everything=True)

    first, second = (
        ("stage1", stage1, a.stage1_steps, a.stage1_lr),
        ("stage2", stage2, a.stage2_steps, a.stage2_lr),
    )
    plan = {
        "1": [first],
        "2": [second],
        "both": [first, second],
        "scratch": [("scratch", scratch, int(a.stage1_steps) + int(a.stage2_steps), a.scratch_lr)],
    }[stage]
    tracker = make_tracker(
        cfg.tracker, run_dir, OmegaConf.to_container(cfg, resolve=True), job_type="train_align"
    )
    settings = TrainerConfig(**OmegaConf.to_container(trainer_cfg, resolve=True))
    try:
        done = run_stages(plan, dataset, settings, run_dir, tracker)
        steps, metrics = done.steps, done.metrics
        student.eval().requires_grad_(False)
        extra = {
            "stage": stage,
            "teacher": str(teacher),
            "expert": str(expert),
            "init": str(init),
            "dataset": str(dataset_path),
            "steps": steps,
        }
        student.save_pretrained(output, extra=extra)
        summary = {
            "model": "aligned_vla",
            "method": "align",
            "policy": str(output),
            "steps": steps,
            "samples": done.samples,
            "wall_seconds": time.perf_counter() - started,
            "stage_wall_seconds": done.wall_seconds,
            **extra,
            **metrics,
        }
        tracker.summary({k: v for k, v in summary.items() if not isinstance(v, dict)})
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary, student
    finally:
        tracker.finish()
