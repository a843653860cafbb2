"""ManiSkill3's batched simulation (GPU PhysX) behind the contract, for on-policy training.

Thousands of envs live in one process on an NVIDIA GPU (``sim_backend="physx_cuda"``).
Observations stay torch tensors on the simulator's device, batched on the first axis, with the
same keys, order and layout as :class:`vla_kd.envs.maniskill.ManiSkillEnv`. On a machine
without a GPU the same class runs one env on CPU physics, which is how it is tested here.
"""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import torch

from vla_kd.envs import base
from vla_kd.envs.maniskill import (
    check_task,
    instruction_for,
    public_extra_keys,
    sim_obs_mode,
    split_observation,
)
from vla_kd.errors import UserError


def physx_gpu_library() -> Path:
    """Where SAPIEN loads its PhysX GPU library from (``~/.sapien/physx/<version>/``)."""
    import sapien.physx  # optional: the maniskill extra (GPU sim)

    return Path.home() / ".sapien" / "physx" / sapien.physx.version() / "libPhysXGpu_64.so"


def check_physx_gpu_library(sim_backend: str) -> None:
    """Refuse a GPU sim whose PhysX GPU library is missing. SAPIEN does not ship it in its wheel:
    at first GPU use it downloads it from GitHub, and this suite never downloads at run time
    (on an offline machine that download fails with a bare connection error)."""
    if sim_backend in ("cpu", "physx_cpu"):
        return
    import sapien.physx  # optional: the maniskill extra (GPU sim)

    library = physx_gpu_library()
    if sapien.physx.is_gpu_enabled() or library.is_file():
        return
    url = (f"https://github.com/sapien-sim/physx-precompiled/releases/download/"
           f"{sapien.physx.version()}/linux-so.zip")
    raise UserError(
        f"maniskill=gpu (sim_backend={sim_backend}) needs SAPIEN's PhysX GPU library at {library}, "
        f"which SAPIEN's wheel does not ship. Fetch {url} once and unzip it into {library.parent} "
        "(copy that folder to offline machines), or train on the CPU sim (maniskill=cpu)."
    )


def flatten_batched(parts: dict, batch: int) -> torch.Tensor:
    """Concatenate a nested dict of batched tensors into ``(batch, features)`` float32."""
    chunks = []
    for value in parts.values():
        if isinstance(value, dict):
            chunks.append(flatten_batched(value, batch))
        else:
            chunks.append(torch.as_tensor(value).reshape(batch, -1).to(torch.float32))
    return torch.cat(chunks, dim=-1)


class ManiSkillBatchedEnv:
    """``num_envs`` copies of one ManiSkill task in this process, auto-resetting.

    ``reset``/``step`` follow gymnasium's vector API; rewards, terminations and
    ``info["success"]`` are ``(num_envs,)`` tensors.
    """

    def __init__(
        self,
        task: str,
        num_envs: int,
        obs_mode: str = "state",
        include_privileged: bool | None = None,
        image_size: int = 128,
        max_episode_steps: int | None = None,
        ignore_terminations: bool = False,
        control_mode: str = "pd_ee_delta_pose",
        sim_backend: str = "physx_cuda",
        render_backend: str = "gpu",
        reward_mode: str | None = None,
    ) -> None:
        check_task(task)
        check_physx_gpu_library(sim_backend)
        from mani_skill.vector.wrappers.gymnasium import ManiSkillVectorEnv  # optional: the maniskill extra

        self.task, self.obs_mode, self.num_envs = task, obs_mode, num_envs
        self.include_privileged = (obs_mode == "state") if include_privileged is None else include_privileged
        self.instruction = instruction_for(task)
        raw = gym.make(
            task,
            num_envs=num_envs,
            obs_mode=sim_obs_mode(obs_mode, self.include_privileged),
            control_mode=control_mode,
            sim_backend=sim_backend,
            render_backend=render_backend,
            max_episode_steps=max_episode_steps,
            sensor_configs={"width": image_size, "height": image_size},
            **({"reward_mode": reward_mode} if reward_mode else {}),
        )
        self._task_env = raw.unwrapped
        self._public = public_extra_keys(self._task_env)
        self._venv = ManiSkillVectorEnv(
            raw, auto_reset=True, ignore_terminations=ignore_terminations
        )
        self.device = self._task_env.device
        self.max_episode_steps = max_episode_steps or self._task_env.spec.max_episode_steps
        self._sim_action_dim = self._venv.single_action_space.shape[0]
        first, _ = self.reset(seed=0)
        self.single_observation_space = base.observation_space(
            state_dim=first["state"].shape[1],
            rgb_shape=tuple(first["rgb"].shape[1:]) if "rgb" in first else None,
            privileged_dim=first["privileged"].shape[1] if "privileged" in first else None,
        )
        self.single_action_space = base.action_space()

    def _convert(self, obs: dict) -> dict[str, torch.Tensor]:
        rgb, state_parts, private = split_observation(obs, self._public)
        out: dict[str, torch.Tensor] = {}
        if self.obs_mode == "rgb":
            out["rgb"] = rgb.to(torch.uint8)
        out["state"] = flatten_batched(state_parts, self.num_envs)
        if self.include_privileged:
            out["privileged"] = flatten_batched(private, self.num_envs)
        return out

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        obs, info = self._venv.reset(seed=seed, options=options or {})
        return self._convert(obs), info

    def step(self, actions):
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        actions = actions.clamp(-1.0, 1.0)[:, : self._sim_action_dim]
        obs, reward, terminated, truncated, info = self._venv.step(actions)
        return self._convert(obs), reward, terminated, truncated, info

    def close(self) -> None:
        self._venv.close()
