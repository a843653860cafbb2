"""Action-expert alignment against its baselines, at the same training budget, on one task:
the action expert alone, the aligned VLA (stage 1 + stage 2) and the same architecture trained
end to end from scratch for as many steps. Each is evaluated on the same held-out seeds (on
LIBERO: the suite's fixed initial states); the table gives success (Wilson 95% CI), training
samples and wall time. ``--with-teacher`` adds the VLM teacher's own success as a reference row.

    python scripts/align_experiment.py --teacher T --expert E --dataset D --task maniskill/PushCube-v1 \
        --stage1-steps 500 --stage2-steps 500 --episodes 100 --out runs/align_experiment/pushcube

LIBERO tasks run to the suite's protocol length: ``--task libero/libero_object/0
--max-episode-steps null --state-parts [3,3,2] --episodes 50``. Overrides after ``--`` go to
both training runs, e.g. ``-- align.state_skip=true align.stage1_output_weight=100``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

#: First evaluation seed: demonstrations use seeds 0..n-1 (on LIBERO, seed i is fixed state i % 50).
EVAL_SEED = 100000


def train(stage: str, args, out: Path) -> dict:
    """One ``vla-kd train method=align`` run (skipped when its summary exists: resumable)."""
    run = out / stage
    summary = run / "train_summary.json"
    if not summary.exists():
        command = [
            sys.executable,
            "-m",
            "vla_kd.commands.train",
            "method=align",
            f"stage={stage}",
            f"teacher={args.teacher}",
            f"expert={args.expert}",
            f"dataset={args.dataset}",
            f"align.stage1_steps={args.stage1_steps}",
            f"align.stage2_steps={args.stage2_steps}",
            f"align.state_parts={args.state_parts}",
            f"trainer.batch_size={args.batch_size}",
            "trainer.progress=false",
            "tracker=none",
            f"eval.env={args.task}",
            f"eval.episodes={args.episodes}",
            f"eval.seed={EVAL_SEED}",
            f"eval.max_episode_steps={args.max_episode_steps}",
            f"output={run / 'policy'}",
            f"hydra.run.dir={run}",
            *args.overrides,
        ]
        subprocess.run(command, check=True)
    return json.loads(summary.read_text())


def evaluate(name: str, policy: str, args, out: Path) -> dict:
    """``vla-kd eval`` of a saved policy on the experiment's held-out seeds (skipped when done)."""
    path = out / f"{name}_eval.json"
    if not path.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vla_kd.commands.eval",
                f"policy={policy}",
                f"env={args.task}",
                "obs_mode=rgb",
                f"episodes_per_task={args.episodes}",
                f"seed={EVAL_SEED}",
                f"max_episode_steps={args.max_episode_steps}",
                "workers=2",
                "tracker=none",
                f"output_json={path}",
                f"hydra.run.dir={out / f'{name}_eval'}",
            ],
            check=True,
        )
    return json.loads(path.read_text())


def training_summary(policy: str) -> dict:
    """A policy's training summary: a pipeline keeps ``<name>_training/`` beside its ``<name>/``
    folder (teacher, action_expert); a `vla-kd train` run keeps it beside ``policy/``."""
    path = Path(policy)
    candidates = (path.parent / f"{path.name}_training" / "train_summary.json",
                  path.parent / "train_summary.json")
    return next((json.loads(p.read_text()) for p in candidates if p.is_file()), {})


def evaluated_row(label: str, name: str, policy: str, args) -> dict:
    result = evaluate(name, policy, args, args.out)
    training = training_summary(policy)
    return {
        "policy": label,
        "success_rate": result["success_rate"],
        "ci95": result["ci95"],
        "samples": training.get("samples"),
        # training only, as for the aligned rows (a run's wall_seconds includes its evaluation)
        "wall_seconds": training.get("time/seconds", training.get("wall_seconds")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("teacher", "expert", "dataset"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--task", default="maniskill/PushCube-v1")
    parser.add_argument("--stage1-steps", type=int, default=500)
    parser.add_argument("--stage2-steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--state-parts", default="[7,2,16]", help="Panda: arm joints, gripper, the rest")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--max-episode-steps", default="100",
                        help="episode length; null: the simulator's or suite's protocol length")
    parser.add_argument("--with-teacher", action="store_true", help="also evaluate the VLM teacher")
    parser.add_argument("--out", type=Path, default=Path("runs/align_experiment"))
    parser.add_argument("overrides", nargs="*", help="after --: `vla-kd train` overrides for both runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = [evaluated_row("action expert alone", "expert", args.expert, args)]
    for stage, label in (("both", "aligned VLA (stage 1 + 2)"), ("scratch", "same VLA from scratch")):
        s = train(stage, args, args.out)
        rows.append(
            {
                "policy": label,
                "success_rate": s["eval/success_rate"],
                "ci95": s["eval/ci95"],
                "samples": s["samples"],
                "wall_seconds": s["wall_seconds"],
            }
        )
    if args.with_teacher:
        rows.append(evaluated_row("VLM teacher (reference)", "teacher", args.teacher, args))
    held_out = ("the suite's fixed initial states" if args.task.startswith("libero/")
                else f"seeds from {EVAL_SEED}")
    lines = [
        f"{args.task}, {args.episodes} held-out episodes each ({held_out})",
        "",
        "| policy | success (95% CI) | training samples | training wall s |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        low, high = r["ci95"]
        wall = f"{r['wall_seconds']:.0f}" if r["wall_seconds"] is not None else "n/a"
        lines.append(
            f"| {r['policy']} | {100 * r['success_rate']:.0f}% [{100 * low:.0f}, {100 * high:.0f}] "
            f"| {r['samples'] or 'n/a'} | {wall} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
