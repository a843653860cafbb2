"""The RL experiment (``experiment=rpd_vs_ppo`` and its companions) from its run folders: PPO vs
RPD vs the teacher, held-out success, env steps to the teacher's rate, and the RPD student's
latency against the teacher's, measured side by side here.

A sweep folder holds ``teacher_eval/`` (``vla-kd eval experiment=held_out policy=<teacher>``) and
runs named ``<name>_seed<seed>``: ``clone`` (experiment=rl_clone), ``rpd`` and ``ppo``
(experiment=rpd_vs_ppo or rpd_vs_ppo_from_clones), ``ppo_scratch`` (experiment=ppo_from_scratch).
A run that started from a clone (``init_policy``) counts the clone's teacher episodes as its
first env steps, so PPO and RPD are compared on all the samples they used.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vla_kd.benchmarks.latency import measure_latency
from vla_kd.envs import make_env
from vla_kd.errors import UserError
from vla_kd.methods.rpd.distiller import warm_start_env_steps
from vla_kd.methods.runner import SUMMARY_FILE
from vla_kd.policies.loading import build_policy, policy_image_size
from vla_kd.reporting import write_json_atomic
from vla_kd.reports.rl_tables import RL_RUNS, plot, results_table, steps_to_reach, validation_curve

RUN_NAME = re.compile(r"^(clone|rpd|ppo|ppo_scratch)_seed(\d+)$")
RESULT_KEYS = ("success_rate", "ci95", "episodes")  # what each row copies from an evaluation


def runs_in(folder: Path) -> dict[str, dict[int, Path]]:
    """The finished runs of ``folder``: name (clone, rpd, ppo, ppo_scratch) -> seed -> folder."""
    runs: dict[str, dict[int, Path]] = {}
    for run in sorted(folder.iterdir()):
        match = RUN_NAME.match(run.name)
        if match and (run / SUMMARY_FILE).is_file():
            runs.setdefault(match[1], {})[int(match[2])] = run
    return runs


def smoothed_curve(folder: Path, offset: int = 0, window: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Training success vs env steps, RL's steps shifted by ``offset`` (the warm start's)."""
    rows = [r for r in json.loads((folder / "curve.json").read_text()) if "train/success_rate" in r]
    steps = offset + np.array([r["env_steps"] for r in rows], float)
    success = np.array([r["train/success_rate"] for r in rows], float)
    if not len(success):
        return steps, success
    kernel = np.ones(min(window, len(success)))
    # a moving average over the points that exist: "same" alone would pad the ends with zeros
    counts = np.convolve(np.ones_like(success), kernel, mode="same")
    return steps, np.convolve(success, kernel, mode="same") / counts


def held_out(summary: dict, prefix: str = "eval") -> dict:
    return {k: summary[f"{prefix}/{k}"] for k in RESULT_KEYS}


def clone_steps(summary: dict) -> int:
    """Env steps of the clone a run started from (``init_policy``), 0 without one."""
    start = summary.get("init_policy")
    if not start:
        return 0
    clone_summary = Path(start).parent / SUMMARY_FILE
    return warm_start_env_steps(json.loads(clone_summary.read_text())) if clone_summary.is_file() else 0


def run_record(folder: Path, seed: int, teacher_rate: float) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """One finished run's row (held-out and sampled success, env steps, steps to the teacher's
    rate) and its training curve."""
    result = json.loads((folder / SUMMARY_FILE).read_text())
    warm = warm_start_env_steps(result) + clone_steps(result)  # the teacher's episodes come first
    steps, success = smoothed_curve(folder, warm)
    val_steps, val_success = validation_curve(result, warm)
    record = {
        "seed": seed,
        **held_out(result),
        "env_steps": warm + result["env_steps"],
        "warm_start_env_steps": warm,
        "wall_seconds": result["wall_seconds"],
        "steps_to_teacher": steps_to_reach(steps, success, teacher_rate),
        "validation_curve": [val_steps.tolist(), val_success.tolist()],
        # None when not reached, or when the run did not validate (empty curve)
        "steps_to_teacher_validated": steps_to_reach(val_steps, val_success, teacher_rate),
    }
    if "eval_sampled/success_rate" in result:
        record["sampled"] = held_out(result, "eval_sampled")
    return record, (steps, success)


def latency(folder: Path) -> dict:
    """Per-action latency of the teacher and the RPD student of run ``folder`` at batch 1, side by
    side; a teacher that re-planned after ``teacher_action_steps`` actions in training executes
    that many per call here too."""
    saved = json.loads((folder / "policy" / "config.json").read_text())["extra"]
    task, teacher_spec = saved["task"], saved["teacher"]
    run_config = OmegaConf.load(folder / ".hydra" / "config.yaml")
    action_steps = run_config.method.teacher_action_steps
    torch.set_num_threads(1)
    env = make_env(task, obs_mode="rgb", include_privileged=True,
                   image_size=policy_image_size(teacher_spec) or 128)
    try:
        obs, _ = env.reset(seed=100000)
        teacher = build_policy(teacher_spec, env, action_steps=action_steps)
        student = build_policy(str(folder / "policy"), env)
    finally:
        env.close()
    batch = {k: (v[None] if not isinstance(v, str) else [v]) for k, v in obs.items()}
    batch["instruction"] = [env.instruction]
    return measure_latency({"teacher": teacher, "rpd": student}, batch)


def collect(folder: Path) -> tuple[dict, dict]:
    """The experiment's summary (``results.json``) and training curves, from ``folder``."""
    runs = runs_in(folder)
    teacher_eval = folder / "teacher_eval" / "results.json"
    if not teacher_eval.is_file():
        raise UserError(f"{folder} has no teacher_eval/results.json: evaluate the teacher first with "
                        "vla-kd eval experiment=held_out policy=<teacher> env=<task> "
                        f"hydra.run.dir={teacher_eval.parent}")
    if "rpd" not in runs:
        raise UserError(f"{folder} has no finished rpd_seed<N> run")
    teacher = json.loads(teacher_eval.read_text())
    first = json.loads((next(iter(runs["rpd"].values())) / SUMMARY_FILE).read_text())
    task = first["eval/task"]
    entry: dict = {"teacher": {"policy": teacher["policy"], **{k: teacher[k] for k in RESULT_KEYS}}}
    for seed, run in runs.get("clone", {}).items():
        result = json.loads((run / SUMMARY_FILE).read_text())
        steps = warm_start_env_steps(result)
        entry.setdefault("clone", []).append({"seed": seed, **held_out(result), "env_steps": steps,
                                               "warm_start_env_steps": steps,
                                               "wall_seconds": result["wall_seconds"]})
    curves: dict = {}
    for method in RL_RUNS:
        for seed, run in runs.get(method, {}).items():
            record, curve = run_record(run, seed, teacher["success_rate"])
            entry.setdefault(method, []).append(record)
            curves.setdefault(method, []).append(curve)
    entry["latency"] = latency(next(iter(runs["rpd"].values())))
    seeds = sorted({seed for by_seed in runs.values() for seed in by_seed})
    return {"tasks": {task: entry}, "seeds": seeds}, {task: curves}


def write(folder: Path) -> str:
    """``results.json``, ``results.md`` and ``success_vs_steps.png`` in ``folder``; the table."""
    summary, curves = collect(folder)
    write_json_atomic(summary, folder / "results.json")
    table = results_table(summary)
    (folder / "results.md").write_text(table)
    tasks = summary["tasks"].items()
    teacher_rates = {task: entry["teacher"]["success_rate"] for task, entry in tasks}
    clones = {task: [(r["env_steps"], r["success_rate"]) for r in entry.get("clone", [])]
              for task, entry in tasks}
    validation = {
        task: {method: [(np.array(r["validation_curve"][0]), np.array(r["validation_curve"][1]))
                        for r in entry[method]] for method in RL_RUNS if method in entry}
        for task, entry in tasks
    }
    plot(curves, teacher_rates, folder / "success_vs_steps.png", clones, validation)
    return table
