"""ManiSkill3 behind the suite's gymnasium contract (CPU physics, one env per process)."""
from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np

from vla_kd.envs import base
from vla_kd.envs.runtime import configure_maniskill
from vla_kd.envs.tactile import TACTILE_DIM, FingerForces, grasp_force
from vla_kd.errors import UserError, unknown_name

# ManiSkill tasks carry no language; these are the instructions a VLA is conditioned on.
INSTRUCTIONS = {
    "PickCube-v1": "pick up the red cube and move it to the goal position",
    "PushCube-v1": "push the cube to the red and white target",
    "PullCube-v1": "pull the cube back to the red and white target",
    "StackCube-v1": "stack the red cube on top of the green cube",
    "LiftPegUpright-v1": "lift the peg and stand it upright",
    "PushT-v1": "push the T-shaped block onto the T-shaped target",
    "PegInsertionSide-v1": "insert the peg into the hole in the box",
    "PlugCharger-v1": "plug the charger into the socket",
    "RollBall-v1": "roll the ball to the goal region",
    "PlaceSphere-v1": "place the sphere into the bin",
}


def _registry() -> dict:
    configure_maniskill()
    import mani_skill.envs  # noqa: F401  (registers the tasks)
    from mani_skill.utils.registration import REGISTERED_ENVS  # optional: the maniskill extra

    return REGISTERED_ENVS


def missing_assets(task: str) -> list[str]:
    """Asset packs ``task`` needs that are not on disk (ManiSkill would try to download them)."""
    from mani_skill.utils.assets import data  # optional: the maniskill extra

    spec = _registry()[task]
    wanted: list[str] = []
    for uid in spec.asset_download_ids or []:
        if uid in data.DATA_SOURCES:
            wanted.append(uid)
        elif uid in data.DATA_GROUPS:
            wanted.extend(data.expand_data_group_into_individual_data_source_ids(uid))
    robots = getattr(spec.cls, "SUPPORTED_ROBOTS", None) or []
    default_robot = robots[0] if robots and isinstance(robots[0], str) else None
    from mani_skill.agents.registration import REGISTERED_AGENTS  # optional: the maniskill extra

    if default_robot in REGISTERED_AGENTS:
        wanted.extend(REGISTERED_AGENTS[default_robot].asset_download_ids or [])
    return sorted({uid for uid in wanted if not data.is_data_source_downloaded(uid)})


def check_task(task: str) -> None:
    """Raise a one-line UserError if ``task`` is unknown or needs downloaded assets."""
    registry = _registry()
    if task not in registry:
        raise unknown_name("ManiSkill task", task, registry)
    missing = missing_assets(task)
    if missing:
        raise UserError(
            f"ManiSkill task '{task}' needs assets that are not installed ({', '.join(missing)}) "
            "and this suite never downloads at run time; pick a task that ships with mani-skill"
        )


def public_extra_keys(task_env) -> list[str]:
    """Which task extras ManiSkill also shows visual (non-state) observation modes.

    Tasks decide by testing ``"state" in self.obs_mode`` or ``self.obs_mode_struct.use_state``,
    so the split is read by asking the (unwrapped) task for its extras once under a visual mode.
    Everything else in its state-mode extras is privileged.
    """
    from mani_skill.envs.utils.observations import parse_obs_mode_to_struct  # optional: the maniskill extra

    task_env.reset(seed=0)
    info = task_env.get_info()
    saved = task_env._obs_mode, task_env.obs_mode_struct
    try:
        task_env._obs_mode = "rgb"
        task_env.obs_mode_struct = parse_obs_mode_to_struct("rgb")
        return list(task_env._get_obs_extra(info).keys())
    finally:
        task_env._obs_mode, task_env.obs_mode_struct = saved


def sim_obs_mode(obs_mode: str, include_privileged: bool) -> str:
    """ManiSkill's obs_mode for a contract obs_mode (state_dict keeps the extras apart)."""
    base.check_obs_mode(obs_mode)
    if obs_mode == "state":
        return "state_dict"
    return "rgb+state_dict" if include_privileged else "rgb"


class ManiSkillEnv(gym.Env):
    """One ManiSkill3 task as a contract env (see :mod:`vla_kd.envs.base`).

    ``state`` is the robot's qpos/qvel plus the task extras ManiSkill gives visual policies
    (TCP pose, goal position, ...); ``privileged`` is what ManiSkill adds only in state modes
    (object poses, relative vectors).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str,
        obs_mode: str = "state",
        image_size: int = 128,
        include_privileged: bool | None = None,
        max_episode_steps: int | None = None,
        ignore_terminations: bool = False,
        control_mode: str = "pd_ee_delta_pose",
        sim_backend: str = "cpu",
        render_backend: str = "cpu",
        render_mode: str | None = None,
        reward_mode: str | None = None,
        tactile: bool = False,
    ) -> None:
        base.check_obs_mode(obs_mode)
        check_task(task)
        from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper  # optional: the maniskill extra

        self.task = task
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.include_privileged = (obs_mode == "state") if include_privileged is None else include_privileged
        self.instruction = instruction_for(task)
        self.max_episode_steps = max_episode_steps or _registry()[task].max_episode_steps
        kwargs: dict[str, Any] = dict(
            obs_mode=sim_obs_mode(obs_mode, self.include_privileged),
            control_mode=control_mode,
            sim_backend=sim_backend,
            render_backend=render_backend,
            max_episode_steps=self.max_episode_steps,
            sensor_configs=dict(width=image_size, height=image_size),
        )
        if render_mode:
            kwargs["render_mode"] = render_mode
        if reward_mode:  # sparse | dense | normalized_dense (ManiSkill's default)
            kwargs["reward_mode"] = reward_mode
        raw = gym.make(task, **kwargs)
        self._sim = CPUGymWrapper(raw, ignore_terminations=ignore_terminations)
        self._base = self._sim.unwrapped
        self._public_extra_keys = public_extra_keys(self._base)
        #: finger-object contact forces, read after every step: ``info["grasp_force"]`` always,
        #: ``obs["tactile"]`` with ``tactile=True`` (never a student's input at inference)
        self.tactile = tactile
        self._touch = FingerForces(self._base, task)
        self.layout: dict[str, dict[str, slice]] | None = None
        #: False: the next step skips the camera (its ``rgb`` is all zeros), ~10x cheaper on a
        #: CPU renderer; for consumers that only look at some frames (a chunked teacher).
        self.render_next_observation = True

        obs, _ = self._sim.reset(seed=0)
        self._touch.reset()
        contract = self._convert(obs, self._touch.read(grasp=tactile))
        self._blank_rgb = np.zeros_like(contract["rgb"]) if "rgb" in contract else None
        self.observation_space = base.observation_space(
            state_dim=contract["state"].shape[0],
            rgb_shape=contract["rgb"].shape if "rgb" in contract else None,
            privileged_dim=contract["privileged"].shape[0] if "privileged" in contract else None,
            tactile_dim=TACTILE_DIM if tactile else None,
        )
        self.action_space = base.action_space()
        # 7 = arm 6 + gripper; 6 = a gripper-less robot (PushT's stick), which ignores action[6].
        self._sim_action_dim = self._sim.action_space.shape[0]
        if self._sim_action_dim not in (base.ACTION_DIM, base.ACTION_DIM - 1):
            raise UserError(
                f"ManiSkill task '{task}' with control_mode={control_mode} has a "
                f"{self._sim.action_space.shape} action space, not the contract's 7-D EE delta"
            )

    def _convert(self, obs: dict, touch: np.ndarray) -> dict[str, np.ndarray]:
        rgb, state_parts, private = split_observation(obs, self._public_extra_keys)
        out: dict[str, np.ndarray] = {}
        if self.obs_mode == "rgb":
            out["rgb"] = self._blank_rgb if rgb is None else np.ascontiguousarray(rgb, dtype=np.uint8)
        out["state"] = base.flatten_values(state_parts)
        if self.include_privileged:
            out["privileged"] = base.flatten_values(private)
        if self.tactile:
            out["tactile"] = touch
        if self.layout is None:  # computed once; keys and sizes never change within a task
            self.layout = {"state": base.layout_of(state_parts)}
            if self.include_privileged:
                self.layout["privileged"] = base.layout_of(private)
        return out

    def _info(self, info: dict, touch: np.ndarray) -> dict:
        info = dict(info)
        info["grasp_force"] = grasp_force(touch)
        info["success"] = bool(np.asarray(info.get("success", False)).item())
        info["instruction"] = self.instruction
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            # ManiSkill places an unseeded episode's objects with the process's global torch RNG,
            # so the episodes after a seeded first one (an RL worker's auto-resets) differed from
            # run to run. Each gets a seed drawn from this env's own generator instead, which the
            # first seeded reset fixed: a seeded run is the same run every time.
            seed = int(self.np_random.integers(2**31))
        obs, info = self._sim.reset(seed=seed, options=options)
        self._touch.reset()
        touch = self._touch.read(grasp=self.tactile)
        return self._convert(obs, touch), self._info(info, touch)

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)[: self._sim_action_dim]
        if self.obs_mode == "rgb" and not self.render_next_observation:
            # ManiSkill renders its cameras inside get_obs when its obs mode is visual; under the
            # matching state mode the same step returns the same state without rendering.
            saved = self._base._obs_mode
            self._base._obs_mode = "state_dict"
            try:
                obs, reward, terminated, truncated, info = self._sim.step(action)
            finally:
                self._base._obs_mode = saved
        else:
            obs, reward, terminated, truncated, info = self._sim.step(action)
        touch = self._touch.read(grasp=self.tactile)
        return (self._convert(obs, touch), float(reward), bool(terminated), bool(truncated),
                self._info(info, touch))

    def render(self):
        return self._sim.render()

    def close(self) -> None:
        self._sim.close()


def split_observation(obs: dict, public_extra_keys) -> tuple[object, dict, dict]:
    """A ManiSkill observation -> (first camera's rgb or None, public state parts, private parts).

    Public = the robot's own readings plus the task extras ManiSkill shows visual policies;
    private = every other extra (object and goal poses). Works on numpy and batched tensors."""
    extra = obs.get("extra", {})
    public = {k: extra[k] for k in public_extra_keys if k in extra}
    private = {k: v for k, v in extra.items() if k not in public}
    sensors = obs.get("sensor_data") or {}
    rgb = next(iter(sensors.values()))["rgb"] if sensors else None
    return rgb, {**obs["agent"], **public}, private


def instruction_for(task: str) -> str:
    """The language instruction of a ManiSkill task (written for the common ones, else from its name)."""
    return INSTRUCTIONS.get(task, _instruction_from_name(task))


def _instruction_from_name(task: str) -> str:
    """'LiftPegUpright-v1' -> 'lift peg upright'."""
    stem = task.split("-")[0]
    words = [w.lower() for w in re.findall(r"[A-Z][a-z]*|\d+", stem)]
    return " ".join(words)
