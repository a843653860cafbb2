"""Demonstrations from ManiSkill3's motion planners, recorded through the suite's contract.

Three stages, each reported honestly:
1. plan: ManiSkill's mplib solutions (joint-position control), episode seeds ``0..n-1``;
2. convert: ManiSkill's trajectory replay turns them into ``pd_ee_delta_pose`` actions;
3. record: the converted actions are replayed open-loop in :class:`ManiSkillEnv` from the same
   seed, recording rgb, state and instruction; only episodes that succeed are kept.
The planner and converter run as ManiSkill's own command-line tools in a subprocess (their
supported interface), writing their HDF5 files into a scratch folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vla_kd.data.lerobot_writer import LeRobotWriter
from vla_kd.envs import make_env
from vla_kd.envs.maniskill import instruction_for
from vla_kd.envs.runtime import configure_maniskill
from vla_kd.envs.tactile import FIELDS as TACTILE_FIELDS
from vla_kd.errors import UserError
from vla_kd.parallel import map_blocks

#: ManiSkill ships motion-planning solutions for these tasks (Panda arm).
PLANNABLE = (
    "PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1", "LiftPegUpright-v1",
    "PegInsertionSide-v1", "PlugCharger-v1", "PlaceSphere-v1",
)
FPS = 20  # ManiSkill's control frequency for these tasks


@dataclass
class DemoReport:
    """What each stage produced; the expert's own success rate is ``planned_success / attempts``."""

    task: str
    attempts: int
    planned_success: int
    converted_success: int
    recorded_success: int
    frames: int
    seconds: float
    dataset: str

    @property
    def planner_success_rate(self) -> float:
        return self.planned_success / self.attempts if self.attempts else 0.0


def _maniskill_tool(module: str, *args: str, cwd: Path) -> None:
    configure_maniskill()
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, env=dict(os.environ), check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{tail}")


def plan_and_convert(task: str, n: int, workdir: Path, workers: int = 1) -> tuple[list[dict], Path]:
    """Run the planner for seeds ``0..n-1`` and convert; returns planner episodes and the
    converted HDF5 file. Both tools split their episodes over ``workers`` processes."""
    # The planner gives each process a contiguous block of n // workers seeds, so seeds stay
    # 0..n-1 only when the split is exact (and it runs single-process unless workers < n).
    planner_procs = workers if 1 < workers < n and n % workers == 0 else 1
    _maniskill_tool(
        "mani_skill.examples.motionplanning.panda.run", "-e", task, "-n", str(n), "-b", "cpu",
        "--record-dir", str(workdir), "--traj-name", "plan", "--num-procs", str(planner_procs),
        cwd=workdir,
    )
    planned = workdir / task / "motionplanning" / "plan.h5"
    episodes = json.loads(planned.with_suffix(".json").read_text())["episodes"]
    _maniskill_tool(
        "mani_skill.trajectory.replay_trajectory", "--traj-path", str(planned),
        "-c", "pd_ee_delta_pose", "-o", "none", "--save-traj", "-b", "cpu",
        "--num-envs", str(max(1, min(workers, len(episodes)))), cwd=workdir,
    )
    converted = next(planned.parent.glob("plan.none.pd_ee_delta_pose*.h5"), None)
    if converted is None:
        raise RuntimeError(f"ManiSkill's converter wrote no pd_ee_delta_pose file for {task}")
    return episodes, converted


def vary_grip(actions: np.ndarray, seed: int, grip_range: tuple[float, float] | None) -> np.ndarray:
    """``actions`` with every closing gripper command (negative) scaled by one factor per
    episode, drawn uniformly from ``grip_range`` with the episode's seed: the gripper's position
    target then stops short of fully closed and the fingers press with less force (PickCube's
    cube: about 27 N at 1.0, 13 N at 0.3, 8 N at 0.1). None: the actions unchanged."""
    if grip_range is None:
        return actions
    factor = np.random.default_rng(seed).uniform(*grip_range)
    varied = np.array(actions, np.float32, copy=True)
    closing = varied[:, 6] < 0
    varied[closing, 6] *= factor
    return varied


def record_episode(env, seed: int, actions: np.ndarray) -> dict | None:
    """Replay ``actions`` from ``reset(seed)``; the recording if the episode succeeds, else None."""
    obs, info = env.reset(seed=seed)
    frames = {key: [] for key in ("rgb", "state", "privileged", "tactile") if key in obs}
    success = []
    for action in actions:
        for key in frames:
            frames[key].append(obs[key])
        obs, _, _, _, info = env.step(action)
        success.append(info["success"])
    if not success[-1]:
        return None
    return {
        "images": {"rgb": np.stack(frames["rgb"])},
        "states": np.stack(frames["state"]),
        "env_states": np.stack(frames["privileged"]),
        "actions": np.asarray(actions, np.float32),
        "successes": np.asarray(success),
        **({"tactile": np.stack(frames["tactile"])} if "tactile" in frames else {}),
    }


def _recorder_env(task: str, image_size: int, max_steps: int, tactile: bool = False):
    return make_env(f"maniskill/{task}", obs_mode="rgb", include_privileged=True, tactile=tactile,
                    image_size=image_size, max_episode_steps=max_steps, ignore_terminations=True)


def _record_block(env_args: tuple, progress: bool, block: list, index: int) -> list[dict | None]:
    """One worker's contiguous block of recordings on one env built for it (the first block
    draws the progress bar)."""
    env = _recorder_env(*env_args)
    try:
        bar = tqdm(block, desc=f"record {env_args[0]}", disable=not (progress and index == 0))
        return [record_episode(env, seed, actions) for seed, actions in bar]
    finally:
        env.close()


def record_all(
    task: str, trajectories: dict[int, np.ndarray], image_size: int, workers: int, progress: bool,
    engine: str = "local", ray_address: str | None = None, tactile: bool = False,
):
    """Yield each trajectory's recording (or None if it failed) in seed order, rendered in
    ``workers`` contiguous blocks (:func:`vla_kd.parallel.map_blocks`: local processes, or Ray
    tasks with ``engine="ray"``). Fixed blocks keep the recording independent of the engine:
    a ManiSkill CPU scene carries solver state from one episode into the next."""
    items = [(int(seed), actions) for seed, actions in sorted(trajectories.items())]
    env_args = (task, image_size, max((len(a) for _, a in items), default=1) + 1, tactile)
    work = partial(_record_block, env_args, progress)
    for block in map_blocks(work, items, workers, engine, ray_address):
        yield from block


def generate_maniskill_demos(
    task: str, n: int, output: str | Path, image_size: int = 128, overwrite: bool = False,
    progress: bool = True, workers: int = 1, engine: str = "local", ray_address: str | None = None,
    tactile: bool = False, grip_range: tuple[float, float] | None = None,
) -> DemoReport:
    """Plan, convert and record ``n`` attempts at ``task`` into a LeRobot dataset at ``output``,
    spreading each stage over ``workers`` processes (``engine="ray"``: the recording, the
    stage that renders, as Ray tasks; ManiSkill's planner and converter stay local processes).
    ``tactile``: also record the fingers' contact forces as ``observation.tactile``;
    ``grip_range``: vary each episode's grip strength (:func:`vary_grip`)."""
    if task not in PLANNABLE:
        raise UserError(f"no motion-planning expert for '{task}'; tasks with one: {', '.join(PLANNABLE)}")
    import h5py  # optional: the maniskill extra (motion-planning output)


    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vla_kd_plan_") as scratch:
        planned, converted_path = plan_and_convert(task, n, Path(scratch), workers)
        converted_meta = json.loads(converted_path.with_suffix(".json").read_text())["episodes"]
        with h5py.File(converted_path, "r") as h5:
            trajectories = {e["episode_seed"]: vary_grip(h5[f"traj_{e['episode_id']}/actions"][:],
                                                         e["episode_seed"], grip_range)
                            for e in converted_meta if e.get("success", True)}
    episodes = record_all(task, trajectories, image_size, workers, progress, engine, ray_address, tactile)
    recorded, frames = write_successes(episodes, output, overwrite, instruction_for(task), FPS)
    if not recorded:
        raise RuntimeError(f"no successful {task} demonstration out of {n} attempts")
    report = DemoReport(
        task=task, attempts=n, planned_success=sum(bool(e.get("success")) for e in planned),
        converted_success=len(trajectories), recorded_success=recorded, frames=frames,
        seconds=time.perf_counter() - start, dataset=str(output),
    )
    save_report(report)
    return report


def write_successes(
    episodes, output: str | Path, overwrite: bool, instruction: str, fps: int
) -> tuple[int, int]:
    """Write the recordings among ``episodes`` (None = failed) to a LeRobot dataset at
    ``output``, one video per camera the first recording has; returns (episodes written, frames
    written). Nothing is written if none succeeded."""
    writer, recorded, frames = None, 0, 0
    for episode in episodes:
        if episode is None:
            continue
        if writer is None:
            cameras = {name: video.shape[1:3] for name, video in episode["images"].items()}
            writer = LeRobotWriter(
                output, fps=fps, robot_type="panda", cameras=cameras,
                state_dim=episode["states"].shape[1], env_state_dim=episode["env_states"].shape[1],
                overwrite=overwrite, tactile_names=list(TACTILE_FIELDS) if "tactile" in episode else None,
            )
        writer.add_episode(instruction, **episode)
        recorded += 1
        frames += len(episode["actions"])
    if writer is not None:
        writer.finalize()
    return recorded, frames


def save_report(report: DemoReport) -> None:
    """The report beside the data, as ``meta/demos_report.json``."""
    (Path(report.dataset) / "meta" / "demos_report.json").write_text(
        json.dumps({**asdict(report), "planner_success_rate": report.planner_success_rate}, indent=2)
    )
