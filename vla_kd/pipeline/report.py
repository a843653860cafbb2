"""The pipeline's results: one row per evaluated policy, side by side, and where the time went."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from vla_kd.data.demos import DemoReport
from vla_kd.reporting import plot_policies_success_vs_latency, write_json_atomic
from vla_kd.tracking import make_tracker


def results_table(rows: list[dict]) -> str:
    lines = [
        "| policy | task | episodes | success | 95% CI | ms/action | train samples | train wall s |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['task']} | {r['episodes']} | {r['success_rate']:.1%} "
            f"| [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] | {r['policy_ms_per_action']:.2f} "
            f"| {r['samples']} | {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def stage_table(stage_seconds: dict[str, float], total_seconds: float,
                side_by_side: dict | None = None) -> str:
    """Where the run's wall time went, one row per stage in the order they finished; the stages
    that ran ``side_by_side`` are marked, with the wall time they took together."""
    overlapped = set(side_by_side["stages"]) if side_by_side and side_by_side["workers"] > 1 else set()
    lines = ["| stage | minutes |", "|---|---:|"]
    lines += [f"| {stage}{' *' if stage in overlapped else ''} | {seconds / 60:.1f} |"
              for stage, seconds in stage_seconds.items()]
    lines.append(f"| whole run | {total_seconds / 60:.1f} |")
    if overlapped:
        lines.append(
            f"\n\\* ran side by side, {side_by_side['workers']} at a time with one torch thread each: "
            f"{side_by_side['wall_seconds'] / 60:.1f} min of wall time together"
        )
    return "\n".join(lines) + "\n"


def write_results(cfg: DictConfig, run_dir: Path, task: str, report: DemoReport, rows: list[dict],
                  stage_seconds: dict[str, float], wall_seconds: float, resumed: bool, group: str,
                  side_by_side: dict | None = None) -> dict:
    """``results.json``, ``results.md``, ``success_vs_latency.png`` and the W&B summary run; the
    results document."""
    table = results_table(rows)
    doc = {
        "task": task,
        "demos": {**report.__dict__, "planner_success_rate": report.planner_success_rate},
        "policies": rows,
        "protocol": {
            "eval_seeds_from": cfg.eval.seed,
            "episodes": cfg.eval.episodes,
            "max_episode_steps": cfg.eval.max_episode_steps,
            "demo_seeds": f"0..{cfg.demos.n - 1}",
        },
        "wall_seconds": wall_seconds,
        "stage_seconds": stage_seconds,
        "side_by_side": side_by_side,
        "resumed": resumed,
    }
    write_json_atomic(doc, run_dir / "results.json")
    (run_dir / "results.md").write_text(table + "\n" + stage_table(stage_seconds, wall_seconds, side_by_side))
    plot_policies_success_vs_latency(
        rows, run_dir / "success_vs_latency.png", title=f"{task}: {cfg.eval.episodes} held-out episodes each"
    )
    tracker = make_tracker(cfg.tracker, run_dir / "summary_run", job_type="pipeline", group=group)
    tracker.log_table(
        "pipeline/results",
        [{k: (v if not isinstance(v, list) else str(v)) for k, v in r.items()} for r in rows],
    )
    tracker.summary({f"{r['name']}/success_rate": r["success_rate"] for r in rows})
    tracker.finish()
    print(table)
    print(json.dumps({
        "results": str(run_dir / "results.json"),
        "plot": str(run_dir / "success_vs_latency.png"),
        "wall_seconds": wall_seconds,
    }))
    return doc
