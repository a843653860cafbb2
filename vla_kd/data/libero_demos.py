"""LIBERO demonstrations from the scripted privileged-state expert, recorded through the contract.

Each attempt starts from the layout robosuite's placement sampler draws from the attempt's seed
(``sampled_init``), never from the suite's 50 fixed initial states, which stay held out for
evaluation. The expert reads object positions from the privileged state; what is recorded is what
a VLA sees (rgb, proprio, instruction) plus the privileged vector as ``observation.environment_state``.
Only successful episodes are kept, and the expert's success rate is reported.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vla_kd.data.demos import DemoReport, save_report, write_successes
from vla_kd.envs import make_env
from vla_kd.policies.base import add_batch_dim
from vla_kd.policies.loading import scripted_policy_for

FPS = 20  # LIBERO's control frequency

_worker_env = None  # one env per recording process


def _start_recorder(task: str, image_size: int, wrist_camera: bool) -> None:
    global _worker_env

    _worker_env = make_env(task, obs_mode="rgb", include_privileged=True, image_size=image_size,
                           wrist_camera=wrist_camera)


def _record_in_worker(seed: int) -> dict | None:
    return record_expert_episode(_worker_env, seed)


def record_expert_episode(env, seed: int) -> dict | None:
    """Run the scripted expert from the layout sampled by ``seed``; the recording if it succeeds."""
    expert = scripted_policy_for(env)
    obs, info = env.reset(seed=seed, options={"sampled_init": True})
    expert.reset()
    cameras = [key for key in ("rgb", "wrist_rgb") if key in obs]
    recorded = [*cameras, "state", "privileged"]
    frames: dict[str, list] = {key: [] for key in (*recorded, "action", "success")}
    for _ in range(env.max_episode_steps):
        action = expert.act(add_batch_dim(obs))[0]
        for key in recorded:
            frames[key].append(obs[key])
        frames["action"].append(action)
        obs, _, terminated, truncated, info = env.step(action)
        frames["success"].append(bool(info["success"]))
        if terminated or truncated:
            break
    if not info["success"]:
        return None
    return {
        "images": {key: np.stack(frames[key]) for key in cameras},
        "states": np.stack(frames["state"]),
        "env_states": np.stack(frames["privileged"]),
        "actions": np.asarray(frames["action"], np.float32),
        "successes": np.asarray(frames["success"]),
    }


def generate_libero_demos(
    task: str, n: int, output: str | Path, image_size: int = 128, overwrite: bool = False,
    progress: bool = True, workers: int = 1, wrist_camera: bool = False,
) -> DemoReport:
    """``n`` expert attempts at ``task`` (``libero/<suite>/<index>``, seeds ``0..n-1``) into a
    LeRobot dataset at ``output``, rolled out in ``workers`` processes; ``wrist_camera`` also
    records the eye-in-hand camera (as ``observation.images.wrist_rgb``)."""
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workers <= 1:
            _start_recorder(task, image_size, wrist_camera)
            stack.callback(lambda: _worker_env.close())
            instruction = _worker_env.instruction
            episodes = map(_record_in_worker, range(n))
        else:


            probe = make_env(task, obs_mode="state")
            instruction = probe.instruction
            probe.close()
            context = multiprocessing.get_context("forkserver")  # no forked renderer
            pool = stack.enter_context(
                context.Pool(workers, initializer=_start_recorder, initargs=(task, image_size, wrist_camera))
            )
            episodes = pool.imap(_record_in_worker, range(n))
        bar = tqdm(episodes, total=n, desc=f"expert {task}", disable=not progress)
        recorded, frames = write_successes(bar, output, overwrite, instruction, FPS)
    if not recorded:
        raise RuntimeError(f"the expert solved none of {n} attempts at {task}")
    # The expert is the planner here: no separate conversion stage, so all three counts agree.
    report = DemoReport(
        task=task, attempts=n, planned_success=recorded, converted_success=recorded,
        recorded_success=recorded, frames=frames, seconds=time.perf_counter() - start,
        dataset=str(output),
    )
    save_report(report)
    return report
