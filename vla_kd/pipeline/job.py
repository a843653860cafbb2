"""The main job from start to end (see the package doc), resumable stage by stage."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla_kd.data.demos import DemoReport
from vla_kd.envs import check_task
from vla_kd.errors import UserError
from vla_kd.methods import registry
from vla_kd.pipeline.report import write_results
from vla_kd.pipeline.side_by_side import Stage, run_side_by_side
from vla_kd.pipeline.stages import (
    distil,
    evaluated_row,
    make_teacher_vlm,
    record_demos,
    student_rows,
    train_base_model,
)
from vla_kd.pipeline.state import PipelineState

log = logging.getLogger(__name__)


def run_pipeline(cfg: DictConfig, run_dir: Path) -> dict:
    """Demos -> teacher + action expert -> ``cfg.students`` -> the results table; the results
    document (also ``<run_dir>/results.json``). Every W&B run of it joins one W&B group named
    after the run's folder."""
    task = check_task(cfg.task)
    if task.backend != "maniskill":
        raise UserError("the pipeline generates ManiSkill demonstrations so far; pick a maniskill/ task")
    for method in cfg.students:  # checked before the first stage (the command checks them too)
        registry.get(str(method))
    group = f"pipeline-{Path(run_dir).name}"
    state = PipelineState(run_dir, cfg, resume=bool(cfg.resume))
    report = DemoReport(**state.run_stage("demos", record_demos, cfg, task.name, run_dir))
    log.info(
        "demos: %d/%d planned, %d recorded", report.planned_success, report.attempts, report.recorded_success
    )
    teacher_cfg = cfg.teacher
    if teacher_cfg.type == "hf_vla" and not teacher_cfg.get("checkpoint"):
        folder = state.run_stage("make_vlm", make_teacher_vlm, cfg, run_dir)
        teacher_cfg = OmegaConf.merge(teacher_cfg, {"checkpoint": folder})
    teacher_trainer = cfg.teacher_trainer
    expert_trainer = cfg.action_expert_trainer
    if state.resuming:  # a training cut short continues from its last checkpoint
        teacher_trainer = OmegaConf.merge(teacher_trainer, {"resume": True})
        expert_trainer = OmegaConf.merge(expert_trainer, {"resume": True})
    # the teacher alone, at all threads: every student needs it
    trained = {"teacher": state.run_stage(
        "train_teacher", train_base_model, cfg, "teacher", teacher_cfg, teacher_trainer, run_dir, group
    )}
    trainings = [Stage("train_action_expert", train_base_model,
                       (cfg, "action_expert", cfg.action_expert, expert_trainer, run_dir, group))]
    for method in cfg.students:
        inputs = registry.get(str(method)).inputs
        trainings.append(Stage(
            f"train_{method}", distil, (cfg, str(method), str(task), run_dir, group),
            needs=("train_action_expert",) if "expert" in inputs else (),
            spreads="env" in inputs,  # it rolls the task out in environment workers of its own
        ))
    started = time.perf_counter()
    results = run_side_by_side(trainings, state, int(cfg.training_workers))
    side_by_side = {"stages": [stage.name for stage in trainings], "workers": int(cfg.training_workers),
                    "wall_seconds": time.perf_counter() - started}
    trained["action_expert"] = results["train_action_expert"]
    # evaluations one after another, on all cores: their ms per action are measured alike
    rows = [
        evaluated_row(cfg, run_dir, str(task), run_dir / name, key=name, name=name, summary=trained[name],
                      samples=trained[name]["samples"], state=state)
        for name in ("teacher", "action_expert")
    ]
    for method in cfg.students:
        rows.extend(student_rows(cfg, str(method), str(task), run_dir, state, results[f"train_{method}"]))
    return write_results(cfg, run_dir, str(task), report, rows, state.stage_seconds, state.wall_seconds(),
                         state.resuming, group, side_by_side)
