"""``vla-kd train``: fit a policy on a dataset with the shared trainer, save it, evaluate it."""
from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla_kd.cli_support import hydra_command
from vla_kd.errors import UserError, unknown_name
from vla_kd.tracking import make_tracker
from vla_kd.trainer import Trainer, TrainerConfig, seed_initial_weights

CONFIG_NAME = "train"
METHODS = ("bc", "rpd", "ppo", "ceed", "dysl", "align")
log = logging.getLogger(__name__)


MODELS = ("chunked_bc", "token_vla", "diffusion_action_expert")


def privileged_aux_dim(m: DictConfig, dataset, cameras: list[str]) -> int:
    """Width of the auxiliary privileged-state target (0 when ``model.aux_privileged_weight``
    is 0 or absent); a clear error when the dataset cannot supply it."""
    if m.get("aux_privileged_weight", 0.0) <= 0:
        return 0
    if dataset.env_states is None or not cameras:
        raise UserError(
            "model.aux_privileged_weight > 0 needs a dataset with camera frames and "
            "observation.environment_state (the privileged vector that `vla-kd demos` records)"
        )
    return int(dataset.env_states.shape[1])


def dataset_cameras(dataset, names, label: str = "model.cameras") -> tuple[tuple[str, ...], int]:
    """(``names`` (observation keys, e.g. ``rgb``, ``wrist_rgb``) checked against the dataset's
    cameras ``observation.images.<name>``, their one shared image size); errors name ``label``."""
    names = tuple(str(n) for n in names)
    available = [k.removeprefix("observation.images.") for k in dataset.camera_keys]
    missing = [n for n in names if n not in available]
    if not names or missing:
        raise UserError(f"{label}={list(names)}: the dataset has cameras {available}"
                        + (" (record LIBERO's wrist camera with `vla-kd demos ... wrist_camera=true`)"
                           if "wrist_rgb" in missing else ""))
    sizes = {tuple(dataset.info["features"][f"observation.images.{n}"]["shape"][:2]) for n in names}
    if len(sizes) > 1:
        raise UserError(f"{label}={list(names)} have different sizes {sorted(sizes)}")
    return names, sizes.pop()[0]


def chosen_state_features(m: DictConfig, state_dim: int) -> tuple[int, ...] | None:
    """``model.state_features`` checked against the dataset's state width (None: all)."""
    chosen = m.get("state_features")
    if chosen is None:
        return None
    from vla_kd.nn.normalization import feature_mask

    chosen = tuple(int(i) for i in chosen)
    try:
        feature_mask(state_dim, chosen)  # the models' own check, reported against the dataset
    except ValueError:
        raise UserError(f"model.state_features={list(chosen)} must be distinct indices into the "
                        f"dataset's {state_dim}-wide observation.state") from None
    return chosen


def build_method(m: DictConfig, dataset):
    """The model described by the ``model`` node ``m``, sized and normalised from the dataset,
    and its BC method."""
    from vla_kd.methods.bc import ChunkedBC, TokenBC

    cameras = [k for k in dataset.camera_keys if k.endswith(".rgb")]
    image_size = dataset.info["features"][cameras[0]]["shape"][0] if cameras else 128
    state_stats = dataset.feature_stats("observation.state")
    aux_dim = privileged_aux_dim(m, dataset, cameras)
    aux_stats = dataset.feature_stats("observation.environment_state") if aux_dim else None
    features = chosen_state_features(m, dataset.states.shape[1])
    if m.type == "chunked_bc":
        from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy

        policy = ChunkedBCPolicy(ChunkedBCConfig(
            state_dim=dataset.states.shape[1], horizon=m.horizon, image_size=image_size,
            use_image=m.use_image and bool(cameras), hidden=m.hidden, image_pooling=m.image_pooling,
            aux_state_dim=aux_dim, state_features=features,
        ))
        policy.set_normalization(state_stats, dataset.feature_stats("action"), aux_stats)
        return ChunkedBC(policy, shift_pad=m.shift_pad, aux_weight=m.aux_privileged_weight)
    if m.type == "token_vla":
        from vla_kd.teachers.token_vla import TokenVLA, TokenVLAConfig

        if not cameras:
            raise UserError("token_vla needs a dataset with an rgb camera")
        vla_cameras, vla_image_size = dataset_cameras(dataset, m.get("cameras", ["rgb"]))
        policy = TokenVLA(TokenVLAConfig(
            state_dim=dataset.states.shape[1], horizon=m.horizon, cameras=vla_cameras,
            action_stride=m.action_stride,
            image_size=vla_image_size,
            vision=m.vision, patch_grid=m.patch_grid,
            hidden=m.hidden, layers=m.layers, heads=m.heads, intermediate=m.intermediate,
            kv_heads=m.kv_heads, rope_theta=m.rope_theta, rms_norm_eps=m.rms_norm_eps, trunk=m.trunk,
            aux_state_dim=aux_dim, state_features=features,
        ))
        if m.trunk == "smollm2":
            from vla_kd.teachers.smollm2 import init_trunk_from_smollm2

            log.info("trunk initialised from SmolLM2-135M: %s", init_trunk_from_smollm2(policy))
        policy.set_normalization(state_stats, dataset.actions, aux_stats)
        return TokenBC(policy, shift_pad=m.shift_pad, label_sigma=m.label_sigma,
                       state_noise=m.state_noise, token_corruption=m.token_corruption,
                       aux_weight=m.get("aux_privileged_weight", 0.0))
    if m.type == "diffusion_action_expert":
        from vla_kd.methods.bc import DiffusionBC
        from vla_kd.teachers.action_expert import ActionExpertConfig, DiffusionActionExpert

        expert_cameras, expert_image_size = dataset_cameras(dataset, m.get("cameras", ["rgb"]))
        policy = DiffusionActionExpert(ActionExpertConfig(
            state_dim=dataset.states.shape[1], horizon=m.horizon, cameras=expert_cameras,
            image_size=expert_image_size,
            features=m.features, hidden=m.hidden, train_timesteps=m.train_timesteps,
            inference_steps=m.inference_steps, image_pooling=m.image_pooling, aux_state_dim=aux_dim,
            prediction_type=m.prediction_type, state_features=features,
        ))
        policy.set_normalization(state_stats, dataset.feature_stats("action"), aux_stats)
        return DiffusionBC(policy, shift_pad=m.shift_pad, aux_weight=m.get("aux_privileged_weight", 0.0))
    raise unknown_name("model", m.type, MODELS)


def evaluate_policy(cfg: DictConfig, eval_cfg: DictConfig, policy, task: str, name: str = "") -> dict:
    """Roll ``policy`` out on ``task`` over ``eval_cfg``'s held-out seeds; the aggregated results.

    ``cfg`` holds the simulator nodes (``maniskill``, ``libero``)."""
    from vla_kd.envs import make_env
    from vla_kd.envs.from_config import env_kwargs
    from vla_kd.evaluator import aggregate, evaluate_task

    # A policy that declares what it reads (an RL student) is shown exactly that.
    obs_mode = getattr(policy, "observation_mode", None) or eval_cfg.obs_mode
    kwargs = env_kwargs(cfg, task, obs_mode, eval_cfg.max_episode_steps,
                        needs_privileged=getattr(policy, "uses_privileged", False),
                        image_size=getattr(policy.config, "image_size", None),
                        wrist_camera="wrist_rgb" in getattr(policy.config, "cameras", ()))
    results, protocol = evaluate_task(
        task, make_env=partial(make_env, task, **kwargs), make_policy=partial(_given_policy, policy),
        episodes=eval_cfg.episodes, seed=eval_cfg.seed, progress=eval_cfg.progress,
        workers=int(eval_cfg.get("workers", 1)),
    )
    return aggregate({task: (results, protocol)}, policy=name or type(policy).__name__)


def _given_policy(policy, env):
    """``make_policy`` for an already built policy (a module-level function, so it pickles)."""
    return policy


def milestone_metrics(results: dict) -> dict[str, float]:
    """Flat tracker keys for the task's sub-goal rates (e.g. ``eval/milestones/is_grasped``)."""
    return {f"eval/milestones/{k}": v for k, v in results.get("milestone_rates", {}).items()}


def make_evaluator(cfg: DictConfig, eval_cfg: DictConfig, policy):
    """A trainer callback evaluating ``policy`` on ``eval_cfg.env`` (held-out seeds), or None."""
    if not eval_cfg.env:
        return None
    task = str(eval_cfg.env)

    def evaluate(step: int) -> dict:
        summary = evaluate_policy(cfg, eval_cfg, policy, task)
        log.info("step %d: %s success %.1f%% over %d episodes", step, task,
                 100 * summary["success_rate"], summary["episodes"])
        return {"eval/success_rate": summary["success_rate"], "eval/ci95_low": summary["ci95"][0],
                "eval/ci95_high": summary["ci95"][1], "eval/episodes": summary["episodes"],
                **milestone_metrics(summary)}

    return evaluate


def train_model(
    cfg: DictConfig, model_cfg: DictConfig, trainer_cfg: DictConfig, dataset_path: str | Path,
    run_dir: Path, output: str | Path, eval_cfg: DictConfig | None = None, job_type: str = "train",
) -> tuple[dict, object]:
    """Train ``model_cfg`` on a dataset, save it to ``output``; returns (summary, policy).

    ``cfg`` is the whole composed config (tracked, and the source of simulator settings)."""
    from vla_kd.data.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset(dataset_path, action_horizon=model_cfg.horizon)
    seed_initial_weights(trainer_cfg.seed)
    method = build_method(model_cfg, dataset)
    settings = TrainerConfig(**OmegaConf.to_container(trainer_cfg, resolve=True))
    tracker = make_tracker(cfg.tracker, run_dir, OmegaConf.to_container(cfg, resolve=True), job_type=job_type)
    evaluate = make_evaluator(cfg, eval_cfg, method.model) if eval_cfg is not None else None
    started = time.perf_counter()
    try:
        trainer = Trainer(method, dataset, settings, run_dir, tracker, evaluate)
        metrics = trainer.fit()
        method.model.save_pretrained(output, extra={"dataset": str(dataset_path), "steps": trainer.step})
        summary = {
            "model": model_cfg.type, "policy": str(output), "steps": trainer.step,
            "samples": trainer.step * settings.batch_size, "dataset_frames": len(dataset),
            "wall_seconds": time.perf_counter() - started, **metrics,
        }
        tracker.summary(summary)
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary, method.model
    finally:
        tracker.finish()


def run(cfg: DictConfig, run_dir: Path) -> dict:
    if cfg.method not in METHODS:
        raise unknown_name("method", cfg.method, METHODS)
    if cfg.method in ("rpd", "ppo"):
        summary = run_rl(cfg, run_dir)
    elif cfg.method in ("ceed", "dysl", "align"):
        from vla_kd.commands.align import train_align
        from vla_kd.commands.ceed import train_ceed
        from vla_kd.commands.dysl import train_dysl

        if cfg.method == "ceed":
            summary, student = train_ceed(cfg, run_dir, cfg.teacher, cfg.dataset, cfg.output, cfg.trainer)
        elif cfg.method == "dysl":
            summary, student = train_dysl(cfg, run_dir, cfg.teacher, cfg.dataset, cfg.output, cfg.trainer)
        else:
            summary, student = train_align(cfg, run_dir, cfg.stage, cfg.teacher, cfg.expert, cfg.init,
                                           cfg.dataset, cfg.output, cfg.trainer)
        if cfg.eval.env:
            results = evaluate_policy(cfg, cfg.eval, student, str(cfg.eval.env), name=f"{cfg.method} student")
            summary.update({"eval/success_rate": results["success_rate"], "eval/ci95": results["ci95"]})
            if "policy_stats" in results:  # e.g. how often a DySL student skipped
                summary["eval/policy_stats"] = results["policy_stats"]
            summary.update(milestone_metrics(results))
            (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    else:
        if not cfg.dataset:
            raise UserError("missing required value: dataset (e.g. vla-kd train dataset=...)")
        summary, _ = train_model(cfg, cfg.model, cfg.trainer, cfg.dataset, run_dir, cfg.output, cfg.eval)
    print(json.dumps(summary, indent=2, default=float))
    return summary


def run_rl(cfg: DictConfig, run_dir: Path) -> dict:
    """method=rpd|ppo: train on ``cfg.env`` (with ``cfg.teacher`` for RPD), then evaluate on
    held-out seeds (``eval.env``, by default the training task)."""
    from vla_kd.commands.rpd import train_rl_student
    from vla_kd.envs import check_task

    if not cfg.env:
        raise UserError(f"method={cfg.method} trains on a simulator task: give env=maniskill/<Task>")
    task = str(check_task(cfg.env))
    summary, student = train_rl_student(cfg, task, cfg.teacher, run_dir, Path(cfg.output),
                                        use_teacher=cfg.method == "rpd")
    eval_task = str(cfg.eval.env or task)
    if cfg.eval.sample_actions:
        student.sample_with(int(cfg.eval.seed))
    results = evaluate_policy(cfg, cfg.eval, student, eval_task, name=f"{cfg.method} student")
    summary.update({"eval/success_rate": results["success_rate"], "eval/ci95": results["ci95"],
                    "eval/episodes": results["episodes"], "eval/mean_return": results["mean_return"],
                    "eval/task": eval_task, **milestone_metrics(results)})
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
