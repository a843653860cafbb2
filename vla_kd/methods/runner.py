"""One way every method runs: build the context, ``fit``, then the shared ending (save the
student, evaluate it on held-out seeds, write ``train_summary.json``, close the tracker).
``vla-kd train`` and the pipeline both come through here."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from vla_kd import distributed
from vla_kd.errors import UserError
from vla_kd.evaluator import EvalConfig, evaluate_policy, milestone_metrics
from vla_kd.methods import registry
from vla_kd.methods.distiller import EvaluationVariant, RunContext, TrainResult
from vla_kd.reporting import write_json_atomic
from vla_kd.tracking import NullTracker, make_tracker
from vla_kd.trainer import TrainerConfig

log = logging.getLogger(__name__)
SUMMARY_FILE = "train_summary.json"
#: the held-out evaluation's whole results document (protocol, per-episode results), beside it
EVAL_RESULTS_FILE = "eval_results.json"


def make_context(
    settings: DictConfig, method_cfg: DictConfig, trainer_cfg: DictConfig | None, run_dir: Path,
    output: Path, *, eval_cfg: DictConfig | None = None, job: str = "train", group: str | None = None,
    **inputs,
) -> RunContext:
    """A run's context from composed config nodes: ``method_cfg`` (the method's node),
    ``trainer_cfg`` (the shared trainer's, None for on-policy methods), ``inputs`` (teacher,
    expert, dataset, env, model); ``settings`` is tracked whole, under W&B ``group``."""
    config = OmegaConf.to_object(method_cfg) if OmegaConf.is_config(method_cfg) else method_cfg
    trainer = _as(TrainerConfig, trainer_cfg) if trainer_cfg is not None else TrainerConfig()
    evaluation = _as(EvalConfig, eval_cfg if eval_cfg is not None else settings.get("eval"))
    if trainer.distributed:
        start_data_parallel(config.name)
        run_dir, output = distributed.broadcast_from_main((Path(run_dir), Path(output)))  # rank 0's
    tracker = (
        make_tracker(settings.tracker, run_dir, tracked(settings), job_type=job, group=group)
        if distributed.is_main()
        else NullTracker()  # one run per job: rank 0's
    )
    return RunContext(method=config.name, config=config, trainer=trainer, settings=settings,
                      eval=evaluation, run_dir=Path(run_dir), output=Path(output), tracker=tracker,
                      job=job, **inputs)


def start_data_parallel(method: str) -> None:
    """``trainer.distributed=true``: join torchrun's process group, for a method that can split."""
    if not registry.get(method).data_parallel:
        able = [name for name in registry.names() if registry.get(name).data_parallel]
        raise UserError(
            f"trainer.distributed=true splits the shared trainer's batches; method={method} "
            f"trains otherwise (rollouts or RL). Data-parallel methods: {', '.join(able)}"
        )
    distributed.init_from_environment()


def tracked(settings: DictConfig) -> dict:
    """The composed config as the tracker records it: resolved, except for ``${hydra:...}``
    values when the run was composed outside a Hydra job (a library caller's)."""
    try:
        return OmegaConf.to_container(settings, resolve=True)
    except InterpolationResolutionError:
        return OmegaConf.to_container(settings, resolve=False)


def _as(cls: type, node):
    """``node`` (a config node of ``cls``'s schema, or a plain mapping) as a ``cls``."""
    if node is None:
        return cls()
    if isinstance(node, cls):
        return node
    if OmegaConf.is_config(node) and OmegaConf.get_type(node) is cls:
        return OmegaConf.to_object(node)
    return cls(**(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node))


def train(ctx: RunContext, evaluate: bool = True) -> tuple[dict, TrainResult]:
    """Fit ``ctx.method``, save its student to ``ctx.output`` and (``evaluate``) evaluate it on
    the held-out seeds; the run's summary (also in ``<run_dir>/train_summary.json``) and the
    method's result. The tracker is closed at the end, whatever happens."""
    distiller = registry.get(ctx.method)
    started = time.perf_counter()
    try:
        result = distiller.fit(ctx)
        if not distributed.is_main():  # rank 0 saves, evaluates and writes for all
            return {}, result
        student = result.student.eval()
        student.save_pretrained(ctx.output, extra=result.saved_with or None)
        summary = {"method": ctx.method, "policy": str(ctx.output), **result.summary}
        if distributed.world_size() > 1:
            summary["processes"] = distributed.world_size()
        summary.setdefault("samples", result.samples)
        summary.setdefault("wall_seconds", time.perf_counter() - started)
        task = ctx.eval.env or (ctx.env if "env" in distiller.inputs else None)
        if evaluate and task:
            summary.update(held_out_evaluation(ctx, result, str(task)))
            for variant in distiller.evaluations[1:] if ctx.eval.all_variants else ():
                summary.update(variant_evaluation(ctx, result, str(task), variant))
        ctx.tracker.summary(summary)
        write_json_atomic(summary, ctx.run_dir / SUMMARY_FILE)
        return summary, result
    finally:
        ctx.tracker.finish()


def held_out_evaluation(ctx: RunContext, result: TrainResult, task: str) -> dict:
    """The trained student on ``ctx.eval``'s held-out seeds of ``task``: summary keys, also
    logged to the tracker at the run's last step."""
    student = result.student
    if ctx.eval.sample_actions:
        if not hasattr(student, "sample_with"):
            raise UserError(f"eval.sample_actions=true needs an RL student, not a {student.policy_type}")
        student.sample_with(int(ctx.eval.seed))
    results = evaluate_policy(ctx.settings, ctx.eval, student, task, name=f"{ctx.method} student")
    write_json_atomic(results, ctx.run_dir / EVAL_RESULTS_FILE)
    log.info("%s: %s success %.1f%% over %d episodes", ctx.method, task, 100 * results["success_rate"],
             results["episodes"])
    metrics = {
        "eval/task": task,
        "eval/success_rate": results["success_rate"],
        "eval/ci95": results["ci95"],
        "eval/ci95_low": results["ci95"][0],
        "eval/ci95_high": results["ci95"][1],
        "eval/episodes": results["episodes"],
        "eval/mean_return": results["mean_return"],
        **milestone_metrics(results),
    }
    if results.get("policy_ms_per_action") is not None:
        metrics["eval/policy_ms_per_action"] = results["policy_ms_per_action"]
    if "policy_stats" in results:  # e.g. how often a DySL student skipped
        metrics["eval/policy_stats"] = results["policy_stats"]
    ctx.tracker.log({k: v for k, v in metrics.items() if isinstance(v, int | float)},
                    step=int(result.summary.get("steps", result.samples)))
    return metrics


def variant_evaluation(ctx: RunContext, result: TrainResult, task: str, variant: EvaluationVariant) -> dict:
    """The student evaluated as ``variant`` says (e.g. sampling its actions), on the same held-out
    seeds: ``eval<suffix>/...`` summary keys."""
    if variant.sample_actions:
        result.student.sample_with(int(ctx.eval.seed))
    results = evaluate_policy(ctx.settings, ctx.eval, result.student, task,
                              name=f"{ctx.method} student{variant.label}")
    keys = ("success_rate", "ci95", "episodes", "mean_return")
    return {f"eval{variant.suffix}/{k}": results[k] for k in keys}
