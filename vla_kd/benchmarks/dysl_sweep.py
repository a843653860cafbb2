"""The DySL threshold sweep (``vla-kd bench ... dysl_quantiles=[...]``): a layer-skipping student
at several guidance quantiles beside its full teacher, the Pareto curve rather than one point.

For every setting the prior and post thresholds are re-derived from the *training*
demonstrations at the given quantile; ``dysl_calibrations=[demos,student]`` adds settings whose
post threshold is the quantile of the student's own cheap-path jumps on those demos. Wall-clock
figures come from one replay of demonstration frames in which the teacher and every setting take
turns call by call (vla_kd.benchmarks.layer_skip); FLOPs from the paths the student took in the
evaluation episodes (``episodes > 0``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from vla_kd.policies.skip_calibration import cheap_path_jumps, demo_episodes
from vla_kd.policies.skip_guidance import calibrate
from vla_kd.policies.skip_vla import with_settings

matplotlib.use("Agg")
CALIBRATION_FRAMES = 512  # chunk boundaries of the demos read for the student calibration


def sweep_views(student, dataset, quantiles: list[float], calibrations: list[str]) -> tuple[dict, dict]:
    """(name -> view of ``student``, name -> its thresholds): full depth, always skipping, and
    guided at each quantile of each calibration."""
    views = {"dysl_off": with_settings(student, skipping="off"),
             "dysl_always": with_settings(student, skipping="always")}
    c, thresholds, episodes = student.config, {}, demo_episodes(dataset)
    jumps = None
    if "student" in calibrations:
        jumps = cheap_path_jumps(student, dataset, CALIBRATION_FRAMES, seed=0)
    for calibration in calibrations:
        for q in quantiles:
            t = calibrate(episodes, c.horizon, c.history, q, q)
            post = t.post if calibration == "demos" else float(np.quantile(jumps, q))
            name = f"dysl_q{q:g}" + ("" if calibration == "demos" else "_student")
            thresholds[name] = {"quantile": q, "prior": t.prior, "post": post, "calibration": calibration}
            views[name] = with_settings(student, skipping="guided", prior_threshold=t.prior,
                                        post_threshold=post)
    return views, thresholds


def sweep_rows(timing: list[dict], success: dict, thresholds: dict, full_flops: float) -> list[dict]:
    """One row per evaluated setting (the teacher first): its thresholds, success, replay
    latency and the trunk FLOPs its evaluation episodes spent per call."""
    rows = []
    for r in timing:
        s = success.get(f"{r['decoder']}@chunk{r['chunk']}")
        if s is None:
            continue
        # the teacher keeps no counters: every call is a full-depth decode
        stats = s.get("policy_stats") or {"calls": 1, "trunk_flops": full_flops}
        rows.append({
            "setting": "teacher" if r["decoder"] == "ar" else r["decoder"],
            **thresholds.get(r["decoder"], {}),
            **{k: s[k] for k in ("success_rate", "ci95", "episodes")},
            "replay_latency_ms_mean": r["latency_ms_mean"],
            "speedup_vs_teacher": r["speedup_vs_ar"],
            "rollout_trunk_mflops_per_call": stats["trunk_flops"] / stats["calls"] / 1e6,
            "rollout_flops_reduction": full_flops * stats["calls"] / stats["trunk_flops"],
            "rollout_paths": {k: v for k, v in stats.items() if k.startswith("calls")},
        })
    return rows


def sweep_table(rows: list[dict]) -> str:
    lines = [
        "| setting | success (95% CI) | replay latency ms (mean) | speed-up | trunk MFLOPs/call "
        "| fewer FLOPs | paths full / skip / skip+full |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        p = r["rollout_paths"]
        paths = "all full"
        if "calls_skip" in p:
            paths = f"{p['calls_full']} / {p['calls_skip']} / {p['calls_skip_full']}"
        lines.append(
            f"| {r['setting']} | {100 * r['success_rate']:.0f}% [{100 * r['ci95'][0]:.0f}, "
            f"{100 * r['ci95'][1]:.0f}] | {r['replay_latency_ms_mean']:.1f} | {r['speedup_vs_teacher']:.2f}x "
            f"| {r['rollout_trunk_mflops_per_call']:.1f} | {r['rollout_flops_reduction']:.2f}x | {paths} |"
        )
    return "\n".join(lines) + "\n"


def pareto_plot(rows: list[dict], path: Path) -> None:
    """Success against speed-up and against fewer trunk FLOPs, the teacher's success as a band."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    teacher = rows[0]
    for ax, key, label in (
        (axes[0], "speedup_vs_teacher", "wall-clock speed-up vs teacher (replay)"),
        (axes[1], "rollout_flops_reduction", "trunk FLOPs reduction vs teacher"),
    ):
        for r in rows[1:]:
            rate, (low, high) = r["success_rate"], r["ci95"]
            ax.errorbar(r[key], rate, yerr=[[rate - low], [high - rate]], fmt="o", capsize=3)
            ax.annotate(r["setting"], (r[key], rate), fontsize=8)
        ax.axhline(teacher["success_rate"], color="k", ls="--", label="teacher")
        ax.axhspan(*teacher["ci95"], color="k", alpha=0.08)
        ax.set(xlabel=label, ylim=(0, 1))
    axes[0].set_ylabel("success rate (95% CI)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
