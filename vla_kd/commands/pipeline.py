"""``vla-kd pipeline``: the main job. Demonstrations, then the teacher and the action expert
trained on them, then the students distilled from the teacher (``students``), all evaluated on
held-out seeds, side by side in one results table."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla_kd.cli_support import hydra_command
from vla_kd.commands.pipeline_state import PipelineState
from vla_kd.commands.train import evaluate_policy, train_model
from vla_kd.envs import check_task
from vla_kd.errors import UserError
from vla_kd.reporting import plot_policies_success_vs_latency, write_json_atomic

CONFIG_NAME = "pipeline"
log = logging.getLogger(__name__)


def record_demos(cfg: DictConfig, task_name: str, run_dir: Path) -> dict:
    """The planner's demonstrations of ``task_name`` in ``<run_dir>/dataset``; their report."""
    from vla_kd.data.demos import generate_maniskill_demos

    return asdict(generate_maniskill_demos(
        task_name, int(cfg.demos.n), run_dir / "dataset", image_size=int(cfg.demos.image_size),
        overwrite=True, progress=bool(cfg.eval.progress), workers=int(cfg.demos.workers),
    ))


def train_base_model(
    cfg: DictConfig, name: str, model_cfg: DictConfig, trainer_cfg: DictConfig, run_dir: Path
) -> dict:
    """Train the teacher or the action expert (``name``) on the run's demos into
    ``<run_dir>/<name>``; its training summary."""
    summary, _ = train_model(cfg, model_cfg, trainer_cfg, run_dir / "dataset", run_dir / f"{name}_training",
                             run_dir / name, job_type=f"train_{name}")
    return summary


def evaluate_saved(cfg: DictConfig, folder: Path, sample_actions: bool = False) -> dict:
    """Evaluate a saved policy folder, loaded as ``vla-kd eval policy=<folder>`` loads it;
    ``sample_actions``: an RL student acts with seeded samples of its Gaussian."""
    from vla_kd.policies.registry import build_policy

    # A saved folder needs no env to be built.
    policy = build_policy(str(folder), env=None, seed=int(cfg.eval.seed), sample_actions=sample_actions)
    return evaluate_policy(cfg, cfg.eval, policy, str(cfg.task), name=str(folder))


def evaluated_row(
    cfg: DictConfig, run_dir: Path, task: str, folder: Path, key: str, name: str, *, summary: dict,
    samples: int, state: PipelineState, sample_actions: bool = False,
) -> dict:
    """Evaluate ``folder`` (stage ``eval_<key>``), keep its results as ``<key>_results.json``
    and return its row ``name`` of the results table."""

    def evaluate() -> dict:
        evaluation = evaluate_saved(cfg, folder, sample_actions)
        write_json_atomic(evaluation, run_dir / f"{key}_results.json")
        log.info("%s: success %.1f%%", name, 100 * evaluation["success_rate"])
        return {
            "name": name,
            "task": task,
            "episodes": evaluation["episodes"],
            "success_rate": evaluation["success_rate"],
            "ci95": evaluation["ci95"],
            "policy_ms_per_action": evaluation["policy_ms_per_action"],
            "samples": samples,
            "wall_seconds": summary["wall_seconds"],
        }

    return state.run_stage(f"eval_{key}", evaluate)


def results_table(rows: list[dict]) -> str:
    lines = [
        "| policy | task | episodes | success | 95% CI | ms/action | train samples | train wall s |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['task']} | {r['episodes']} | {r['success_rate']:.1%} "
            f"| [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] | {r['policy_ms_per_action']:.2f} "
            f"| {r['samples']} | {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def stage_table(stage_seconds: dict[str, float], total_seconds: float) -> str:
    """Where the run's wall time went, one row per stage in the order they ran."""
    lines = ["| stage | minutes |", "|---|---:|"]
    lines += [f"| {stage} | {seconds / 60:.1f} |" for stage, seconds in stage_seconds.items()]
    lines.append(f"| whole run | {total_seconds / 60:.1f} |")
    return "\n".join(lines) + "\n"


STUDENTS = ("rpd", "ceed", "dysl", "align")


def train_student(
    cfg: DictConfig, method: str, task: str, run_dir: Path, state: PipelineState
) -> list[dict]:
    """Distil the pipeline's teacher into ``students/<method>`` and evaluate it: one results row,
    two for the RPD student (acting with its Gaussian's mean, and sampling from it)."""
    if method not in STUDENTS:
        from vla_kd.errors import unknown_name

        raise unknown_name("student method", method, STUDENTS)
    trained = state.run_stage(f"train_{method}", _distil, cfg, method, task, run_dir)
    return [
        evaluated_row(
            cfg, run_dir, task, run_dir / "students" / method,
            key=f"{method}_sampled" if sample_actions else method,
            name=f"{method} student" + (" (sampled actions)" if sample_actions else ""),
            summary=trained["summary"], samples=trained["samples"], state=state,
            sample_actions=sample_actions,
        )
        for sample_actions in ((False, True) if method == "rpd" else (False,))
    ]


def _distil(cfg: DictConfig, method: str, task: str, run_dir: Path) -> dict:
    """Train the ``method`` student into ``students/<method>``; its training summary and the
    samples it learnt from."""
    folder = run_dir / "students" / method
    training_dir = run_dir / "students_training" / method
    if method == "rpd":
        from vla_kd.commands.rpd import train_rl_student, warm_start_env_steps

        summary, _ = train_rl_student(
            cfg, task, str(run_dir / "teacher"), training_dir, folder, use_teacher=True, job_type="train_rpd"
        )
        # the teacher's warm-start episodes are samples the student learnt from too
        samples = summary["env_steps"] + warm_start_env_steps(summary)
    elif method == "ceed":
        from vla_kd.commands.ceed import train_ceed

        summary, _ = train_ceed(
            cfg, training_dir, str(run_dir / "teacher"), str(run_dir / "dataset"), folder, cfg.ceed_trainer
        )
        samples = summary["samples"]
    elif method == "dysl":
        from vla_kd.commands.dysl import train_dysl

        summary, _ = train_dysl(
            cfg, training_dir, str(run_dir / "teacher"), str(run_dir / "dataset"), folder, cfg.dysl_trainer
        )
        samples = summary["samples"]
    else:
        from vla_kd.commands.align import train_align

        # the VLM is the teacher's; the decoder is the pipeline's action expert's
        summary, _ = train_align(
            cfg,
            training_dir,
            "both",
            str(run_dir / "teacher"),
            str(run_dir / "action_expert"),
            None,
            str(run_dir / "dataset"),
            folder,
            cfg.align_trainer,
        )
        samples = summary["samples"]
    return {"summary": summary, "samples": samples}


def run(cfg: DictConfig, run_dir: Path) -> dict:
    task = check_task(cfg.task)
    if task.backend != "maniskill":
        raise UserError("the pipeline generates ManiSkill demonstrations so far; pick a maniskill/ task")
    from vla_kd.data.demos import DemoReport

    state = PipelineState(run_dir, cfg, resume=bool(cfg.resume))
    report = DemoReport(**state.run_stage("demos", record_demos, cfg, task.name, run_dir))
    log.info(
        "demos: %d/%d planned, %d recorded", report.planned_success, report.attempts, report.recorded_success
    )
    rows = []
    for name, model_cfg, trainer_cfg in (
        ("teacher", cfg.teacher, cfg.teacher_trainer),
        ("action_expert", cfg.action_expert, cfg.action_expert_trainer),
    ):
        if state.resuming:  # a training cut short continues from its last checkpoint
            trainer_cfg = OmegaConf.merge(trainer_cfg, {"resume": True})
        summary = state.run_stage(
            f"train_{name}", train_base_model, cfg, name, model_cfg, trainer_cfg, run_dir
        )
        rows.append(evaluated_row(
            cfg, run_dir, str(task), run_dir / name, key=name, name=name,
            summary=summary, samples=summary["samples"], state=state,
        ))
    for method in cfg.students:
        rows.extend(train_student(cfg, str(method), str(task), run_dir, state))
    table = results_table(rows)
    doc = {
        "task": str(task),
        "demos": {**report.__dict__, "planner_success_rate": report.planner_success_rate},
        "policies": rows,
        "protocol": {
            "eval_seeds_from": cfg.eval.seed,
            "episodes": cfg.eval.episodes,
            "max_episode_steps": cfg.eval.max_episode_steps,
            "demo_seeds": f"0..{cfg.demos.n - 1}",
        },
        "wall_seconds": state.wall_seconds(),
        "stage_seconds": state.stage_seconds,
        "resumed": state.resuming,
    }
    write_json_atomic(doc, run_dir / "results.json")
    (run_dir / "results.md").write_text(table + "\n" + stage_table(state.stage_seconds, doc["wall_seconds"]))
    plot_policies_success_vs_latency(
        rows, run_dir / "success_vs_latency.png", title=f"{task}: {cfg.eval.episodes} held-out episodes each"
    )
    from vla_kd.tracking import make_tracker

    tracker = make_tracker(cfg.tracker, run_dir / "summary_run", job_type="pipeline")
    tracker.log_table(
        "pipeline/results",
        [{k: (v if not isinstance(v, list) else str(v)) for k, v in r.items()} for r in rows],
    )
    tracker.summary({f"{r['name']}/success_rate": r["success_rate"] for r in rows})
    tracker.finish()
    print(table)
    print(json.dumps({
        "results": str(run_dir / "results.json"),
        "plot": str(run_dir / "success_vs_latency.png"),
        "wall_seconds": doc["wall_seconds"],
    }))
    return doc


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
