"""``vla-kd bench``: a token teacher's decoders (TokenVLA or ``hf_vla``) side by side (greedy AR,
training-free Jacobi, a CEED student's Jacobi with and without early exit), a DySL student's
paths on replayed demonstrations, an aligned VLA beside them; optionally each one's success
for the success-vs-latency plot."""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vla_kd.benchmarks.decoding import decoders_for, time_decoders
from vla_kd.benchmarks.dysl_sweep import pareto_plot, sweep_rows, sweep_table, sweep_views
from vla_kd.benchmarks.layer_skip import replay_frames, standard_views, time_layer_skipping
from vla_kd.benchmarks.tables import bench_table, layer_skip_table, success_latency_points
from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.envs import make_env
from vla_kd.envs.from_config import env_kwargs
from vla_kd.errors import UserError
from vla_kd.evaluator import EvalConfig, evaluate_policy
from vla_kd.policies.loading import load_policy
from vla_kd.policies.registry import ACTION_STUDENT_TYPES, SKIP_POLICY_TYPES, TOKEN_POLICY_TYPES
from vla_kd.policies.skip_vla import with_settings
from vla_kd.reporting import plot_policies_success_vs_latency, write_json_atomic

log = logging.getLogger(__name__)


def observations(cfg: DictConfig, data, cameras: tuple[str, ...], image_size: int, batch: int,
                 count: int = 1) -> list[dict]:
    """``count`` contract batches of ``batch`` different observations each, with each of
    ``cameras``: frames spread evenly over the dataset ``data``, or (None) env resets at
    consecutive held-out seeds."""
    if data is not None:
        rows = [data[int(i)] for i in np.linspace(0, len(data) - 1, batch * count).astype(int)]
        frames = [{**{name: r[f"observation.images.{name}"].numpy() for name in cameras},
                   "state": r["observation.state"].numpy(), "instruction": r["task"]} for r in rows]
    else:
        kwargs = env_kwargs(cfg, str(cfg.env), "rgb", image_size=image_size,
                            wrist_camera="wrist_rgb" in cameras)
        env = make_env(str(cfg.env), **kwargs)
        try:
            frames = [{**env.reset(seed=int(cfg.seed) + i)[0], "instruction": env.instruction}
                      for i in range(batch * count)]
        finally:
            env.close()
    batches = []
    for start in range(0, batch * count, batch):
        rows = frames[start : start + batch]
        obs = {name: np.stack([f[name] for f in rows]) for name in (*cameras, "state")}
        obs["instruction"] = [f["instruction"] for f in rows]
        batches.append(obs)
    return batches


def load_pair(teacher: str, student: str | None):
    """A token teacher (TokenVLA or hf_vla) and its CEED student (or None)."""
    load = partial(load_policy, expected_type=TOKEN_POLICY_TYPES, user="vla-kd bench")
    return load(teacher, role="teachers"), (load(student, role="students") if student else None)


def evaluate_decoder(cfg: DictConfig, name: str, model) -> dict:
    eval_cfg = EvalConfig(obs_mode="rgb", max_episode_steps=cfg.max_episode_steps, episodes=cfg.episodes,
                          seed=cfg.seed, progress=False, workers=cfg.workers)
    return evaluate_policy(cfg, eval_cfg, model, str(cfg.env), name=name)


def action_student(folder: str, teacher) -> dict:
    """{its policy type: the saved continuous student at ``folder``}, read at the teacher's
    image size (the observations are the teacher's)."""
    student = load_policy(folder, ACTION_STUDENT_TYPES, "action_students", "vla-kd bench")
    size = getattr(student.config, "image_size", None)
    if size is not None and size != teacher.config.image_size:
        raise UserError(
            f"action_students: '{folder}' reads {size}-px images, its teacher {teacher.config.image_size}-px"
        )
    return {student.policy_type: student}


def matched_to_teachers(cfg: DictConfig, key: str) -> list:
    """``cfg[key]`` as one entry (a folder or None) per teacher; empty means none for any."""
    folders = list(cfg[key] or [])
    if folders and len(folders) != len(cfg.teachers):
        raise UserError(f"{key} must match teachers one to one (use null for a teacher without one)")
    return folders or [None] * len(cfg.teachers)


def run_bench(cfg: DictConfig) -> dict:
    """Everything ``vla-kd bench`` does (see the command's doc); its ``bench.json`` document."""
    students, dysl_students, aligned, action_students = (
        matched_to_teachers(cfg, key)
        for key in ("students", "dysl_students", "aligned_students", "action_students")
    )
    if any(dysl_students) and not cfg.dataset:
        raise UserError("dysl_students replay demonstration episodes: give dataset=<the teacher's demos>")
    data = None
    if cfg.dataset:  # decoded once: every teacher, batch size and replay reads these frames
        data = LeRobotDataset(cfg.dataset, action_horizon=1)
    rows, success, sweep = [], {}, []
    for i, teacher_path in enumerate(cfg.teachers):
        teacher, student = load_pair(str(teacher_path), students[i])
        decoders = decoders_for(teacher, student, OmegaConf.to_container(cfg.early_exit))
        if aligned[i]:  # one trunk pass and DDIM steps instead of token decoding
            decoders["aligned_vla"] = load_policy(str(aligned[i]), "aligned_vla", "aligned_students",
                                                  "vla-kd bench")
        if action_students[i]:  # one forward pass per chunk
            decoders.update(action_student(str(action_students[i]), teacher))
        # every camera any of them reads (the aligned VLA reads its VLM's, normally the teacher's)
        cameras = tuple(
            dict.fromkeys(c for m in decoders.values() for c in getattr(m.config, "cameras", ("rgb",)))
        )
        if data is not None:
            data.cameras(cameras, "the benchmarked policies' cameras")
        for batch in cfg.batch_sizes:
            obs = observations(
                cfg, data, cameras, int(teacher.config.image_size), int(batch), int(cfg.frames)
            )
            torch.set_num_threads(int(cfg.threads))
            results = time_decoders(decoders, obs, calls=int(cfg.calls), warmup=int(cfg.warmup))
            rows.extend(dataclasses.asdict(r) for r in results)
            for r in results:
                log.info(
                    "chunk %d batch %d %-16s %8.1f ms  %7.1f tok/s  x%.2f  passes %.1f",
                    r.chunk,
                    r.batch,
                    r.decoder,
                    r.latency_ms_median,
                    r.tokens_per_s,
                    r.speedup_vs_ar,
                    r.iterations_mean,
                )
        skip_timing, thresholds = [], {}
        if dysl_students[i]:
            skip_timing, skip_models, thresholds = bench_layer_skipping(
                cfg, data, teacher, str(dysl_students[i]))
            rows.extend(r for r in skip_timing if r["decoder"] != "ar")  # AR is timed with the decoders
            decoders = {**decoders, **skip_models}
        if int(cfg.episodes) > 0:
            for name, model in decoders.items():
                summary = evaluate_decoder(cfg, name, model)
                success[f"{name}@chunk{teacher.config.horizon}"] = {
                    k: summary[k]
                    for k in ("success_rate", "ci95", "episodes", "policy_stats") if k in summary
                }
        if thresholds and success:
            full_flops = load_policy(str(dysl_students[i]), SKIP_POLICY_TYPES).trunk_flops("full")
            sweep.extend(sweep_rows(skip_timing, success, thresholds, full_flops))
    doc = {
        "decoders": rows,
        "success": success,
        "threads": int(cfg.threads),
        "calls": int(cfg.calls),
        "observations": str(cfg.dataset or cfg.env),
        "dysl_sweep": sweep,
    }
    write_json_atomic(doc, Path(cfg.output_json))
    table = bench_table([r for r in rows if "paths" not in r], success)
    skip_rows = [r for r in rows if "paths" in r]
    if skip_rows:
        table += "\n" + layer_skip_table(skip_rows, success)
    if sweep:
        table += "\n" + sweep_table(sweep)
        pareto_plot(sweep, Path(cfg.output_json).with_name("pareto.png"))
    Path(cfg.output_json).with_suffix(".md").write_text(table)
    if success:
        plot_policies_success_vs_latency(
            success_latency_points(rows, success),
            Path(cfg.output_json).with_name("success_vs_latency.png"),
            xlabel="latency per call at batch 1, ms",
            log_x=False,
        )
    print(table)
    return doc


def bench_layer_skipping(cfg: DictConfig, dataset, teacher, folder: str) -> tuple[list[dict], dict, dict]:
    """The DySL student at ``folder`` against ``teacher`` on replayed demonstrations: every timed
    row (the teacher's ``ar`` among them), the student's settings to evaluate (name -> model view)
    and, for a threshold sweep (``dysl_quantiles``), each setting's thresholds."""
    student = load_policy(folder, SKIP_POLICY_TYPES, "dysl_students", "vla-kd bench")
    frames = replay_frames(
        dataset, student.config.horizon, student.config.history, int(cfg.replay_calls), student.cameras
    )
    thresholds: dict = {}
    if cfg.dysl_quantiles:
        views, thresholds = sweep_views(student, dataset, list(cfg.dysl_quantiles),
                                        list(cfg.dysl_calibrations))
        models = dict(views)
    else:
        views = standard_views(student)
        models = {
            "dysl_skip": with_settings(student, skipping="always"),
            "dysl_guided": with_settings(student, skipping="guided"),
        }
    torch.set_num_threads(int(cfg.threads))
    results = time_layer_skipping(teacher, views, frames, warmup=int(cfg.warmup))
    for r in results:
        log.info(
            "chunk %d %-12s mean %6.1f ms  x%.2f  trunk %.1f MFLOPs (x%.2f fewer)  layers %.2f  %s",
            r.chunk,
            r.decoder,
            r.latency_ms_mean,
            r.speedup_vs_ar,
            r.trunk_mflops_mean,
            r.flops_reduction_vs_ar,
            r.layers_mean,
            r.paths,
        )
    return [dataclasses.asdict(r) for r in results], models, thresholds
