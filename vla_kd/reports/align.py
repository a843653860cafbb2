"""Action-expert alignment against its baselines (``experiment=align_vs_scratch``) from its run
folders: the action expert alone (``expert_eval/``, ``vla-kd eval experiment=held_out
policy=<expert>``), the aligned VLA (``method.stage=both``), the same architecture from scratch
(``method.stage=scratch``) and, when ``teacher_eval/`` is there, the VLM teacher for reference;
success with its 95% interval, training samples and wall time, on the same held-out seeds."""

from __future__ import annotations

import json
from pathlib import Path

from vla_kd.errors import UserError
from vla_kd.methods.runner import SUMMARY_FILE
from vla_kd.reporting import write_json_atomic

ROWS = {"both": "aligned VLA (stage 1 + 2)", "scratch": "same VLA from scratch"}


def align_runs(folder: Path) -> dict[str, dict]:
    """stage -> train summary of the ``method=align`` runs in ``folder``."""
    runs = {}
    for summary_file in sorted(folder.glob(f"*/{SUMMARY_FILE}")):
        summary = json.loads(summary_file.read_text())
        if summary.get("method") == "align":
            runs[summary["stage"]] = summary
    return runs


def training_summary(policy: str) -> dict:
    """A policy's training summary: a pipeline keeps ``<name>_training/`` beside its ``<name>/``
    folder (teacher, action_expert); a `vla-kd train` run keeps it beside ``policy/``."""
    path = Path(policy)
    candidates = (path.parent / f"{path.name}_training" / SUMMARY_FILE, path.parent / SUMMARY_FILE)
    return next((json.loads(p.read_text()) for p in candidates if p.is_file()), {})


def evaluated_row(label: str, evaluation: Path) -> dict:
    """A saved policy's row from its held-out evaluation and, when found, its training summary."""
    result = json.loads(evaluation.read_text())
    training = training_summary(result["policy"])
    return {
        "policy": label,
        "success_rate": result["success_rate"],
        "ci95": result["ci95"],
        "episodes": result["episodes"],
        "samples": training.get("samples"),
        # training only, as for the aligned rows
        "wall_seconds": training.get("time/seconds", training.get("wall_seconds")),
    }


def collect(folder: Path) -> tuple[str, list[dict]]:
    """(the task, the table's rows) of the experiment in ``folder``."""
    runs = align_runs(folder)
    if not runs:
        raise UserError(f"{folder} has no finished method=align run")
    expert_eval = folder / "expert_eval" / "results.json"
    if not expert_eval.is_file():
        raise UserError(f"{folder} has no expert_eval/results.json: evaluate the expert first with "
                        "vla-kd eval experiment=held_out policy=<expert> env=<task> "
                        f"hydra.run.dir={expert_eval.parent}")
    rows = [evaluated_row("action expert alone", expert_eval)]
    for stage, label in ROWS.items():
        if stage in runs:
            s = runs[stage]
            rows.append({"policy": label, "success_rate": s["eval/success_rate"], "ci95": s["eval/ci95"],
                         "episodes": s["eval/episodes"], "samples": s["samples"],
                         "wall_seconds": s["wall_seconds"]})
    if (folder / "teacher_eval" / "results.json").is_file():
        rows.append(evaluated_row("VLM teacher (reference)", folder / "teacher_eval" / "results.json"))
    return next(iter(runs.values()))["eval/task"], rows


def table(task: str, rows: list[dict]) -> str:
    held_out = "the suite's fixed initial states" if task.startswith("libero/") else "held-out seeds"
    lines = [
        f"{task}, {rows[0]['episodes']} episodes each ({held_out})",
        "",
        "| policy | success (95% CI) | training samples | training wall s |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        low, high = r["ci95"]
        wall = f"{r['wall_seconds']:.0f}" if r["wall_seconds"] is not None else "n/a"
        lines.append(f"| {r['policy']} | {100 * r['success_rate']:.0f}% [{100 * low:.0f}, {100 * high:.0f}] "
                     f"| {r['samples'] or 'n/a'} | {wall} |")
    return "\n".join(lines) + "\n"


def write(folder: Path) -> str:
    """``results.json`` and ``results.md`` in ``folder``; the table."""
    task, rows = collect(folder)
    write_json_atomic(rows, folder / "results.json")
    text = table(task, rows)
    (folder / "results.md").write_text(text)
    return text
