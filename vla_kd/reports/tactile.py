"""Tactile distillation against its baseline, from a folder of ``method=tactile`` runs (any run
names): the teacher that reads touch (``method.stage=teacher``), the HapticVLA student
(``student``) and the same VLA without the tactile token (``baseline``), evaluated on the same
held-out seeds. The table gives success, how often each grasped and how hard it pressed; the plot
shows every episode's peak grasp force per policy, from the runs' ``eval_results.json``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from vla_kd.envs.tactile import touched_peaks
from vla_kd.errors import UserError
from vla_kd.methods.runner import EVAL_RESULTS_FILE, SUMMARY_FILE
from vla_kd.reporting import write_json_atomic

matplotlib.use("Agg")  # files only: no display

#: the stages in table order, with their row labels
ROWS = {
    "teacher": "tactile teacher (flow matching, reads touch)",
    "student": "HapticVLA student (tactile token, no touch)",
    "baseline": "baseline (same VLA, no token)",
}
PLOT_FILE = "grasp_force.png"


def tactile_runs(folder: Path) -> dict[str, Path]:
    """stage -> run folder of the finished ``method=tactile`` runs in ``folder``; two runs of one
    stage are refused (the table would have to pick one)."""
    runs: dict[str, Path] = {}
    for summary_file in sorted(folder.glob(f"*/{SUMMARY_FILE}")):
        summary = json.loads(summary_file.read_text())
        if summary.get("method") != "tactile":
            continue
        stage = summary.get("stage")
        if stage in runs:
            raise UserError(f"{folder} holds two method=tactile runs of stage {stage}: "
                            f"{runs[stage].name} and {summary_file.parent.name}; keep one per stage")
        runs[stage] = summary_file.parent
    return runs


def row(stage: str, run: Path) -> dict:
    """One policy's row from its run's summary (held-out figures under ``eval/``); the force
    figures from the evaluation's own document when the run kept it."""
    s = json.loads((run / SUMMARY_FILE).read_text())
    if "eval/success_rate" not in s:
        raise UserError(f"{run} was trained without a held-out evaluation (set eval.env=<task>)")
    evaluation = (json.loads((run / EVAL_RESULTS_FILE).read_text())
                  if (run / EVAL_RESULTS_FILE).is_file() else {})
    s = {**s, **{f"eval/grasp_force/{k}": v for k, v in evaluation.get("grasp_force", {}).items()}}
    episodes = evaluation.get("episode_results", [])
    peaks = [e.get("peak_grasp_force") for e in episodes]
    return {
        "policy": ROWS.get(stage, stage),
        "stage": stage,
        "run": run.name,
        "task": s["eval/task"],
        "episodes": s["eval/episodes"],
        "success_rate": s["eval/success_rate"],
        "ci95": s["eval/ci95"],
        "grasped": grasp_rate(s),
        "peak_force_mean": s.get("eval/grasp_force/peak_mean"),
        "peak_force_mean_touched": s.get("eval/grasp_force/peak_mean_touched"),
        "peak_force_mean_touched_ci95": mean_interval(
            touched_peaks(peaks, [e.get("mean_grasp_force") for e in episodes])),
        "peak_force_max": s.get("eval/grasp_force/peak_max"),
        "in_contact_force_mean": s.get("eval/grasp_force/in_contact_mean"),
        "ms_per_action": s.get("eval/policy_ms_per_action"),
        # the student's last figure: that of its action stage (the token stage's comes first)
        "tactile_token_relative_error": s.get("actions/train/tactile_token_relative_error",
                                              s.get("train/tactile_token_relative_error")),
        # every held-out episode's peak (the plot's points); None without the per-episode document
        "episode_peak_forces": peaks if peaks and None not in peaks else None,
    }


def grasp_rate(summary: dict) -> float | None:
    """The task's grasp flag rate: ``is_grasped`` (PickCube), ``is_cubeA_grasped`` (StackCube)."""
    rates = [v for k, v in summary.items() if k.startswith("eval/milestones/") and k.endswith("grasped")]
    return rates[0] if len(rates) == 1 else None


def mean_interval(values: list[float]) -> list[float] | None:
    """A normal-approximation 95% interval of the mean of ``values`` (None under two)."""
    if len(values) < 2:
        return None
    values = np.asarray(values, float)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


def collect(folder: Path) -> list[dict]:
    """The table's rows, teacher first."""
    runs = tactile_runs(folder)
    if not runs:
        raise UserError(f"{folder} has no finished method=tactile run")
    order = [stage for stage in ROWS if stage in runs] + sorted(set(runs) - set(ROWS))
    rows = [row(stage, runs[stage]) for stage in order]
    if len({r["task"] for r in rows}) > 1 or len({r["episodes"] for r in rows}) > 1:
        raise UserError(f"{folder}'s runs were evaluated on different tasks or episode counts: "
                        + ", ".join(f"{r['run']}: {r['task']} x{r['episodes']}" for r in rows))
    return rows


def _figure(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = [
        f"{rows[0]['task']}, {rows[0]['episodes']} held-out episodes each",
        "",
        "| policy | success (95% CI) | grasped | peak grasp force, N: mean / mean of episodes that "
        "touched (95% CI) / max | in contact, N | ms per action |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        low, high = r["ci95"]
        grasped = "n/a" if r["grasped"] is None else f"{100 * r['grasped']:.0f}%"
        touched = _figure(r["peak_force_mean_touched"])
        if r["peak_force_mean_touched_ci95"]:
            touched += " [{:.1f}, {:.1f}]".format(*r["peak_force_mean_touched_ci95"])
        peaks = f"{_figure(r['peak_force_mean'])} / {touched} / {_figure(r['peak_force_max'])}"
        lines.append(f"| {r['policy']} | {100 * r['success_rate']:.0f}% [{100 * low:.0f}, {100 * high:.0f}] "
                     f"| {grasped} | {peaks} | {_figure(r['in_contact_force_mean'])} "
                     f"| {_figure(r['ms_per_action'], 2)} |")
    errors = [r for r in rows if r["tactile_token_relative_error"] is not None]
    for r in errors:
        lines.append(f"\n{r['policy']}: tactile token relative error "
                     f"{r['tactile_token_relative_error']:.3f} (MSE over the teacher tokens' variance)")
    return "\n".join(lines) + "\n"


def plot(folder: Path, rows: list[dict]) -> Path | None:
    """Per policy, its episodes' peak grasp forces (box and points), success in the label."""
    series = [(r, r["episode_peak_forces"]) for r in rows if r["episode_peak_forces"]]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(1.8 + 2.2 * len(series), 4))
    for x, (_, peaks) in enumerate(series, start=1):
        ax.scatter([x] * len(peaks), peaks, s=10, alpha=0.4)
    ax.boxplot([peaks for _, peaks in series], showfliers=False)
    ax.set_xticks(range(1, len(series) + 1),
                  [f"{r['stage']}\n{100 * r['success_rate']:.0f}% success" for r, _ in series])
    ax.set_ylabel("episode peak grasp force (N)")
    ax.set_title(f"{series[0][0]['task']}: {series[0][0]['episodes']} held-out episodes")
    fig.tight_layout()
    path = folder / PLOT_FILE
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(folder: Path) -> str:
    """``results.json``, ``results.md`` and the force plot in ``folder``; the table."""
    rows = collect(folder)
    write_json_atomic(rows, folder / "results.json")
    text = table(rows)
    (folder / "results.md").write_text(text)
    plot(folder, rows)
    return text
