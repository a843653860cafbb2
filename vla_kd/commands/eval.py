"""``vla-kd eval``: evaluate a policy on a suite or one task."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from vla_kd.cli_support import hydra_command
from vla_kd.config_checks import at_least, one_of
from vla_kd.envs import check_task, make_env
from vla_kd.envs.from_config import env_kwargs
from vla_kd.envs.suites import Suite, suite_from_config
from vla_kd.evaluator import aggregate, evaluate_task
from vla_kd.parallel import ENGINES
from vla_kd.policies.loading import (
    build_policy,
    check_policy_spec,
    policy_cameras,
    policy_image_size,
    policy_observation,
    policy_reads_tactile,
)
from vla_kd.reporting import markdown_table, plot_success, table_rows, write_json_atomic
from vla_kd.tracking import make_tracker

CONFIG_NAME = "eval"
log = logging.getLogger(__name__)


@dataclass
class VideoSettings:
    enabled: bool = False
    episodes_per_task: int = 1
    fps: int = 20

    def __post_init__(self) -> None:
        at_least(self, 0, "episodes_per_task")
        at_least(self, 1, "fps")


@dataclass
class EvalCommandConfig:
    """``configs/eval.yaml``: roll a policy out on a suite (or one task) and report success with
    95% Wilson intervals."""

    suite: Any = MISSING
    tracker: Any = MISSING
    maniskill: Any = MISSING
    libero: Any = MISSING
    env: str | None = None  # one task instead of a suite: maniskill/PickCube-v1 or libero/libero_spatial/0
    policy: str = "scripted"  # random | scripted | path to a saved policy folder
    episodes_per_task: int = 10
    seed: int = 0  # episode i uses seed + i (ManiSkill) / fixed init state i (LIBERO)
    max_episode_steps: int | None = None  # overrides the suite's protocol value when set
    obs_mode: str = "state"  # state | rgb (what the policy sees; scripted experts also get privileged state)
    output_json: str = "${hydra:runtime.output_dir}/results.json"
    progress: bool = True
    #: chunked policies: actions executed per predicted chunk (null: all of it)
    action_steps: int | None = None
    sample_actions: bool = False  # RL students: act with seeded samples of their Gaussian, not its mean
    workers: int = 1  # processes sharing the episodes (ManiSkill/LIBERO sim is single-threaded)
    #: local: worker processes here; ray: the same episode blocks as tasks of a Ray cluster
    engine: str = "local"
    #: host:port of a running Ray cluster (ray start --head); null: RAY_ADDRESS, else a local one
    ray_address: str | None = None
    video: VideoSettings = field(default_factory=VideoSettings)

    def __post_init__(self) -> None:
        at_least(self, 1, "episodes_per_task", "max_episode_steps", "action_steps", "workers")
        at_least(self, 0, "seed")
        one_of(self, "obs_mode", ("state", "rgb"))
        one_of(self, "engine", ENGINES)


ConfigStore.instance().store(name=f"{CONFIG_NAME}_schema", node=EvalCommandConfig)


def resolve_tasks(cfg: DictConfig) -> Suite:
    if cfg.env:
        return Suite(name=str(cfg.env), tasks=[str(check_task(cfg.env))], max_episode_steps=None)
    suite = suite_from_config(cfg.suite)
    for task in suite.tasks:
        check_task(task)
    return suite


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Evaluate and write results.json, results.md, success.png (+ tracker files)."""
    check_policy_spec(str(cfg.policy))
    suite = resolve_tasks(cfg)
    required_mode, needs_privileged = policy_observation(str(cfg.policy))
    obs_mode = required_mode or cfg.obs_mode
    want_video = bool(cfg.video.enabled)
    tracker = make_tracker(
        cfg.tracker, run_dir, OmegaConf.to_container(cfg, resolve=True), job_type="eval"
    )
    image_size = policy_image_size(str(cfg.policy))  # a trained policy sees what it was trained on
    wrist_camera = "wrist_rgb" in policy_cameras(str(cfg.policy))
    tactile = policy_reads_tactile(str(cfg.policy))
    per_task = {}
    try:
        for task in suite.tasks:
            max_steps = cfg.max_episode_steps or suite.max_episode_steps
            kwargs = env_kwargs(cfg, task, obs_mode, max_steps, needs_privileged, want_video,
                                image_size=image_size, wrist_camera=wrist_camera, tactile=tactile)
            results, protocol = evaluate_task(
                task,
                make_env=partial(make_env, task, **kwargs),  # partials pickle for the workers
                make_policy=partial(build_policy, str(cfg.policy), seed=int(cfg.seed),
                                    action_steps=cfg.action_steps,
                                    sample_actions=bool(cfg.sample_actions)),
                episodes=cfg.episodes_per_task,
                seed=cfg.seed,
                video_dir=run_dir / "videos" if want_video else None,
                video_episodes=cfg.video.episodes_per_task,
                video_fps=cfg.video.fps,
                progress=cfg.progress,
                workers=int(cfg.workers),
                engine=str(cfg.engine),
                ray_address=cfg.ray_address,
            )
            per_task[task] = (results, protocol)
            task_rate = sum(r.success_once for r in results) / len(results)
            tracker.log({f"eval/{task}/success_rate": task_rate})
            log.info("%s: success %.1f%% over %d episodes", task, 100 * task_rate, len(results))
        summary = aggregate(per_task, policy=str(cfg.policy))
        summary["protocol"]["suite"] = suite.name
        output_json = Path(cfg.output_json)
        write_json_atomic(summary, output_json)
        table = markdown_table(summary)
        output_json.with_suffix(".md").write_text(table)
        plot = plot_success(summary, output_json.with_name("success.png"))
        tracker.log_table("eval/results", table_rows(summary))
        tracker.log_image("eval/success", plot)
        tracker.summary({k: summary[k] for k in ("success_rate", "ci95", "episodes", "success_at_end")})
        print(table)
        print(f"results: {output_json}")
        return summary
    finally:
        tracker.finish()


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
