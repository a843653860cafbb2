"""The tactile distillation report from made-up run folders: one row per stage in the teacher,
student, baseline order with its force figures, and the per-episode force plot."""

from __future__ import annotations

import json

import pytest

from vla_kd.commands.report import main as report
from vla_kd.reports.tactile import PLOT_FILE, collect, grasp_rate

TASK = "maniskill/PickCube-v1"


def make_run(folder, stage: str, rate: float, peaks: list[float], task: str = TASK) -> None:
    folder.mkdir()
    summary = {"method": "tactile", "stage": stage, "eval/task": task, "eval/success_rate": rate,
               "eval/ci95": [0.1, 0.3], "eval/episodes": len(peaks), "eval/milestones/is_grasped": 0.5,
               "eval/grasp_force/peak_mean": sum(peaks) / len(peaks), "eval/grasp_force/peak_max": max(peaks),
               "eval/grasp_force/peak_mean_touched": 9.0, "eval/grasp_force/in_contact_mean": 6.0,
               "eval/policy_ms_per_action": 1.5}
    if stage == "student":  # run_stages prefixes each stage's last metrics with its name
        summary["token/train/tactile_token_relative_error"] = 0.3
        summary["actions/train/tactile_token_relative_error"] = 0.17
    (folder / "train_summary.json").write_text(json.dumps(summary))
    if stage != "teacher":  # the teacher's forces come from its summary alone
        (folder / "eval_results.json").write_text(json.dumps(
            {"episode_results": [{"peak_grasp_force": p, "mean_grasp_force": p / 2} for p in peaks],
             "grasp_force": {"peak_mean": sum(peaks) / len(peaks), "peak_max": max(peaks),
                             "peak_mean_touched": 9.5, "in_contact_mean": 6.0}}))


def test_a_row_per_stage_with_its_forces_and_a_plot(tmp_path):
    # run names do not matter; the stage in each summary orders the rows
    make_run(tmp_path / "b", "baseline", 0.2, [0.0, 20.0, 10.0])
    make_run(tmp_path / "a", "student", 0.25, [12.0, 8.0, 0.0])
    make_run(tmp_path / "c", "teacher", 0.5, [10.0, 14.0, 12.0])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train_summary.json").write_text(json.dumps({"method": "bc"}))
    assert report([str(tmp_path)]) == 0
    rows = [line for line in (tmp_path / "results.md").read_text().splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| tactile teacher (flow matching, reads touch)", "| HapticVLA student (tactile token, no touch)",
        "| baseline (same VLA, no token)"]
    # the interval covers the two episodes that touched (20 and 10 N): 15 +- 1.96 * 7.07 / sqrt(2)
    assert "| 20% [10, 30] | 50% | 10.0 / 9.5 [5.2, 24.8] / 20.0 | 6.0 | 1.50 |" in rows[2]
    assert "| 50% [10, 30] | 50% | 12.0 / 9.0 / 14.0 | 6.0 | 1.50 |" in rows[0]
    assert "relative error 0.170" in (tmp_path / "results.md").read_text()
    assert [r["stage"] for r in json.loads((tmp_path / "results.json").read_text())] == [
        "teacher", "student", "baseline"]
    assert (tmp_path / PLOT_FILE).stat().st_size > 0


def test_runs_that_cannot_share_a_table_are_refused(tmp_path):
    from vla_kd.errors import UserError

    make_run(tmp_path / "a", "student", 0.2, [1.0])
    make_run(tmp_path / "b", "baseline", 0.2, [1.0], task="maniskill/StackCube-v1")
    with pytest.raises(UserError, match="different tasks"):
        collect(tmp_path)
    stack = {"eval/milestones/is_cubeA_grasped": 0.1, "eval/milestones/is_cubeA_on_cubeB": 0.0}
    assert grasp_rate(stack) == 0.1  # StackCube names its grasp flag after the cube
    make_run(tmp_path / "c", "student", 0.2, [1.0])
    with pytest.raises(UserError, match="two method=tactile runs of stage student"):
        collect(tmp_path)
