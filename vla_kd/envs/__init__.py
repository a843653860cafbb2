"""Simulators behind one gymnasium contract: see :mod:`vla_kd.envs.base`."""
from __future__ import annotations

from functools import partial

import gymnasium as gym

from vla_kd.envs import libero, maniskill
from vla_kd.envs.base import ACTION_DIM, TaskId

__all__ = ["ACTION_DIM", "TaskId", "check_task", "make_env", "make_vector_env"]


def check_task(task: str | TaskId) -> TaskId:
    """Parse and validate a task name without building the simulator (one-line errors)."""
    task_id = task if isinstance(task, TaskId) else TaskId.parse(str(task))
    if task_id.backend == "maniskill":
        maniskill.check_task(task_id.name)
    else:
        libero.check_task(task_id.name, task_id.index)
    return task_id


def make_env(task: str | TaskId, **kwargs) -> gym.Env:
    """Build one contract env; ``kwargs`` go to the simulator's wrapper class."""
    task_id = check_task(task)
    if task_id.backend == "maniskill":
        return maniskill.ManiSkillEnv(task_id.name, **kwargs)
    return libero.LiberoEnv(task_id.name, task_id.index, **kwargs)


def make_vector_env(task: str | TaskId, num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    """``num_envs`` copies of a task in worker processes (ManiSkill's CPU sim allows one env per
    process, so CPU parallelism is process parallelism)."""
    task_id = check_task(task)
    factories = [partial(make_env, task_id, **kwargs) for _ in range(num_envs)]
    # forkserver: never fork a parent that already holds a Vulkan/EGL context.
    return gym.vector.AsyncVectorEnv(factories, context="forkserver")
