"""PPO vs RPD vs the teacher on the same tasks and seeds.

    python scripts/rpd_experiment.py --task maniskill/PushCube-v1=runs/pipeline/<run>/teacher \
        --seeds 0 1 2 --steps 60000 --out runs/rpd_experiment/pushcube [-- extra overrides]

Each (task, method, seed) is one ``vla-kd train method=ppo|rpd`` run in its own folder (runs
that finished are reused, so an interrupted experiment resumes); the teacher is evaluated once
per task with ``vla-kd eval`` on the same held-out seeds. Writes ``results.json``,
``results.md`` (task x method x success +- CI x env steps x latency) and ``success_vs_steps.png``
(training success vs env steps, mean over seeds, with the teacher's held-out success as a line;
runs that validate, e.g. ``-- rl=from_clone``, add a second row: each seed's success on the
validation seeds, acting with its mean, against env steps).

Training success is measured on the training episodes with the stochastic policy. Held out,
on seeds no run trained on, each student is evaluated twice: acting with its Gaussian's mean
(deterministic, the usual protocol) and with seeded samples from it (``sample_actions=true``,
the policy its rollouts ran), which early in training can succeed far more often.

With ``--clone-episodes N`` each seed first clones the teacher from N of its episodes (a
``rl.warm_start`` run with no RL, ``clone_seed<s>``, evaluated as its own row) and PPO and RPD
of that seed both start from that very clone (``rl.init_policy``), so they differ only in the
teacher term. (``-- rl.warm_start.episodes=N`` instead makes every run clone for itself: the
same clone again at the same seed, but made twice and never evaluated on its own.) The
env steps of the teacher's episodes count toward each run's env steps and shift its curve, so
PPO and RPD are compared on all the samples they used.

From a sharp clone PPO only loses ground (docs/experiments/rpd.md), so "env steps to reach the
teacher's rate" needs a PPO that learns: ``--ppo-from-scratch STEPS`` adds, per seed, PPO as
it is usually run (``rl``'s defaults: one action per step, no teacher, no clone, ManiSkill's
own 50-step training episodes), validated every ``SCRATCH_VALIDATION_EVERY`` env steps on the
same validation seeds, 100-step protocol and interval as RPD's from a clone
(``--scratch-validation-every`` changes it: the ratio below is only as fine as both runs'
validation grids, and only fair on the same one). Its rows and curves are
``ppo_scratch``; ``results.md`` then ends with each seed's RPD / PPO-from-scratch ratio of env
steps to the teacher's rate on validation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from vla_kd.benchmarks.rpd_report import (
    METHODS,
    RL_RUNS,
    plot,
    results_table,
    steps_to_reach,
    validation_curve,
)
from vla_kd.commands.rpd import warm_start_env_steps

# One episode length for training, the held-out evaluations and the teacher's line in the plot.
# The TokenVLA teachers imitate planner demos that take 50-100 steps: the PushCube chunk-8
# teacher succeeds 83% of the time within 100 steps and 0% within 50 (rl's default), so RPD
# at 50 steps pulled its students toward a policy that never succeeds inside an episode.
EPISODE_STEPS = 100
# PPO from scratch trains on ManiSkill's own episode length (at 100 steps it learnt PushCube
# slower: 6% against 27% held out after 30k env steps, seed 0) and validates at EPISODE_STEPS.
SCRATCH_EPISODE_STEPS = 50
# The same interval as rl=from_clone's validation (RPD's): "first validation at the teacher's
# rate" depends on the grid (50-episode validations swing, and more checks give more chances to
# hit the rate); at 10k PPO's seed-1 crossing read 51.2k, every rollout showed it at 35.8k.
SCRATCH_VALIDATION_EVERY = 2500
RESULT_KEYS = ("success_rate", "ci95", "episodes")  # what each row copies from an evaluation


def run(args: list[str]) -> None:
    print("+ vla-kd", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "vla_kd.cli", *args], check=True, stdin=subprocess.DEVNULL)


def held_out_eval(task: str, policy: str | Path, episodes: int, results: Path, *overrides: str) -> dict:
    """``vla-kd eval`` of ``policy`` on the held-out seeds into ``results`` (reused if there)."""
    if not results.is_file():
        run(["eval", f"policy={policy}", f"env={task}", f"episodes_per_task={episodes}", "seed=100000",
             f"max_episode_steps={EPISODE_STEPS}", "progress=false", "tracker=none",
             f"hydra.run.dir={results.parent}", *overrides])
    return json.loads(results.read_text())


def evaluate_teacher(task: str, teacher: str, out: Path, episodes: int, action_steps: int | None) -> dict:
    """The teacher on the held-out seeds; with ``action_steps`` it re-plans after that many
    actions of each chunk, as it does when it labels a student acting in such chunks."""
    replan = [f"action_steps={action_steps}"] if action_steps else []
    # its own folder per setting: a rerun with another --teacher-action-steps must not reuse it
    folder = out / (f"teacher_eval_a{action_steps}" if action_steps else "teacher_eval")
    return held_out_eval(task, teacher, episodes, folder / "results.json", "workers=2", *replan)


def train(
    task: str, teacher: str, method: str, seed: int, steps: int, episodes: int, out: Path, extra: list[str],
    name: str | None = None, episode_steps: int = EPISODE_STEPS,
) -> Path:
    folder = out / f"{name or method}_seed{seed}"
    if not (folder / "train_summary.json").is_file():
        args = [
            "train",
            f"method={method}",
            f"env={task}",
            f"rl.seed={seed}",
            f"rl.total_timesteps={steps}",
            f"rl.max_episode_steps={episode_steps}",
            f"eval.max_episode_steps={EPISODE_STEPS}",
            f"eval.episodes={episodes}",
            "eval.seed=100000",
            "rl.progress=false",
            f"hydra.run.dir={folder}",
            *extra,
        ]
        run([*args, f"teacher={teacher}"])  # PPO reads it only for a warm start (rl.warm_start)
    return folder


def evaluate_sampled(task: str, folder: Path, episodes: int) -> dict:
    """The student of ``folder`` on the held-out seeds, acting with samples of its Gaussian."""
    results = folder / "sampled_eval" / "results.json"
    return held_out_eval(task, folder / "policy", episodes, results, "sample_actions=true")


def clone(task: str, teacher: str, seed: int, episodes: int, args) -> Path:
    """The seed's behaviour clone of ``teacher`` (no RL), evaluated on the held-out seeds."""
    extra = [*args.extra, f"rl.warm_start.episodes={args.clone_episodes}"]
    return train(task, teacher, "ppo", seed, 0, episodes, args.out / task.split("/")[-1], extra, "clone")


def ppo_from_scratch(
    task: str, seed: int, steps: int, episodes: int, out: Path, every: int = SCRATCH_VALIDATION_EVERY
) -> Path:
    """PPO as usually run, for the env-steps comparison: none of the experiment's overrides;
    validated every ``every`` env steps."""
    extra = [f"rl.validation.every={every}"]
    return train(task, "none", "ppo", seed, steps, episodes, out, extra, "ppo_scratch", SCRATCH_EPISODE_STEPS)


def clone_start(clone_folder: Path) -> list[str]:
    """Overrides that start a PPO or RPD run from the seed's clone, and from nothing else: the
    run must not clone again (``rl=from_clone`` asks for a warm start of its own), or it would
    refit the clone on the same teacher episodes and count their env steps twice."""
    return [f"rl.init_policy={clone_folder / 'policy'}", "rl.warm_start.episodes=0"]


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


def latency(
    task: str, teacher_spec: str, student_folder: Path, teacher_action_steps: int | None = None
) -> dict:
    """Per-action latency of the teacher and the RPD student at batch 1, side by side; a teacher
    that re-plans after ``teacher_action_steps`` actions executes only that many per call (the
    evaluator's ``action_steps``, which the latency's per-action split reads)."""
    import torch

    from vla_kd.benchmarks.latency import measure_latency
    from vla_kd.envs import make_env
    from vla_kd.policies.registry import build_policy, policy_image_size

    torch.set_num_threads(1)
    env = make_env(
        task, obs_mode="rgb", include_privileged=True, image_size=policy_image_size(teacher_spec) or 128
    )
    try:
        obs, _ = env.reset(seed=100000)
        teacher = build_policy(teacher_spec, env, action_steps=teacher_action_steps)
        student = build_policy(str(student_folder / "policy"), env)
    finally:
        env.close()
    batch = {k: (v[None] if not isinstance(v, str) else [v]) for k, v in obs.items()}
    batch["instruction"] = [env.instruction]
    return measure_latency({"teacher": teacher, "rpd": student}, batch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", action="append", required=True, help="TASK=TEACHER (folder or scripted)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60000, help="env steps per run")
    parser.add_argument("--episodes", type=int, default=100, help="held-out evaluation episodes")
    parser.add_argument("--out", type=Path, default=Path("runs/rpd_experiment"))
    parser.add_argument(
        "--clone-episodes", type=int, default=0,
        help="clone the teacher from this many of its episodes per seed; PPO and RPD start from it",
    )
    parser.add_argument(
        "--teacher-action-steps", type=int, default=None,
        help="evaluate the teacher re-planning after this many actions (match rl.action_chunk)",
    )
    parser.add_argument(
        "--ppo-from-scratch", type=int, default=0, metavar="STEPS",
        help="also run PPO from scratch (rl defaults, no teacher) for this many env steps per seed",
    )
    parser.add_argument(
        "--scratch-seeds", type=int, nargs="+", default=None, help="seeds of those runs (default: --seeds)"
    )
    parser.add_argument(
        "--scratch-validation-every", type=int, default=SCRATCH_VALIDATION_EVERY, metavar="STEPS",
        help="validate those runs every this many env steps (finer: a finer step ratio, slower runs)",
    )
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS),
        help="which RL runs per seed (rpd is always among them: its student is the one timed)",
    )
    parser.add_argument("extra", nargs="*", help="overrides passed to every training run")
    args = parser.parse_args()
    if "rpd" not in args.methods:
        parser.error("--methods must include rpd")

    summary: dict = {"tasks": {}, "seeds": args.seeds, "steps": args.steps}
    curves: dict = {}
    for spec in args.task:
        task, teacher = spec.split("=", 1)
        summary["tasks"][task], curves[task] = run_task(task, teacher, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2, default=float))
    table = results_table(summary)
    (args.out / "results.md").write_text(table)
    teacher_rates = {task: entry["teacher"]["success_rate"] for task, entry in summary["tasks"].items()}
    clones = {
        task: [(r["env_steps"], r["success_rate"]) for r in entry.get("clone", [])]
        for task, entry in summary["tasks"].items()
    }
    validation = {
        task: {method: [(np.array(r["validation_curve"][0]), np.array(r["validation_curve"][1]))
                        for r in entry[method]] for method in RL_RUNS if method in entry}
        for task, entry in summary["tasks"].items()
    }
    plot(curves, teacher_rates, args.out / "success_vs_steps.png", clones, validation)
    print(table)
    print(f"plot: {args.out / 'success_vs_steps.png'}")


def run_task(task: str, teacher: str, args) -> tuple[dict, dict]:
    """The teacher's evaluation, every (method, seed) run, and the latency of one task."""
    out = args.out / task.split("/")[-1]
    teacher_eval = evaluate_teacher(task, teacher, out, args.episodes, args.teacher_action_steps)
    entry: dict = {"teacher": {"policy": teacher, "action_steps": args.teacher_action_steps,
                               **{k: teacher_eval[k] for k in RESULT_KEYS}}}
    curves: dict = {}
    clones: dict[int, tuple[Path, int]] = {}  # seed -> (clone folder, its teacher env steps)
    if args.clone_episodes:
        entry["clone"] = []
        for seed in args.seeds:
            folder = clone(task, teacher, seed, args.episodes, args)
            result = json.loads((folder / "train_summary.json").read_text())
            clones[seed] = folder, warm_start_env_steps(result)
            entry["clone"].append(
                {"seed": seed, **{k: result[f"eval/{k}"] for k in RESULT_KEYS}, "env_steps": clones[seed][1],
                 "warm_start_env_steps": clones[seed][1], "wall_seconds": result["wall_seconds"]}
            )
    runs = {method: {} for method in args.methods}  # method -> seed -> (folder, env steps before RL)
    for method in args.methods:
        for seed in args.seeds:
            start = clone_start(clones[seed][0]) if seed in clones else []
            folder = train(task, teacher, method, seed, args.steps, args.episodes, out, [*args.extra, *start])
            runs[method][seed] = folder, clones[seed][1] if seed in clones else 0
    if args.ppo_from_scratch:
        runs["ppo_scratch"] = {
            seed: (ppo_from_scratch(
                task, seed, args.ppo_from_scratch, args.episodes, out, args.scratch_validation_every
            ), 0)
            for seed in args.scratch_seeds or args.seeds
        }
    for method, by_seed in runs.items():
        entry[method] = []
        for seed, (folder, clone_steps) in by_seed.items():
            record, curve = run_record(
                task, folder, seed, clone_steps, teacher_eval["success_rate"], args.episodes
            )
            entry[method].append(record)
            curves.setdefault(method, []).append(curve)
    entry["latency"] = latency(task, teacher, out / f"rpd_seed{args.seeds[0]}", args.teacher_action_steps)
    return entry, curves


def run_record(
    task: str, folder: Path, seed: int, clone_steps: int, teacher_rate: float, episodes: int
) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """One finished run's row (held-out and sampled success, env steps, steps to the teacher's
    rate) and its training curve; ``clone_steps``: env steps of the clone it started from."""
    result = json.loads((folder / "train_summary.json").read_text())
    # the clone's teacher episodes, if any, are this run's first samples
    warm = warm_start_env_steps(result) + clone_steps
    steps, success = smoothed_curve(folder, warm)
    val_steps, val_success = validation_curve(result, warm)
    sampled = evaluate_sampled(task, folder, episodes)
    record = {
        "seed": seed,
        **{k: result[f"eval/{k}"] for k in RESULT_KEYS},
        "sampled": {k: sampled[k] for k in RESULT_KEYS},
        "env_steps": warm + result["env_steps"],  # the teacher's warm-start episodes count
        "warm_start_env_steps": warm,
        "wall_seconds": result["wall_seconds"],
        "steps_to_teacher": steps_to_reach(steps, success, teacher_rate),
        "validation_curve": [val_steps.tolist(), val_success.tolist()],
        # None when not reached, or when the run did not validate (empty curve)
        "steps_to_teacher_validated": steps_to_reach(val_steps, val_success, teacher_rate),
    }
    return record, (steps, success)


if __name__ == "__main__":
    main()
