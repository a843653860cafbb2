"""``vla-kd train method=tactile``: the teacher (reward-weighted flow matching on demonstrations
recorded with touch), the HapticVLA student (tactile token, then actions) or its baseline (the
same VLA without the token)."""
from __future__ import annotations

from vla_kd.errors import UserError
from vla_kd.methods.bc import periodic_evaluation
from vla_kd.methods.distiller import Distiller, RunContext, TrainResult
from vla_kd.methods.registry import register
from vla_kd.methods.tactile.config import TactileConfig
from vla_kd.methods.tactile.objectives import (
    RewardWeightedFlow,
    TactileTokenAlignment,
    TactileTokenBC,
    WeightedTokenBC,
)
from vla_kd.methods.tactile.rewards import FrameWeights, reward_weights, tactile_rewards, weight_summary
from vla_kd.policies.factory import build_model
from vla_kd.policies.registry import TACTILE_POLICY_TYPES
from vla_kd.trainer import Trainer, run_stages, seed_initial_weights

#: the student architectures with a tactile token
STUDENT_MODELS = ("token_vla", "hf_vla")


@register
class TactileDistillation(Distiller):
    name = "tactile"
    config_class = TactileConfig
    inputs = ("teacher", "dataset", "model")

    def fit(self, ctx: RunContext) -> TrainResult:
        if ctx.config.stage == "teacher":
            return fit_teacher(ctx)
        return fit_student(ctx)


def tactile_dataset(ctx: RunContext, horizon: int):
    dataset = ctx.load_dataset(horizon, "demonstrations recorded with `vla-kd demos ... tactile=true`")
    if dataset.tactile is None:
        raise UserError(f"method=tactile reads touch: '{ctx.dataset}' has no observation.tactile "
                        "(record it with `vla-kd demos ... tactile=true`)")
    return dataset


def demonstration_weights(ctx: RunContext, dataset, horizon: int) -> tuple[FrameWeights, dict]:
    """The tactile reward weight of every demonstration frame, and what the summary says of them."""
    rewards = ctx.config.rewards
    reward, terms = tactile_rewards(dataset.tactile, dataset.episode_index, horizon, rewards)
    weights = reward_weights(reward, rewards)
    summary = weight_summary(reward, terms, weights)
    ctx.tracker.log({f"tactile/{k}": v for k, v in summary.items()}, step=0)
    return FrameWeights(weights, dataset.episode_index, dataset.frame_index), summary


def fit_teacher(ctx: RunContext) -> TrainResult:
    model = ctx.model
    if model.type not in TACTILE_POLICY_TYPES:
        raise UserError("method=tactile method.stage=teacher trains model=tactile_flow_expert, "
                        f"not {model.type}")
    dataset = tactile_dataset(ctx, model.horizon)
    weights, weighting = demonstration_weights(ctx, dataset, model.horizon)
    seed_initial_weights(ctx.trainer.seed)
    policy = build_model(model, dataset)
    method = RewardWeightedFlow(policy, weights, shift_pad=model.shift_pad,
                                aux_weight=model.aux_privileged_weight)
    evaluate = periodic_evaluation(ctx, policy)
    trainer = Trainer(method, dataset, ctx.trainer, ctx.run_dir, ctx.tracker, evaluate)
    metrics = trainer.fit()
    summary = {"stage": "teacher", "model": model.type, "steps": trainer.step,
               "samples": trainer.samples, "dataset_frames": len(dataset), "reward_weighting": weighting,
               **metrics}
    return TrainResult(policy, summary, trainer.samples, {"dataset": str(ctx.dataset), "stage": "teacher"})


def fit_student(ctx: RunContext) -> TrainResult:
    model, cfg = ctx.model, ctx.config
    if model.type not in STUDENT_MODELS:
        raise UserError(f"method=tactile's student is one of {list(STUDENT_MODELS)} (model=...), "
                        f"not {model.type}")
    token_bc = {"shift_pad": model.shift_pad, "label_sigma": model.label_sigma,
                "state_noise": model.state_noise, "token_corruption": model.token_corruption,
                "aux_weight": model.aux_privileged_weight}
    dataset = tactile_dataset(ctx, model.horizon)
    weights, weighting = None, {}
    if cfg.weighted_actions:
        weights, weighting = demonstration_weights(ctx, dataset, model.horizon)
    seed_initial_weights(ctx.trainer.seed)
    if cfg.stage == "baseline":
        policy = build_model(model, dataset)
        stages = [("actions", lambda: WeightedTokenBC(policy, weights, **token_bc),
                   cfg.stage1_steps + ctx.trainer.steps, ctx.trainer.lr)]
    else:
        if not ctx.teacher:
            raise UserError("method=tactile method.stage=student needs teacher=<a tactile_flow_expert "
                            "folder>")
        teacher = ctx.load_teacher(TACTILE_POLICY_TYPES)
        policy = build_model(model, dataset, tactile_token_dim=teacher.config.tactile_token_dim)
        stages = [
            ("token", lambda: TactileTokenAlignment(policy, teacher, model.shift_pad), cfg.stage1_steps,
             cfg.stage1_lr),
            ("actions", lambda: TactileTokenBC(policy, teacher, cfg.token_weight, weights, **token_bc),
             ctx.trainer.steps, ctx.trainer.lr),
        ]
    result = run_stages(stages, dataset, ctx.trainer, ctx.run_dir, ctx.tracker)
    summary = {"stage": cfg.stage, "model": model.type, "steps": result.steps,
               "samples": result.samples, "dataset_frames": len(dataset), "reward_weighting": weighting,
               "stage_seconds": result.wall_seconds, **result.metrics}
    return TrainResult(policy, summary, result.samples,
                       {"dataset": str(ctx.dataset), "stage": cfg.stage, "teacher": ctx.teacher})
