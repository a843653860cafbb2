"""Roll policies out on tasks and measure success honestly.

Every number is reported with the protocol that produced it (episodes, seeds or fixed initial
states, step limit) and a 95% Wilson interval. ManiSkill envs are run with terminations ignored
so both ``success_once`` (ever succeeded) and ``success_at_end`` (succeeded at the last step) are
measured; LIBERO ends episodes on success, as its standard protocol does.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
from tqdm.auto import tqdm

from vla_kd.config_checks import at_least, one_of
from vla_kd.envs import make_env
from vla_kd.envs.base import TaskId
from vla_kd.envs.from_config import env_kwargs
from vla_kd.envs.tactile import episode_forces, force_summary
from vla_kd.errors import UserError
from vla_kd.parallel import map_blocks
from vla_kd.policies.base import Policy, add_batch_dim
from vla_kd.stats import wilson_interval


@dataclass
class EvalConfig:
    """Held-out evaluation of a trained policy (the ``eval`` node of train and pipeline)."""

    env: str | None = None  # task evaluated after training, e.g. maniskill/PushCube-v1 (null: none)
    episodes: int = 20
    seed: int = 100000  # held out: demonstrations use seeds 0..n-1
    max_episode_steps: int | None = 100
    obs_mode: str = "rgb"  # what a policy that declares nothing sees: state | rgb
    progress: bool = False
    workers: int = 2  # rollout processes (one per core)
    sample_actions: bool = False  # RL students act with seeded samples of their Gaussian, not its mean
    #: also evaluate the student every other way its method offers (RPD, PPO: sampling its
    #: Gaussian), each as eval<variant>/... in train_summary.json
    all_variants: bool = False

    def __post_init__(self) -> None:
        at_least(self, 1, "episodes", "max_episode_steps", "workers")
        at_least(self, 0, "seed")
        one_of(self, "obs_mode", ("state", "rgb"))


@dataclass
class EpisodeResult:
    """One rolled-out episode."""

    task: str
    episode: int
    seed: int
    init_state_id: int | None
    success_once: bool
    success_at_end: bool
    episode_return: float
    length: int
    policy_ms_per_action: float
    env_ms_per_step: float
    policy_stats: dict | None = None  # the policy's own counters (e.g. layer-skipping paths)
    milestones: dict[str, bool] | None = None  # the task's own boolean flags, ever true
    #: grasp force (N, vla_kd.envs.tactile): the episode's peak and its mean while in contact
    peak_grasp_force: float | None = None
    mean_grasp_force: float | None = None


@dataclass
class TaskProtocol:
    """How a task's episodes were produced, stored beside its numbers."""

    task: str
    episodes: int
    seeds: list[int]
    init_states: str
    max_episode_steps: int
    terminate_on_success: bool
    settle_steps: int = 0
    obs_mode: str = "state"
    policy_uses_privileged_state: bool = False


def run_episode(
    env: gym.Env,
    policy: Policy,
    seed: int,
    max_steps: int,
    options: dict | None = None,
    frames: list[np.ndarray] | None = None,
) -> tuple[dict, float, float]:
    """Roll out one episode; returns (episode stats, policy seconds, env seconds)."""
    obs, info = env.reset(seed=seed, options=options)
    policy.reset()
    # A chunked policy reads the camera only when it predicts a new chunk; the frames between
    # are never looked at, so the simulator may skip rendering them (exact, and ~3x faster on
    # a CPU renderer). Videos need every frame.
    skip_frames = frames is None and hasattr(env.unwrapped, "render_next_observation") and hasattr(
        policy, "rows_to_predict")
    success_once = bool(info["success"])
    milestones: dict[str, bool] = {}
    forces: list[float] = []
    total_reward, policy_s, env_s, steps = 0.0, 0.0, 0.0, 0
    while steps < max_steps:
        steps += 1
        if frames is not None:
            frames.append(obs["rgb"] if "rgb" in obs else env.render())
        batch = add_batch_dim(obs)
        batch["instruction"] = [info["instruction"]]  # language-conditioned policies read it
        start = time.perf_counter()
        action = policy.act(batch)[0]
        policy_s += time.perf_counter() - start
        if skip_frames:
            env.unwrapped.render_next_observation = len(policy.rows_to_predict(1)) > 0
        start = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        env_s += time.perf_counter() - start
        total_reward += reward
        success_once |= bool(info["success"])
        record_milestones(milestones, info)
        if "grasp_force" in info:
            forces.append(info["grasp_force"])
        if terminated or truncated:
            break
    if skip_frames:
        env.unwrapped.render_next_observation = True  # the next episode's first frame
    stats = dict(
        success_once=success_once,
        success_at_end=bool(info["success"]),
        episode_return=float(total_reward),
        length=steps,
        init_state_id=info.get("init_state_id", (options or {}).get("init_state_id")),
        milestones=milestones or None,
        **episode_forces(forces),
    )
    return stats, policy_s, env_s


def record_milestones(milestones: dict[str, bool], info: dict) -> None:
    """OR into ``milestones`` every boolean flag of a step's ``info`` other than ``success``.

    ManiSkill reports sub-goals this way (PickCube: ``is_grasped``, ``is_obj_placed``,
    ``is_robot_static``), which tells *where* a failing policy fails: it never reached the cube,
    grasped and dropped it, or placed it without stopping."""
    for key, value in info.items():
        if key != "success" and isinstance(value, bool | np.bool_):
            milestones[key] = milestones.get(key, False) or bool(value)


def evaluate_task(
    task: str,
    make_env: Callable[[], gym.Env],
    make_policy: Callable[[gym.Env], Policy],
    episodes: int,
    seed: int,
    video_dir: Path | None = None,
    video_episodes: int = 0,
    video_fps: int = 20,
    progress: bool = True,
    workers: int = 1,
    engine: str = "local",
    ray_address: str | None = None,
) -> tuple[list[EpisodeResult], TaskProtocol]:
    """Evaluate one task: ``episodes`` rollouts with seeds ``seed, seed+1, ...``, each up to the
    env's ``max_episode_steps``.

    ``workers > 1`` splits the episodes into contiguous blocks rolled out in that many processes
    (one torch thread each); ``make_env`` and ``make_policy`` must then pickle (module-level
    functions or ``functools.partial``s of them). Episode ``i`` gets seed ``seed + i`` either way,
    but an episode's numbers can still shift a little with ``workers``: a ManiSkill CPU scene
    carries physics solver state from one episode into the next despite the seeded reset
    (measured: the same seed's return differed by 4% after three earlier episodes).
    ``engine="ray"`` runs the same blocks as tasks of a Ray cluster (``ray_address``), so its
    episodes equal the local ``workers`` run's."""
    video = (video_dir, video_episodes, video_fps)
    work = partial(_evaluate_block, task, make_env, make_policy, seed, video, progress)
    parts = map_blocks(work, range(episodes), workers, engine, ray_address)
    results = [r for part, _ in parts for r in part]
    protocol = parts[0][1]
    protocol.episodes, protocol.seeds = episodes, [seed + i for i in range(episodes)]
    return results, protocol


def check_apart_from_held_out(first: int, count: int, held_out: EvalConfig, name: str, setting: str) -> None:
    """Refuse ``count`` seeds from ``first`` (``name``'s, chosen by ``setting``) that overlap the
    held-out evaluation's: selecting weights on the test episodes would report a success rate
    the student was chosen for."""
    test_first, test_count = int(held_out.seed), int(held_out.episodes)
    if first < test_first + test_count and test_first < first + count:
        raise UserError(
            f"{name} seeds {first}..{first + count - 1} overlap the held-out evaluation's "
            f"{test_first}..{test_first + test_count - 1}: choose another {setting}"
        )


def _evaluate_block(
    task: str,
    make_env: Callable[[], gym.Env],
    make_policy: Callable[[gym.Env], Policy],
    seed: int,
    video: tuple[Path | None, int, int],
    progress: bool,
    block: list[int],
    index: int,
) -> tuple[list[EpisodeResult], TaskProtocol]:
    """Episodes ``block`` of one task in this process (worker ``index``; the first draws the
    progress bar), and the task's protocol for them."""
    video_dir, video_episodes, video_fps = video
    env = make_env()
    try:
        policy = make_policy(env)
        limit = int(env.max_episode_steps)
        is_libero = TaskId.parse(task).backend == "libero"
        results: list[EpisodeResult] = []
        bar = tqdm(block, desc=task, disable=not (progress and index == 0), leave=False)
        for episode in bar:
            episode_seed = seed + episode
            options = {"init_state_id": episode % env.num_init_states} if is_libero else None
            frames = [] if video_dir is not None and episode < video_episodes else None
            stats, policy_s, env_s = run_episode(env, policy, episode_seed, limit, options, frames)
            results.append(
                EpisodeResult(
                    task=task,
                    episode=episode,
                    seed=episode_seed,
                    policy_ms_per_action=1000 * policy_s / stats["length"],
                    env_ms_per_step=1000 * env_s / stats["length"],
                    policy_stats=policy.episode_stats() if hasattr(policy, "episode_stats") else None,
                    **stats,
                )
            )
            if frames:
                save_video(frames, video_dir / f"{task.replace('/', '_')}_ep{episode:03d}.mp4", video_fps)
            bar.set_postfix(success=f"{np.mean([r.success_once for r in results]):.2f}")
        protocol = TaskProtocol(
            task=task,
            episodes=len(block),
            seeds=[seed + i for i in block],
            init_states=(
                f"suite's fixed initial states, episode i -> state i mod {env.num_init_states}"
                if is_libero
                else "sampled by the simulator from the episode seed"
            ),
            max_episode_steps=limit,
            terminate_on_success=is_libero,
            settle_steps=getattr(env, "settle_steps", 0),
            obs_mode=getattr(env, "obs_mode", "state"),
            policy_uses_privileged_state=policy.uses_privileged,
        )
        return results, protocol
    finally:
        env.close()


def summarize(results: list[EpisodeResult]) -> dict:
    """Success rates (with Wilson 95% CIs), return, length and latency over ``results``."""
    n = len(results)
    once = sum(r.success_once for r in results)
    at_end = sum(r.success_at_end for r in results)
    return {
        "episodes": n,
        "success_rate": once / n if n else 0.0,
        "ci95": list(wilson_interval(once, n)),
        "success_at_end": at_end / n if n else 0.0,
        "success_at_end_ci95": list(wilson_interval(at_end, n)),
        "mean_return": float(np.mean([r.episode_return for r in results])) if n else 0.0,
        "mean_length": float(np.mean([r.length for r in results])) if n else 0.0,
        "policy_ms_per_action": float(np.mean([r.policy_ms_per_action for r in results])) if n else 0.0,
        "env_ms_per_step": float(np.mean([r.env_ms_per_step for r in results])) if n else 0.0,
        **({"policy_stats": summed_policy_stats(results)} if any(r.policy_stats for r in results) else {}),
        **({"milestone_rates": milestone_rates(results)} if any(r.milestones for r in results) else {}),
        **({"grasp_force": force_summary([r.peak_grasp_force for r in results],
                                         [r.mean_grasp_force for r in results])}
           if any(r.peak_grasp_force is not None for r in results) else {}),
    }


def milestone_rates(results: list[EpisodeResult]) -> dict[str, float]:
    """For each task flag, the fraction of ``results`` in which it was ever true."""
    keys = sorted({k for r in results for k in (r.milestones or {})})
    return {k: sum(bool((r.milestones or {}).get(k)) for r in results) / len(results) for k in keys}


def summed_policy_stats(results: list[EpisodeResult]) -> dict:
    """The policies' per-episode counters, summed over episodes."""
    total: dict = {}
    for r in results:
        for key, value in (r.policy_stats or {}).items():
            total[key] = total.get(key, 0) + value
    return total


def aggregate(per_task: dict[str, tuple[list[EpisodeResult], TaskProtocol]], policy: str) -> dict:
    """The results document: overall numbers, the protocol, per-task entries and episodes."""
    everything = [r for results, _ in per_task.values() for r in results]
    overall = summarize(everything)
    tasks = {
        task: {**summarize(results), "protocol": asdict(protocol)}
        for task, (results, protocol) in per_task.items()
    }
    return {
        **overall,
        "policy": policy,
        "protocol": {
            "tasks": list(per_task),
            "episodes_per_task": {t: p.episodes for t, (_, p) in per_task.items()},
            "success": "success_rate = fraction of episodes that ever succeeded (success_once)",
            "ci": "95% Wilson score interval",
            "per_task": "see tasks.<name>.protocol",
        },
        "tasks": tasks,
        "episode_results": [asdict(r) for r in everything],
    }


def save_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, [np.asarray(f, dtype=np.uint8) for f in frames], fps=fps, macro_block_size=1)


def evaluate_policy(sim, settings, policy: Policy, task: str, name: str = "") -> dict:
    """Roll ``policy`` out on ``task`` over ``settings``' held-out seeds (an :class:`EvalConfig`
    or a node with its fields); the aggregated results. ``sim`` holds the simulator nodes
    (``maniskill``, ``libero``)."""
    # A policy that declares what it reads (an RL student) is shown exactly that.
    obs_mode = getattr(policy, "observation_mode", None) or settings.obs_mode
    kwargs = env_kwargs(sim, task, obs_mode, settings.max_episode_steps,
                        needs_privileged=getattr(policy, "uses_privileged", False),
                        image_size=getattr(policy.config, "image_size", None),
                        wrist_camera="wrist_rgb" in getattr(policy.config, "cameras", ()),
                        tactile=getattr(policy, "reads_tactile", False))
    results, protocol = evaluate_task(
        task, make_env=partial(make_env, task, **kwargs), make_policy=partial(_given_policy, policy),
        episodes=settings.episodes, seed=settings.seed, progress=settings.progress,
        workers=int(settings.workers),
    )
    return aggregate({task: (results, protocol)}, policy=name or type(policy).__name__)


def _given_policy(policy: Policy, env: gym.Env) -> Policy:
    """``make_policy`` for an already built policy (a module-level function, so it pickles)."""
    return policy


def milestone_metrics(results: dict) -> dict[str, float]:
    """Flat tracker keys for the task's sub-goal rates (e.g. ``eval/milestones/is_grasped``) and
    its grasp-force figures (``eval/grasp_force/peak_mean``, ...)."""
    return {**{f"eval/milestones/{k}": v for k, v in results.get("milestone_rates", {}).items()},
            **{f"eval/grasp_force/{k}": v for k, v in results.get("grasp_force", {}).items()}}
