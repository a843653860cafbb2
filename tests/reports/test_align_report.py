"""The alignment experiment's report from made-up run folders: the expert's, the aligned VLA's,
the from-scratch baseline's and the teacher's rows, each with its training budget."""

from __future__ import annotations

import json

from vla_kd.commands.report import main as report


def test_the_report_has_a_row_per_policy_with_its_budget(tmp_path):
    expert = tmp_path / "expert_training" / "policy"
    expert.parent.mkdir()
    (expert.parent / "train_summary.json").write_text(json.dumps({"samples": 96000, "wall_seconds": 80.0}))
    for name, policy, rate in (("expert_eval", expert, 0.7), ("teacher_eval", tmp_path / "teacher", 0.6)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"policy": str(policy), "success_rate": rate, "ci95": [0.6, 0.8], "episodes": 100}))
    for stage, rate in (("both", 0.75), ("scratch", 0.05)):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "train_summary.json").write_text(json.dumps(
            {"method": "align", "stage": stage, "eval/task": "maniskill/PushCube-v1",
             "eval/success_rate": rate, "eval/ci95": [0.0, 1.0], "eval/episodes": 100, "samples": 19200,
             "wall_seconds": 40.0}))
    assert report([str(tmp_path)]) == 0
    table = (tmp_path / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| action expert alone", "| aligned VLA (stage 1 + 2)", "| same VLA from scratch",
        "| VLM teacher (reference)"]
    assert "| 70% [60, 80] | 96000 | 80 |" in rows[0] and "| 75% [0, 100] | 19200 | 40 |" in rows[1]
    assert "| n/a | n/a |" in rows[3]  # no training summary beside the teacher's folder
    assert json.loads((tmp_path / "results.json").read_text())[2]["success_rate"] == 0.05
