"""``method=rpd|ppo``: an RL student on a ManiSkill task, pulled toward a teacher (RPD) or not
(PPO), from a behaviour clone of the teacher (``warm_start``) or a saved student (``init_policy``),
validated on its own seeds with the best weights kept."""

from __future__ import annotations

import dataclasses
import logging
import time

import torch
from stable_baselines3.common.policies import MultiInputActorCriticPolicy

from vla_kd.envs import check_task
from vla_kd.envs.maniskill import instruction_for
from vla_kd.errors import UserError
from vla_kd.methods.distiller import Distiller, EvaluationVariant, RunContext, TrainResult
from vla_kd.methods.registry import register
from vla_kd.methods.rpd.algorithm import RPD
from vla_kd.methods.rpd.config import RLConfig
from vla_kd.methods.rpd.tracking import TrackingCallback, save_env_steps, saved_env_steps
from vla_kd.methods.rpd.training_envs import camera_period, load_teacher, make_training_env, teacher_keys
from vla_kd.methods.rpd.validation import check_validation_seeds, make_validation, validation_summary
from vla_kd.methods.rpd.warm_start import collect_teacher_decisions, fit_actor
from vla_kd.policies.gaussian_mlp import GaussianStudent, GaussianStudentConfig, sb3_policy_kwargs
from vla_kd.policies.loading import build_policy
from vla_kd.policies.student_observations import student_keys
from vla_kd.reporting import write_json_atomic

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoints/last_sb3.zip"
#: an RL student is evaluated acting with its Gaussian's mean, and sampling from it: early in
#: training the mean alone can act very differently from the policy whose rollouts trained it
SAMPLED_TOO = (EvaluationVariant(), EvaluationVariant("_sampled", " (sampled actions)", True))


def student_config(rl: RLConfig, venv) -> GaussianStudentConfig:
    """The student network's config: ``rl``'s sizes, the training envs' observation shapes."""
    shapes = {k: list(space.shape) for k, space in venv.observation_space.spaces.items()}
    return GaussianStudentConfig(
        observation=rl.student,
        observation_shapes=shapes,
        net_arch=list(rl.net_arch),
        activation=rl.activation,
        cnn_features=int(rl.cnn_features),
        log_std_init=float(rl.log_std_init),
        action_chunk=int(rl.action_chunk),
    )


def warm_start_env_steps(summary: dict) -> int:
    """Env steps of the teacher episodes a run's warm start cloned (0 without one): samples the
    student learnt from, beside RL's own ``env_steps``."""
    return int((summary.get("warm_start") or {}).get("env_steps", 0))


def weight_shapes(config) -> dict:
    """The student config's fields that fix its weights' shapes: the observation shapes of the
    keys it reads, not those only the teacher read in its run."""
    reads = student_keys(config.observation)
    shapes = {k: v for k, v in config.observation_shapes.items() if k in reads}
    return {**vars(config), "observation_shapes": shapes}


def load_initial_weights(model, folder: str, config) -> None:
    """Start ``model`` from a saved student's actor and critic (``init_policy``): the
    log-std stays ``log_std_init``'s, since exploration is this run's choice. A student of
    another shape (observation, sizes, chunk) is an error, not a silent partial load."""
    student = build_policy(str(folder), env=None)
    if not isinstance(student, GaussianStudent):
        raise UserError(f"method.init_policy={folder} is not an RL student (gaussian_student) folder")
    ours, theirs = weight_shapes(config), weight_shapes(student.config)
    differing = [k for k in ours if k != "log_std_init" and ours[k] != theirs.get(k)]
    if differing:
        raise UserError(
            f"method.init_policy={folder} has another shape than this run's student: "
            + ", ".join(f"{k} {theirs.get(k)} vs {ours[k]}" for k in differing)
        )
    weights = {k: v for k, v in student.actor_critic.state_dict().items() if k != "log_std"}
    model.policy.load_state_dict(weights, strict=False)


def warm_start(model, venv, teacher, instruction: str, keys: tuple[str, ...], rl: RLConfig,
               chunk: int) -> dict:
    """Clone ``teacher`` into ``model``'s actor before RL (``warm_start``); what it cost and
    how well the actor fits, for the summary."""
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


def train_rl_student(ctx: RunContext, use_teacher: bool) -> TrainResult:
    """Train an RL student on ``ctx.env`` with ``ctx.config`` (RPD if ``use_teacher``, else
    PPO); its best-validated (or last) weights as the result."""
    rl: RLConfig = ctx.config
    if not ctx.env:
        raise UserError(f"method={ctx.method} trains on a simulator task: give env=maniskill/<Task>")
    task = str(check_task(ctx.env))
    if rl.validation.every:  # before anything slow is built
        check_validation_seeds(rl.validation, ctx.eval)
    torch.set_num_threads(1)  # the env workers take the other cores
    warm_episodes = rl.warm_start.episodes
    teacher = load_teacher(ctx.teacher, task, rl) if use_teacher or warm_episodes else None
    if use_teacher and teacher is None:
        raise UserError(
            "method=rpd needs teacher=<saved policy folder|scripted> (method=ppo trains without one)"
        )
    if warm_episodes and teacher is None:
        raise UserError(
            "method.warm_start.episodes > 0 clones a teacher: give teacher=<saved policy folder|scripted>"
        )
    sim = ctx.settings.maniskill
    keys = tuple(dict.fromkeys(student_keys(rl.student) + (teacher_keys(teacher) if teacher else ())))
    image_size = getattr(getattr(teacher, "config", None), "image_size", None) or int(sim.image_size)
    # The GPU sim renders batched on the GPU: every frame is cheap there.
    chunk = rl.action_chunk
    image_every = camera_period(teacher, student_keys(rl.student), chunk) if sim.sim_backend == "cpu" else 1
    venv = make_training_env(rl, sim, task, keys, image_size, image_every, chunk)
    tracker, checkpoint = ctx.tracker, ctx.run_dir / CHECKPOINT
    try:
        config = student_config(rl, venv)
        algo = dict(
            teacher=teacher if use_teacher else None,
            instruction=instruction_for(task.split("/", 1)[1]),
            teacher_loss=rl.teacher_loss,
            teacher_weight=float(rl.teacher_weight) if use_teacher else 0.0,
            teacher_schedule=rl.teacher_schedule,
            anneal_steps=rl.anneal_steps,
            teacher_std=float(rl.teacher_std),
            action_chunk=chunk,
            critic_warmup_steps=rl.critic_warmup_steps,
        )
        resumed = rl.resume and checkpoint.is_file()
        if resumed:
            model = RPD.load(checkpoint, env=venv, device="cpu", **algo)
            log.info("resumed from %s at %d env steps", checkpoint, model.num_timesteps)
        else:
            model = RPD(MultiInputActorCriticPolicy, venv, policy_kwargs=sb3_policy_kwargs(config),
                        seed=rl.seed, device="cpu", verbose=0, **algo, **dataclasses.asdict(rl.ppo))

        def save() -> None:
            staged = checkpoint.with_suffix(".tmp.zip")
            staged.parent.mkdir(parents=True, exist_ok=True)
            model.save(staged)
            staged.replace(checkpoint)
            save_env_steps(checkpoint, callback.env_steps, model.num_timesteps)

        if rl.init_policy and not resumed:
            load_initial_weights(model, str(rl.init_policy), config)
        warm = None
        if warm_episodes and not resumed:
            warm = warm_start(model, venv, teacher, algo["instruction"], student_keys(rl.student), rl, chunk)
            tracker.log({f"warm_start/{k}": v for k, v in warm.items()}, step=0)
        callback = TrackingCallback(
            tracker, rl.total_timesteps, save, rl.checkpoint_every, rl.progress, chunk,
            start_env_steps=saved_env_steps(checkpoint, model.num_timesteps) if resumed else None,
        )
        validation = make_validation(ctx.settings, ctx.eval, rl, task, config, lambda: callback.env_steps,
                                     tracker, checkpoint.parent, resumed)
        # SB3 counts a continued run's budget on top of the steps already done, and counts
        # decisions: a chunk-acting student's budget is total / chunk of them.
        remaining = -(-rl.total_timesteps // chunk) - (model.num_timesteps if resumed else 0)
        callbacks = [callback] + ([validation] if validation else [])
        model.learn(max(remaining, 0), callback=callbacks, reset_num_timesteps=not resumed)
        save()  # the last weights, for resume; the student kept may be the best-validated
        student = GaussianStudent(config)
        student.actor_critic.load_state_dict(
            validation.best_state if validation and rl.validation.keep_best else model.policy.state_dict()
        )
        init_policy = str(rl.init_policy) if rl.init_policy else None
        saved_with = {"task": task, "teacher": str(ctx.teacher) if teacher else None, "warm_start": warm,
                      "init_policy": init_policy, "env_steps": callback.env_steps}
        summary = {
            "model": "gaussian_student",
            "env_steps": callback.env_steps,
            "warm_start": warm,
            "init_policy": init_policy,
            "final_train_success_rate": (callback.curve[-1].get("train/success_rate")
                                         if callback.curve else None),
            "validation": validation_summary(validation, rl.validation),
        }
        write_json_atomic(callback.curve, ctx.run_dir / "curve.json")
        # the teacher's warm-start episodes are samples the student learnt from too
        samples = callback.env_steps + warm_start_env_steps(summary)
        return TrainResult(student, summary, samples, saved_with)
    finally:
        venv.close()


@register
class RPDistiller(Distiller):
    """``method=rpd``: PPO whose actor is also pulled toward the teacher on its own states. The
    pipeline evaluates its student twice: acting with the Gaussian's mean, and sampling from it."""

    name = "rpd"
    config_class = RLConfig
    inputs = ("env", "teacher")
    evaluations = SAMPLED_TOO

    def fit(self, ctx: RunContext) -> TrainResult:
        return train_rl_student(ctx, use_teacher=True)


@register
class PPODistiller(Distiller):
    """``method=ppo``: the same code with no teacher term (a teacher, if given, only serves a
    warm start)."""

    name = "ppo"
    config_class = RLConfig
    inputs = ("env",)
    evaluations = SAMPLED_TOO

    def fit(self, ctx: RunContext) -> TrainResult:
        return train_rl_student(ctx, use_teacher=False)
