"""The DySL threshold sweep: success, speed and trunk FLOPs of a layer-skipping student at
several guidance quantiles, beside its full teacher (the Pareto curve, not only the best point).

For every setting the prior and post thresholds are re-derived from the *training*
demonstrations (``--dataset``) at the given quantiles; ``--calibrations student`` adds settings
whose post threshold is the quantile of the student's own cheap-path jumps on those demos.
Evaluation runs on held-out seeds.
Wall-clock figures come from one replay of demonstration frames in which the teacher and every
setting take turns call by call (vla_kd.benchmarks.layer_skip), FLOPs from the paths the
student actually took in the evaluation episodes.

    python scripts/dysl_sweep.py --teacher T --student S --dataset D --task maniskill/PushCube-v1 \
        --quantiles 0.5 0.8 0.9 0.95 0.99 --episodes 100 --out runs/dysl_sweep/pushcube
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf


def evaluate(policy, task: str, episodes: int, seed: int, workers: int) -> dict:
    from vla_kd.commands.train import evaluate_policy

    configs = Path(__file__).resolve().parents[1] / "vla_kd" / "configs"
    cfg = OmegaConf.create(
        {
            "maniskill": OmegaConf.load(configs / "maniskill" / "cpu.yaml"),
            "libero": OmegaConf.load(configs / "libero" / "default.yaml"),
        }
    )
    eval_cfg = OmegaConf.create(
        {
            "obs_mode": "rgb",
            "max_episode_steps": 100,
            "episodes": episodes,
            "seed": seed,
            "progress": True,
            "workers": workers,
        }
    )
    return evaluate_policy(cfg, eval_cfg, policy, task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--dataset", required=True, help="the training demonstrations (thresholds)")
    parser.add_argument("--task", default="maniskill/PushCube-v1")
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95, 0.99])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=100000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--replay-calls", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("runs/dysl_sweep"))
    parser.add_argument(
        "--calibrations", nargs="+", choices=["demos", "student"], default=["demos"],
        help="post threshold from the demos' own jumps, or from the student's cheap path on the demos",
    )
    parser.add_argument("--no-fixed", action="store_true", help="leave out skipping off / always")
    args = parser.parse_args()

    import numpy as np
    import torch

    from vla_kd.benchmarks.layer_skip import replay_frames, time_layer_skipping, with_settings
    from vla_kd.commands.dysl import cheap_path_jumps, demo_episodes
    from vla_kd.data.lerobot_dataset import LeRobotDataset
    from vla_kd.policies.pretrained import PretrainedPolicy
    from vla_kd.policies.skip_guidance import calibrate

    teacher = PretrainedPolicy.from_pretrained(args.teacher)
    student = PretrainedPolicy.from_pretrained(args.student)
    dataset = LeRobotDataset(args.dataset, action_horizon=1)
    c = student.config
    views = {} if args.no_fixed else {
        "off": with_settings(student, skipping="off"),
        "always": with_settings(student, skipping="always"),
    }
    thresholds, episodes = {}, demo_episodes(dataset)
    jumps = cheap_path_jumps(student, dataset, 512, seed=0) if "student" in args.calibrations else None
    for calibration in args.calibrations:
        for q in args.quantiles:
            t = calibrate(episodes, c.horizon, c.history, q, q)
            post = t.post if calibration == "demos" else float(np.quantile(jumps, q))
            name = f"q{q:g}" + ("" if calibration == "demos" else "-student")
            thresholds[name] = {"quantile": q, "prior": t.prior, "post": post, "calibration": calibration}
            views[name] = with_settings(
                student, skipping="guided", prior_threshold=t.prior, post_threshold=post
            )

    torch.set_num_threads(1)
    frames = replay_frames(dataset, c.horizon, c.history, args.replay_calls)
    timing = {r.decoder: r for r in time_layer_skipping(teacher, views, frames)}
    torch.set_num_threads(2)

    full_flops = student.trunk_flops("full")
    rows = []
    for name, model in [("teacher", teacher), *views.items()]:
        result = evaluate(model, args.task, args.episodes, args.seed, args.workers)
        # the teacher keeps no counters: every call is a full-depth decode
        stats = result.get("policy_stats", {"calls": 1, "trunk_flops": full_flops})
        t = timing["ar" if name == "teacher" else name]
        rows.append(
            {
                "setting": name,
                **thresholds.get(name, {}),
                "success_rate": result["success_rate"],
                "ci95": result["ci95"],
                "episodes": result["episodes"],
                "replay_latency_ms_mean": t.latency_ms_mean,
                "speedup_vs_teacher": t.speedup_vs_ar,
                "rollout_trunk_mflops_per_call": stats["trunk_flops"] / stats["calls"] / 1e6,
                "rollout_flops_reduction": full_flops * stats["calls"] / stats["trunk_flops"],
                "rollout_paths": {k: v for k, v in stats.items() if k.startswith("calls")},
                "rollout_policy_ms_per_action": result["policy_ms_per_action"],
            }
        )
        print(json.dumps(rows[-1], default=float))
    write_outputs(rows, args)


def write_outputs(rows: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"task": args.task, "rows": rows}, indent=2, default=float)
    )
    lines = [
        f"DySL sweep on {args.task}: {rows[0]['episodes']} held-out episodes per setting",
        "",
        "| setting | success (95% CI) | replay latency ms (mean) | speed-up | trunk MFLOPs/call "
        "| fewer FLOPs | paths full / skip / skip+full |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        p = r["rollout_paths"]
        lines.append(
            f"| {r['setting']} | {100 * r['success_rate']:.0f}% [{100 * r['ci95'][0]:.0f}, "
            f"{100 * r['ci95'][1]:.0f}] | {r['replay_latency_ms_mean']:.1f} | {r['speedup_vs_teacher']:.2f}x "
            f"| {r['rollout_trunk_mflops_per_call']:.1f} | {r['rollout_flops_reduction']:.2f}x "
            + (
                f"| {p['calls_full']} / {p['calls_skip']} / {p['calls_skip_full']} |"
                if "calls_skip" in p
                else "| all full |"
            )
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

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
    fig.savefig(args.out / "pareto.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
