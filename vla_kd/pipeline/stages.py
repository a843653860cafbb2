"""The pipeline's stages: demonstrations, the two models trained on them, each student through
the method registry, and each policy's held-out evaluation. Every stage goes through
:class:`~vla_kd.pipeline.state.PipelineState`, so a resumed run replays what finished."""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from vla_kd.data.demos import generate_maniskill_demos
from vla_kd.evaluator import evaluate_policy
from vla_kd.methods import registry, runner
from vla_kd.methods.bc import BCConfig
from vla_kd.pipeline.state import PipelineState
from vla_kd.policies.loading import build_policy
from vla_kd.policies.vlm_maker import make_vlm
from vla_kd.reporting import write_json_atomic

log = logging.getLogger(__name__)
CONFIG_MODULE = "vla_kd.configs"


def record_demos(cfg: DictConfig, task_name: str, run_dir: Path) -> dict:
    """The planner's demonstrations of ``task_name`` in ``<run_dir>/dataset``; their report."""
    return asdict(generate_maniskill_demos(
        task_name, int(cfg.demos.n), run_dir / "dataset", image_size=int(cfg.demos.image_size),
        overwrite=True, progress=bool(cfg.eval.progress), workers=int(cfg.demos.workers),
    ))


def make_teacher_vlm(cfg: DictConfig, run_dir: Path) -> str:
    """``teacher=hf_vla`` without a checkpoint: the small VLM ``cfg.vlm`` describes, built into
    ``<run_dir>/vlm`` for the teacher to be fine-tuned from; its folder."""
    return str(make_vlm(run_dir / "vlm", OmegaConf.to_object(cfg.vlm)))


def train_base_model(cfg: DictConfig, name: str, model_cfg: DictConfig, trainer_cfg: DictConfig,
                     run_dir: Path, group: str) -> dict:
    """Train the teacher or the action expert (``name``) on the run's demos into
    ``<run_dir>/<name>`` with ``method=bc``; its training summary."""
    ctx = runner.make_context(
        cfg, BCConfig(), trainer_cfg, run_dir / f"{name}_training", run_dir / name, job=f"train_{name}",
        group=group, model=OmegaConf.to_object(model_cfg), dataset=str(run_dir / "dataset"),
    )
    summary, _ = runner.train(ctx, evaluate=False)
    return summary


def evaluate_saved(cfg: DictConfig, folder: Path, sample_actions: bool = False) -> dict:
    """Evaluate a saved policy folder, loaded as ``vla-kd eval policy=<folder>`` loads it;
    ``sample_actions``: an RL student acts with seeded samples of its Gaussian."""
    # A saved folder needs no env to be built.
    policy = build_policy(str(folder), env=None, seed=int(cfg.eval.seed), sample_actions=sample_actions)
    return evaluate_policy(cfg, cfg.eval, policy, str(cfg.task), name=str(folder))


def evaluated_row(
    cfg: DictConfig, run_dir: Path, task: str, folder: Path, key: str, name: str, *, summary: dict,
    samples: int, state: PipelineState, sample_actions: bool = False,
) -> dict:
    """Evaluate ``folder`` (stage ``eval_<key>``), keep its results as ``<key>_results.json``
    and return its row ``name`` of the results table."""

    def evaluate() -> dict:
        evaluation = evaluate_saved(cfg, folder, sample_actions)
        write_json_atomic(evaluation, run_dir / f"{key}_results.json")
        log.info("%s: success %.1f%%", name, 100 * evaluation["success_rate"])
        return {
            "name": name,
            "task": task,
            "episodes": evaluation["episodes"],
            "success_rate": evaluation["success_rate"],
            "ci95": evaluation["ci95"],
            "policy_ms_per_action": evaluation["policy_ms_per_action"],
            "samples": samples,
            "wall_seconds": summary["wall_seconds"],
        }

    return state.run_stage(f"eval_{key}", evaluate)


def student_rows(cfg: DictConfig, method: str, task: str, run_dir: Path, state: PipelineState,
                 trained: dict) -> list[dict]:
    """Evaluate the ``method`` student that :func:`distil` ``trained`` into ``students/<method>``:
    one results row per evaluation the method asks for (the RPD student: its mean action, and
    sampling)."""
    return [
        evaluated_row(
            cfg, run_dir, task, run_dir / "students" / method, key=f"{method}{variant.suffix}",
            name=f"{method} student{variant.label}", summary=trained["summary"],
            samples=trained["samples"], state=state, sample_actions=variant.sample_actions,
        )
        for variant in registry.get(method).evaluations
    ]


def distil(cfg: DictConfig, method: str, task: str, run_dir: Path, group: str) -> dict:
    """Train the ``method`` student of the run's teacher into ``students/<method>``; its
    training summary and the samples it learnt from."""
    method_cfg, trainer_cfg, model_cfg = student_settings(cfg, method)
    ctx = runner.make_context(
        cfg, method_cfg, trainer_cfg, run_dir / "students_training" / method, run_dir / "students" / method,
        job=f"train_{method}", group=group, teacher=str(run_dir / "teacher"),
        expert=str(run_dir / "action_expert"), dataset=str(run_dir / "dataset"), env=task,
        model=OmegaConf.to_object(model_cfg) if model_cfg is not None else None,
    )
    summary, result = runner.train(ctx, evaluate=False)
    return {"summary": summary, "samples": result.samples}


def student_settings(cfg: DictConfig, method: str) -> tuple:
    """(method node, trainer node, model node or None) of a student: the pipeline's own nodes
    ``<method>``, ``<method>_trainer`` and ``<method>_model`` where pipeline.yaml tunes the
    method, else the method's YAML, the default trainer and model, as ``vla-kd train
    method=<method>`` composes them."""
    if cfg.get(method) is not None:
        return cfg[method], cfg.get(f"{method}_trainer"), cfg.get(f"{method}_model")
    composed = compose_train_config([f"method={method}"])
    return composed.method, composed.trainer, composed.model


def compose_train_config(overrides: list[str]) -> DictConfig:
    """``vla-kd train``'s config with ``overrides``, inside a running Hydra job or outside one."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=overrides)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)
