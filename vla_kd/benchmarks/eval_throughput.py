"""The evaluator against the simulator's own loop, side by side in one run.

For each observation mode (``state``, and ``rgb`` at the policy's camera size): env steps per
second of **raw ManiSkill** (``gym.make`` with the suite's controller, camera size and CPU
backends, stepped with random actions, reset every ``steps``) and of **the evaluator**
(:func:`vla_kd.evaluator.evaluate_task`, the path of ``vla-kd eval policy=random``: the contract
env, the episode loop and its per-step bookkeeping) on the same episodes' count and length, in
one process; then the evaluator's episodes per second with 1 and 2 worker processes. The
random policy is the fast policy: its cost is a few microseconds, so what is left is the
evaluator's. Both sides include building their simulator, as a user's run does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np

from vla_kd.envs import check_task, make_env
from vla_kd.envs.maniskill import sim_obs_mode
from vla_kd.evaluator import evaluate_task
from vla_kd.policies.base import RandomPolicy


@dataclasses.dataclass
class Rate:
    """One contestant's run: what it was, how many episodes and steps, in how many seconds."""

    loop: str  # "raw ManiSkill" or "vla-kd eval"
    obs_mode: str
    workers: int
    episodes: int
    steps: int
    seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    @property
    def episodes_per_second(self) -> float:
        return self.episodes / self.seconds


def raw_maniskill(task: str, obs_mode: str, image_size: int, episodes: int, steps: int, seed: int) -> Rate:
    """``episodes`` x ``steps`` random actions through ManiSkill's own env, built as the suite's
    contract env builds it (``pd_ee_delta_pose``, CPU simulation and rendering, the camera at
    ``image_size``), without the contract's conversion."""
    import mani_skill.envs  # noqa: F401  (registers the tasks with gymnasium)

    name = check_task(task).name
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    env = gym.make(
        name, obs_mode=sim_obs_mode(obs_mode, include_privileged=obs_mode == "state"),
        control_mode="pd_ee_delta_pose", sim_backend="cpu", render_backend="cpu",
        max_episode_steps=steps, sensor_configs=dict(width=image_size, height=image_size),
    )
    try:
        for episode in range(episodes):
            env.reset(seed=seed + episode)
            for _ in range(steps):
                env.step(rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32))
    finally:
        env.close()
    return Rate("raw ManiSkill", obs_mode, 1, episodes, episodes * steps, time.perf_counter() - started)


def random_policy(env) -> RandomPolicy:
    return RandomPolicy(seed=0)


def evaluator(task: str, obs_mode: str, image_size: int, episodes: int, steps: int, seed: int,
              workers: int) -> Rate:
    """The same episodes through the evaluator with a random policy on ``workers`` processes."""
    make = partial(make_env, task, obs_mode=obs_mode, image_size=image_size, max_episode_steps=steps,
                   ignore_terminations=True)
    started = time.perf_counter()
    results, _ = evaluate_task(task, make, random_policy, episodes, seed=seed, progress=False,
                               workers=workers)
    seconds = time.perf_counter() - started
    return Rate("vla-kd eval", obs_mode, workers, episodes, sum(r.length for r in results), seconds)


def measure(task: str, obs_modes: list[str], image_size: int, episodes: int, steps: int,
            seed: int = 100000) -> list[Rate]:
    """Per obs mode: raw, evaluator on 1 worker, evaluator on 2 workers (in that order)."""
    rows = []
    for mode in obs_modes:
        rows.append(raw_maniskill(task, mode, image_size, episodes, steps, seed))
        for workers in (1, 2):
            rows.append(evaluator(task, mode, image_size, episodes, steps, seed, workers))
    return rows


def markdown(rows: list[Rate]) -> str:
    """The side-by-side table: each row's env steps/s against raw ManiSkill's in its obs mode,
    and each evaluator row's episodes/s against its one-worker row."""
    raw = {r.obs_mode: r.steps_per_second for r in rows if r.loop == "raw ManiSkill"}
    one = {r.obs_mode: r.episodes_per_second for r in rows if r.loop == "vla-kd eval" and r.workers == 1}
    lines = ["| loop | obs | workers | episodes | env steps | seconds | env steps/s | vs raw | episodes/s "
             "| vs 1 worker |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        evaluated = r.loop == "vla-kd eval"
        against_one = f"{r.episodes_per_second / one[r.obs_mode]:.2f}x" if evaluated else ""
        lines.append(f"| {r.loop} | {r.obs_mode} | {r.workers} | {r.episodes} | {r.steps} | "
                     f"{r.seconds:.1f} | "
                     f"{r.steps_per_second:.0f} | {r.steps_per_second / raw[r.obs_mode]:.2f}x | "
                     f"{r.episodes_per_second:.2f} | {against_one} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="maniskill/PushCube-v1")
    parser.add_argument("--obs-modes", nargs="+", default=["state", "rgb"])
    parser.add_argument("--image-size", type=int, default=64,
                        help="camera pixels (the pipeline's policies read 64)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100, help="steps per episode")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    rows = measure(args.task, args.obs_modes, args.image_size, args.episodes, args.steps)
    table = markdown(rows)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        data = [dict(dataclasses.asdict(r), steps_per_second=r.steps_per_second,
                     episodes_per_second=r.episodes_per_second) for r in rows]
        (args.out / "results.json").write_text(json.dumps({"task": args.task, "rows": data}, indent=2))
        (args.out / "results.md").write_text(table + "\n")
