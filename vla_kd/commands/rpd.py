"""``vla-kd train method=rpd|ppo env=... teacher=...``: an RL student on a ManiSkill task,
pulled toward a teacher (RPD) or not (PPO), saved as a policy folder and evaluated."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla_kd.commands.rl_tracking import TrackingCallback, save_env_steps, saved_env_steps
from vla_kd.errors import UserError
from vla_kd.tracking import make_tracker

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoints/last_sb3.zip"


def teacher_keys(teacher) -> tuple[str, ...]:
    """The contract observation keys ``teacher`` reads."""
    keys = ["state"]
    if getattr(teacher, "uses_privileged", False):
        keys.append("privileged")
    config = getattr(teacher, "config", None)
    if getattr(config, "image_size", None) and getattr(config, "use_image", True):
        keys.insert(0, "rgb")
    return tuple(keys)


def load_teacher(spec: str | None, task: str, rl: DictConfig):
    """The teacher named by ``spec`` (``scripted`` or a saved policy folder) for ``task``, or None.

    ``rl.teacher_action_steps`` sets how many actions of each predicted chunk a chunked teacher
    executes before predicting again (None: the whole chunk, as it acts in evaluation). The
    labels follow: 1 labels every student state with the teacher's fresh first action, a
    function of that state alone; the whole chunk labels a state with the action the teacher's
    open-loop plan, made up to a chunk earlier, holds for that step."""
    if spec in (None, "", "none"):
        return None
    from vla_kd.envs import make_env
    from vla_kd.policies.registry import build_policy, check_policy_spec

    check_policy_spec(str(spec))
    if spec == "scripted":  # needs the task's state layout
        probe = make_env(
            task, obs_mode="state", include_privileged=True, max_episode_steps=rl.max_episode_steps
        )
        try:
            return build_policy("scripted", probe)
        finally:
            probe.close()
    steps = rl.get("teacher_action_steps")
    return build_policy(str(spec), env=None, action_steps=None if steps is None else int(steps))


def camera_period(teacher, student_keys: tuple[str, ...], action_chunk: int = 1) -> int:
    """How often the training envs must render: every step, unless only a chunked teacher
    looks at the camera, which it does once per executed chunk (episode steps 0, k, 2k, ...);
    for a student acting in ``action_chunk``-action chunks, once per student decision."""
    if teacher is None or "rgb" in student_keys or "rgb" not in teacher_keys(teacher):
        return 1
    if action_chunk > 1:
        return action_chunk
    return int(getattr(teacher, "actions_per_chunk", 1))


def make_training_env(
    cfg: DictConfig, task: str, keys: tuple[str, ...], image_size: int, image_every: int = 1,
    action_chunk: int = 1,
):
    """Vectorised training envs: CPU subprocess workers, or ManiSkill's GPU-batched sim;
    ``action_chunk > 1``: each env step executes that many actions (CPU workers only)."""
    from stable_baselines3.common.vec_env import VecMonitor

    from vla_kd.envs import check_task
    from vla_kd.envs.rl import BatchedVecEnv, make_rl_vec_env

    rl, sim = cfg.rl, cfg.maniskill
    if check_task(task).backend != "maniskill":
        raise UserError("RL students train on ManiSkill tasks (maniskill/<Task>)")
    kwargs = dict(
        obs_mode="rgb" if "rgb" in keys else "state",
        include_privileged="privileged" in keys,
        image_size=image_size,
        max_episode_steps=rl.max_episode_steps,
        reward_mode=rl.reward_mode,
        control_mode=sim.control_mode,
        sim_backend=sim.sim_backend,
        render_backend=sim.render_backend,
    )
    if sim.sim_backend == "cpu":
        venv = make_rl_vec_env(
            task, keys, int(rl.num_envs), seed=int(rl.seed), image_every=image_every,
            action_chunk=action_chunk, **kwargs,
        )
    elif action_chunk > 1:
        raise UserError("rl.action_chunk > 1 runs on the CPU sim only (maniskill=cpu)")
    else:
        from vla_kd.envs.maniskill_gpu import ManiSkillBatchedEnv

        name = task.split("/", 1)[1]
        venv = BatchedVecEnv(ManiSkillBatchedEnv(name, int(sim.num_envs), **kwargs), keys)
        venv.seed(int(rl.seed))
    return VecMonitor(venv)


def student_config(rl: DictConfig, venv):
    from vla_kd.policies.gaussian_mlp import GaussianStudentConfig

    shapes = {k: list(space.shape) for k, space in venv.observation_space.spaces.items()}
    return GaussianStudentConfig(
        observation=rl.student,
        observation_shapes=shapes,
        net_arch=list(rl.net_arch),
        activation=rl.activation,
        cnn_features=int(rl.cnn_features),
        log_std_init=float(rl.log_std_init),
        action_chunk=int(rl.get("action_chunk", 1)),
    )


def warm_start_env_steps(summary: dict) -> int:
    """Env steps of the teacher episodes a run's warm start cloned (0 without one): samples the
    student learnt from, beside RL's own ``env_steps``."""
    return int((summary.get("warm_start") or {}).get("env_steps", 0))


def weight_shapes(config) -> dict:
    """The student config's fields that fix its weights' shapes: the observation shapes of the
    keys it reads, not those only the teacher read in its run."""
    from vla_kd.policies.gaussian_mlp import student_keys

    reads = student_keys(config.observation)
    shapes = {k: v for k, v in config.observation_shapes.items() if k in reads}
    return {**vars(config), "observation_shapes": shapes}


def load_initial_weights(model, folder: str, config) -> None:
    """Start ``model`` from a saved student's actor and critic (``rl.init_policy``): the
    log-std stays ``rl.log_std_init``'s, since exploration is this run's choice. A student of
    another shape (observation, sizes, chunk) is an error, not a silent partial load."""
    from vla_kd.policies.gaussian_mlp import GaussianStudent
    from vla_kd.policies.registry import build_policy

    student = build_policy(str(folder), env=None)
    if not isinstance(student, GaussianStudent):
        raise UserError(f"rl.init_policy={folder} is not an RL student (gaussian_student) folder")
    ours, theirs = weight_shapes(config), weight_shapes(student.config)
    differing = [k for k in ours if k != "log_std_init" and ours[k] != theirs.get(k)]
    if differing:
        raise UserError(
            f"rl.init_policy={folder} has another shape than this run's student: "
            + ", ".join(f"{k} {theirs.get(k)} vs {ours[k]}" for k in differing)
        )
    weights = {k: v for k, v in student.actor_critic.state_dict().items() if k != "log_std"}
    model.policy.load_state_dict(weights, strict=False)


def warm_start(model, venv, teacher, instruction: str, keys: tuple[str, ...], rl: DictConfig,
               chunk: int) -> dict:
    """Clone ``teacher`` into ``model``'s actor before RL (``rl.warm_start``); what it cost and
    how well the actor fits, for the summary."""
    from vla_kd.methods.warm_start import collect_teacher_decisions, fit_actor

    options = rl.warm_start
    decisions = collect_teacher_decisions(
        venv, teacher, instruction, int(options.episodes), keys, chunk, bool(rl.progress)
    )
    fit_started = time.perf_counter()
    fit = fit_actor(
        model.policy, decisions, int(options.fit_steps), int(options.batch_size),
        float(options.learning_rate), seed=int(rl.seed), progress=bool(rl.progress),
    )
    result = {
        "teacher_episodes": decisions.episodes,
        "teacher_success_rate": decisions.successes / max(decisions.episodes, 1),
        "env_steps": decisions.env_steps,
        "decisions": len(decisions.labels),
        "rollout_seconds": decisions.seconds,
        "fit_seconds": time.perf_counter() - fit_started,
        **fit,
    }
    log.info("warm start: %s", result)
    return result


def train_rl_student(
    cfg: DictConfig,
    task: str,
    teacher_spec: str | None,
    run_dir: Path,
    output: Path,
    use_teacher: bool = True,
    job_type: str = "train",
) -> tuple[dict, object]:
    """Train an RL student with ``cfg.rl`` (RPD if ``use_teacher`` and a teacher is given, else
    PPO), save it to ``output``; returns (summary, student)."""
    import torch
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    from vla_kd.commands.rl_validation import check_validation_seeds, make_validation, validation_summary
    from vla_kd.envs.maniskill import instruction_for
    from vla_kd.methods.rpd import RPD
    from vla_kd.policies.gaussian_mlp import GaussianStudent, sb3_policy_kwargs, student_keys

    rl = cfg.rl
    if int(rl.validation.every):  # before anything slow is built
        check_validation_seeds(rl.validation, cfg.eval)
    torch.set_num_threads(1)  # the env workers take the other cores
    warm_episodes = int(rl.warm_start.episodes)
    teacher = load_teacher(teacher_spec, task, rl) if use_teacher or warm_episodes else None
    if use_teacher and teacher is None:
        raise UserError(
            "method=rpd needs teacher=<saved policy folder|scripted> (method=ppo trains without one)"
        )
    if warm_episodes and teacher is None:
        raise UserError(
            "rl.warm_start.episodes > 0 clones a teacher: give teacher=<saved policy folder|scripted>"
        )
    keys = tuple(dict.fromkeys(student_keys(rl.student) + (teacher_keys(teacher) if teacher else ())))
    image_size = getattr(getattr(teacher, "config", None), "image_size", None) or int(
        cfg.maniskill.image_size
    )
    # The GPU sim renders batched on the GPU: every frame is cheap there.
    chunk = int(rl.get("action_chunk", 1))
    image_every = (
        camera_period(teacher, student_keys(rl.student), chunk) if cfg.maniskill.sim_backend == "cpu" else 1
    )
    venv = make_training_env(cfg, task, keys, image_size, image_every, chunk)
    tracker = make_tracker(cfg.tracker, run_dir, OmegaConf.to_container(cfg, resolve=True), job_type=job_type)
    checkpoint = run_dir / CHECKPOINT
    started = time.perf_counter()
    try:
        config = student_config(rl, venv)
        ppo = OmegaConf.to_container(rl.ppo, resolve=True)
        algo = dict(
            teacher=teacher if use_teacher else None,
            instruction=instruction_for(task.split("/", 1)[1]),
            teacher_loss=rl.teacher_loss,
            teacher_weight=float(rl.teacher_weight) if use_teacher else 0.0,
            teacher_schedule=rl.teacher_schedule,
            anneal_steps=rl.anneal_steps,
            teacher_std=float(rl.teacher_std),
            action_chunk=chunk,
            critic_warmup_steps=int(rl.critic_warmup_steps),
        )
        resumed = bool(rl.resume) and checkpoint.is_file()
        if resumed:
            model = RPD.load(checkpoint, env=venv, device="cpu", **algo)
            log.info("resumed from %s at %d env steps", checkpoint, model.num_timesteps)
        else:
            model = RPD(
                MultiInputActorCriticPolicy,
                venv,
                policy_kwargs=sb3_policy_kwargs(config),
                seed=int(rl.seed),
                device="cpu",
                verbose=0,
                **algo,
                **ppo,
            )

        def save() -> None:
            staged = checkpoint.with_suffix(".tmp.zip")
            staged.parent.mkdir(parents=True, exist_ok=True)
            model.save(staged)
            staged.replace(checkpoint)
            save_env_steps(checkpoint, callback.env_steps, model.num_timesteps)

        init_policy = rl.get("init_policy")
        if init_policy and not resumed:
            load_initial_weights(model, str(init_policy), config)
        warm = None
        if warm_episodes and not resumed:
            warm = warm_start(model, venv, teacher, algo["instruction"], student_keys(rl.student), rl, chunk)
            tracker.log({f"warm_start/{k}": v for k, v in warm.items()}, step=0)
        callback = TrackingCallback(
            tracker, int(rl.total_timesteps), save, int(rl.checkpoint_every), bool(rl.progress), chunk,
            start_env_steps=saved_env_steps(checkpoint, model.num_timesteps) if resumed else None,
        )
        validation = make_validation(
            cfg, task, config, lambda: callback.env_steps, tracker, checkpoint.parent, resumed
        )
        # SB3 counts a continued run's budget on top of the steps already done, and counts
        # decisions: a chunk-acting student's budget is total / chunk of them.
        remaining = -(-int(rl.total_timesteps) // chunk) - (model.num_timesteps if resumed else 0)
        callbacks = [callback] + ([validation] if validation else [])
        model.learn(max(remaining, 0), callback=callbacks, reset_num_timesteps=not resumed)
        save()  # the last weights, for resume; the student saved below may be the best-validated
        student = GaussianStudent(config)
        student.actor_critic.load_state_dict(
            validation.best_state if validation and rl.validation.keep_best else model.policy.state_dict()
        )
        student.eval()
        student.save_pretrained(
            output,
            extra={
                "task": task,
                "teacher": str(teacher_spec) if teacher else None,
                "warm_start": warm,
                "init_policy": str(init_policy) if init_policy else None,
                "env_steps": callback.env_steps,
            },
        )
        summary = {
            "model": "gaussian_student",
            "method": "rpd" if use_teacher else "ppo",
            "policy": str(output),
            "env_steps": callback.env_steps,
            "warm_start": warm,
            "init_policy": str(init_policy) if init_policy else None,
            "wall_seconds": time.perf_counter() - started,
            "final_train_success_rate": callback.curve[-1].get("train/success_rate")
            if callback.curve
            else None,
            "validation": validation_summary(validation, rl.validation),
        }
        (run_dir / "curve.json").write_text(json.dumps(callback.curve, indent=1, default=float))
        tracker.summary(summary)
        return summary, student
    finally:
        venv.close()
        tracker.finish()
