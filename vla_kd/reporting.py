"""Write evaluation results: JSON (atomically), a markdown table, CSV rows and a bar plot."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import matplotlib
import matplotlib.pyplot as plt

matplotlib.use("Agg")  # files only: no display


def write_file_atomic(path: str | Path, write: Callable[[IO], None], binary: bool = False) -> Path:
    """``write(handle)`` into a temp file in the same folder, then rename: never a half-written
    file (a failed write leaves the old file and no temp file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json_atomic(data: dict | list, path: str | Path) -> Path:
    """Write JSON atomically (see :func:`write_file_atomic`)."""
    return write_file_atomic(path, lambda handle: json.dump(data, handle, indent=2, default=float))


def table_rows(results: dict) -> list[dict]:
    """One flat row per task plus an 'overall' row."""
    rows = []
    for task, entry in {**results["tasks"], "overall": results}.items():
        low, high = entry["ci95"]
        rows.append(
            {
                "task": task,
                "policy": results["policy"],
                "episodes": entry["episodes"],
                "success_rate": round(entry["success_rate"], 4),
                "ci95_low": round(low, 4),
                "ci95_high": round(high, 4),
                "success_at_end": round(entry["success_at_end"], 4),
                "mean_return": round(entry["mean_return"], 3),
                "mean_length": round(entry["mean_length"], 1),
                "policy_ms_per_action": round(entry["policy_ms_per_action"], 3),
                "env_ms_per_step": round(entry["env_ms_per_step"], 2),
                "max_steps": entry.get("protocol", {}).get("max_episode_steps"),
            }
        )
    return rows


def markdown_table(results: dict) -> str:
    """A GitHub-flavoured markdown table of the per-task and overall numbers."""
    lines = [
        f"Policy: `{results['policy']}`. Success = ever succeeded in the episode; CI = 95% Wilson.",
        "",
        "| task | episodes | success | 95% CI | success at end | return | length | max steps "
        "| policy ms/action |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in table_rows(results):
        name = f"**{row['task']}**" if row["task"] == "overall" else row["task"]
        lines.append(
            f"| {name} | {row['episodes']} | {row['success_rate']:.1%} "
            f"| [{row['ci95_low']:.1%}, {row['ci95_high']:.1%}] | {row['success_at_end']:.1%} "
            f"| {row['mean_return']:.2f} | {row['mean_length']:.0f} | {row['max_steps'] or ''} "
            f"| {row['policy_ms_per_action']:.2f} |"
        )
    for task, entry in results["tasks"].items():
        if entry.get("milestone_rates"):  # where failing episodes stop, e.g. never grasped
            rates = ", ".join(f"`{k}` {v:.0%}" for k, v in entry["milestone_rates"].items())
            lines += ["", f"{task}, task flags ever true: {rates}."]
    return "\n".join(lines) + "\n"


def plot_success(results: dict, path: str | Path) -> Path:
    """Per-task success bars with Wilson 95% error bars."""
    tasks = list(results["tasks"])
    rates = [results["tasks"][t]["success_rate"] for t in tasks]
    # max(0, .): at 0% or 100% the bound equals the rate up to rounding.
    lows = [max(0.0, r - results["tasks"][t]["ci95"][0]) for r, t in zip(rates, tasks, strict=True)]
    highs = [max(0.0, results["tasks"][t]["ci95"][1] - r) for r, t in zip(rates, tasks, strict=True)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(tasks) + 1.5), 3.6))
    ax.bar(range(len(tasks)), rates, yerr=[lows, highs], capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(tasks)), [t.split("/", 1)[-1] for t in tasks], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(f"{results['policy']}: {results['success_rate']:.1%} over {results['episodes']} episodes")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: the success-vs-latency plot's axis height per unit of success rate, in points (6.4 x 4.2 in)
POINTS_PER_RATE = 220.0


def label_offset(
    x: float, rate: float, placed: list[tuple[float, float]], log_x: bool,
    points_per_rate: float = POINTS_PER_RATE,
) -> int:
    """A vertical label offset (points) that keeps a point's label clear of the labels already
    ``placed`` (their x and label height in points) near it in x: policies often tie.
    ``points_per_rate``: the axis height per unit of success rate."""

    def close_in_x(px: float) -> bool:
        return max(px, x) / max(min(px, x), 1e-9) < 2.5 if log_x else abs(px - x) < 1.0

    taken = [py for px, py in placed if close_in_x(px)]
    for offset in (4, -12, 14, -22, 24, -32):
        height = rate * points_per_rate + offset
        if all(abs(height - py) >= 11 for py in taken):
            return offset
    return 4


def plot_policies_success_vs_latency(
    rows: list[dict],
    path: str | Path,
    title: str = "",
    xlabel: str = "policy ms per executed action",
    log_x: bool = True,
) -> Path:
    """One point per policy row (``name``, ``success_rate``, ``ci95``, ``policy_ms_per_action``):
    success with its Wilson 95% interval against the policy's latency. The x axis is logarithmic
    by default, since students and teachers differ by orders of magnitude."""

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    placed: list[tuple[float, float]] = []  # (x, label height in points) of the labels so far
    for row in rows:
        rate, (low, high) = row["success_rate"], row["ci95"]
        latency = float(row["policy_ms_per_action"])
        if log_x:  # a zero latency cannot sit on a log axis; the evaluator reports > 0 for any real policy
            latency = max(latency, 1e-3)
        ax.errorbar(latency, rate, yerr=[[max(0.0, rate - low)], [max(0.0, high - rate)]], fmt="o", capsize=3)
        offset = label_offset(latency, rate, placed, log_x)
        placed.append((latency, rate * POINTS_PER_RATE + offset))
        ax.annotate(row["name"], (latency, rate), textcoords="offset points", xytext=(4, offset), fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel + (" (log)" if log_x else ""), ylabel="success rate (95% Wilson CI)",
           ylim=(-0.02, 1.02), title=title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
