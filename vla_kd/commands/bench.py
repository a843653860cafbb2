"""``vla-kd bench``: decoder latency, action tokens/s and Jacobi passes, side by side, per chunk
size and batch; optionally each decoder's success, for a success-vs-latency plot."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vla_kd.cli_support import hydra_command
from vla_kd.errors import UserError
from vla_kd.reporting import plot_policies_success_vs_latency, write_json_atomic

CONFIG_NAME = "bench"
log = logging.getLogger(__name__)


def observations(cfg: DictConfig, data, cameras: tuple[str, ...], image_size: int, batch: int) -> dict:
    """A contract batch of ``batch`` different observations, with each of ``cameras``: frames of
    the dataset ``data``, or (None) env resets."""
    if data is not None:
        rows = [data[int(i)] for i in np.linspace(0, len(data) - 1, batch).astype(int)]
        obs = {name: np.stack([r[f"observation.images.{name}"].numpy() for r in rows]) for name in cameras}
        obs.update(state=np.stack([r["observation.state"].numpy() for r in rows]),
                   instruction=[r["task"] for r in rows])
        return obs
    from vla_kd.envs import make_env
    from vla_kd.envs.from_config import env_kwargs

    kwargs = env_kwargs(cfg, str(cfg.env), "rgb", image_size=image_size, wrist_camera="wrist_rgb" in cameras)
    env = make_env(str(cfg.env), **kwargs)
    try:
        frames = [env.reset(seed=int(cfg.seed) + i)[0] for i in range(batch)]
    finally:
        env.close()
    obs = {name: np.stack([f[name] for f in frames]) for name in cameras}
    obs.update(state=np.stack([f["state"] for f in frames]), instruction=[env.instruction] * batch)
    return obs


def load_pair(teacher: str, student: str | None):
    from vla_kd.commands.ceed import load_token_teacher

    return load_token_teacher(teacher), (load_token_teacher(student) if student else None)


def evaluate_decoder(cfg: DictConfig, name: str, model) -> dict:
    from vla_kd.commands.train import evaluate_policy

    eval_cfg = OmegaConf.create(
        {
            "obs_mode": "rgb",
            "max_episode_steps": cfg.max_episode_steps,
            "episodes": cfg.episodes,
            "seed": cfg.seed,
            "progress": False,
            "workers": cfg.workers,
        }
    )
    return evaluate_policy(cfg, eval_cfg, model, str(cfg.env), name=name)


def matched_to_teachers(cfg: DictConfig, key: str) -> list:
    """``cfg[key]`` as one entry (a folder or None) per teacher; empty means none for any."""
    folders = list(cfg[key] or [])
    if folders and len(folders) != len(cfg.teachers):
        raise UserError(f"{key} must match teachers one to one (use null for a teacher without one)")
    return folders or [None] * len(cfg.teachers)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    import torch

    from vla_kd.benchmarks.decoding import decoders_for, time_decoders
    from vla_kd.commands.align import load_policy_of_type
    from vla_kd.commands.train import dataset_cameras

    students, dysl_students, aligned = (
        matched_to_teachers(cfg, key) for key in ("students", "dysl_students", "aligned_students")
    )
    if any(dysl_students) and not cfg.dataset:
        raise UserError("dysl_students replay demonstration episodes: give dataset=<the teacher's demos>")
    data = None
    if cfg.dataset:  # decoded once: every teacher, batch size and replay reads these frames
        from vla_kd.data.lerobot_dataset import LeRobotDataset

        data = LeRobotDataset(cfg.dataset, action_horizon=1)
    rows, success = [], {}
    for i, teacher_path in enumerate(cfg.teachers):
        teacher, student = load_pair(str(teacher_path), students[i])
        decoders = decoders_for(teacher, student, OmegaConf.to_container(cfg.early_exit))
        if aligned[i]:  # one trunk pass and DDIM steps instead of token decoding
            decoders["aligned_vla"] = load_policy_of_type(str(aligned[i]), "aligned_vla", "aligned_students")
        # every camera any of them reads (the aligned VLA reads its VLM's, normally the teacher's)
        cameras = tuple(dict.fromkeys(c for m in decoders.values() for c in m.config.cameras))
        if data is not None:
            dataset_cameras(data, cameras, "the benchmarked policies' cameras")
        for batch in cfg.batch_sizes:
            obs = observations(cfg, data, cameras, int(teacher.config.image_size), int(batch))
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
        if dysl_students[i]:
            skip_rows, skip_models = bench_layer_skipping(cfg, data, teacher, str(dysl_students[i]))
            rows.extend(skip_rows)
            decoders = {**decoders, **skip_models}
        if int(cfg.episodes) > 0:
            for name, model in decoders.items():
                summary = evaluate_decoder(cfg, name, model)
                success[f"{name}@chunk{teacher.config.horizon}"] = {
                    k: summary[k] for k in ("success_rate", "ci95", "episodes")
                }
    doc = {
        "decoders": rows,
        "success": success,
        "threads": int(cfg.threads),
        "calls": int(cfg.calls),
        "observations": str(cfg.dataset or cfg.env),
    }
    write_json_atomic(doc, Path(cfg.output_json))
    table = bench_table([r for r in rows if "paths" not in r], success)
    skip_rows = [r for r in rows if "paths" in r]
    if skip_rows:
        table += "\n" + layer_skip_table(skip_rows, success)
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


def bench_layer_skipping(cfg: DictConfig, dataset, teacher, folder: str) -> tuple[list[dict], dict]:
    """The DySL student at ``folder`` against ``teacher`` on replayed demonstrations: rows,
    and the student's settings to evaluate (name -> model view)."""
    import torch

    from vla_kd.benchmarks.layer_skip import replay_frames, standard_views, time_layer_skipping, with_settings
    from vla_kd.policies.pretrained import PretrainedPolicy

    student = PretrainedPolicy.from_pretrained(folder)
    if student.policy_type != "skip_vla":
        raise UserError(f"dysl_students: '{folder}' holds a {student.policy_type}, not a skip_vla")
    frames = replay_frames(
        dataset, student.config.horizon, student.config.history, int(cfg.replay_calls), student.cameras
    )
    torch.set_num_threads(int(cfg.threads))
    results = time_layer_skipping(teacher, standard_views(student), frames, warmup=int(cfg.warmup))
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
    models = {
        "dysl_skip": with_settings(student, skipping="always"),
        "dysl_guided": with_settings(student, skipping="guided"),
    }
    return [dataclasses.asdict(r) for r in results if r.decoder != "ar"], models


def rate_text(s: dict | None) -> str:
    """``62% [52, 71]`` for an evaluation summary, empty for None."""
    return f"{100 * s['success_rate']:.0f}% [{100 * s['ci95'][0]:.0f}, {100 * s['ci95'][1]:.0f}]" if s else ""


def layer_skip_table(rows: list[dict], success: dict) -> str:
    lines = [
        "| chunk | student | latency ms (mean; median [p10, p90]) | speed-up vs AR | trunk MFLOPs/call "
        "| fewer FLOPs vs AR | layers per token | paths full / skip / skip+full | success |",
        "|---:|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        rate = rate_text(success.get(f"{r['decoder']}@chunk{r['chunk']}"))
        p = r["paths"]
        lines.append(
            f"| {r['chunk']} | {r['decoder']} | {r['latency_ms_mean']:.1f}; {r['latency_ms_median']:.1f} "
            f"[{r['latency_ms_p10']:.1f}, {r['latency_ms_p90']:.1f}] | {r['speedup_vs_ar']:.2f}x "
            f"| {r['trunk_mflops_mean']:.1f} | {r['flops_reduction_vs_ar']:.2f}x | {r['layers_mean']:.2f} "
            f"| {p['full']} / {p['skip']} / {p['skip+full']} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def bench_table(rows: list[dict], success: dict) -> str:
    lines = [
        "| chunk | batch | decoder | latency ms (median [p10, p90]) | action tokens/s | speed-up vs AR "
        "| passes mean / max | success |",
        "|---:|---:|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        rate = rate_text(success.get(f"{r['decoder']}@chunk{r['chunk']}"))
        lines.append(
            f"| {r['chunk']} | {r['batch']} | {r['decoder']} | {r['latency_ms_median']:.1f} "
            f"[{r['latency_ms_p10']:.1f}, {r['latency_ms_p90']:.1f}] | {r['tokens_per_s']:.0f} "
            f"| {r['speedup_vs_ar']:.2f}x | {r['iterations_mean']:.1f} / {r['iterations_max']} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def success_latency_points(rows: list[dict], success: dict) -> list[dict]:
    """The evaluated decoders at the smallest batch, as rows for the shared success-vs-latency plot."""
    smallest_batch = min((r["batch"] for r in rows), default=1)
    points = []
    for r in rows:
        s = success.get(f"{r['decoder']}@chunk{r['chunk']}")
        if s is None or r["batch"] != smallest_batch:
            continue
        points.append({
            "name": f"{r['decoder']} (chunk {r['chunk']})",
            "success_rate": s["success_rate"],
            "ci95": s["ci95"],
            # a guided DySL student's cost varies per call, so its mean is the fair figure
            "policy_ms_per_action": r.get("latency_ms_mean", r["latency_ms_median"]),
        })
    return points


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
