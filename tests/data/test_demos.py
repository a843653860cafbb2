"""Motion-planning demonstrations, recorded through the contract, land in a usable dataset."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import PUSHCUBE_DEMOS
from helpers import requires_maniskill, run_cli

pytestmark = [requires_maniskill, pytest.mark.maniskill, pytest.mark.slow]


def test_demos_cli_writes_successful_episodes(pushcube_demos):
    out = pushcube_demos  # `vla-kd demos env=maniskill/PushCube-v1 n=30 image_size=64`
    report = json.loads((out / "meta" / "demos_report.json").read_text())
    assert report["attempts"] == PUSHCUBE_DEMOS
    assert 0.8 * PUSHCUBE_DEMOS <= report["recorded_success"] <= report["planned_success"] <= PUSHCUBE_DEMOS

    from vla_kd.data.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(out, action_horizon=4)
    assert ds.info["total_episodes"] == report["recorded_success"]
    assert ds.tasks[0] == "push the cube to the red and white target"
    assert ds.images["observation.images.rgb"].shape[1:] == (64, 64, 3)
    frames = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet")
    success = np.asarray(frames["next.success"])
    ends = ds.episodes["dataset_to_index"].to_pylist()
    assert all(success[end - 1] for end in ends), "every kept episode ends in success"
    assert np.abs(ds.actions[:, :6]).max() <= 1.0 and ds.actions.shape[1] == 7


def test_demos_refuse_tasks_without_a_planner():
    proc = run_cli("demos", "env=maniskill/RollBall-v1", "n=1")
    assert proc.returncode == 2 and "no motion-planning expert for 'RollBall-v1'" in proc.stderr


def test_tactile_demos_record_the_fingers_contact_forces(tmp_path):
    """`tactile=true`: every frame carries observation.tactile; the planner's grasps show in it."""
    from vla_kd.data.lerobot_dataset import LeRobotDataset
    from vla_kd.envs.tactile import FIELDS

    out = tmp_path / "dataset"
    proc = run_cli("demos", "env=maniskill/PickCube-v1", "n=3", "image_size=32", "tactile=true", "workers=1",
                   f"output={out}", "progress=false", f"hydra.run.dir={tmp_path / 'run'}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["observation.tactile"]["names"] == list(FIELDS)
    ds = LeRobotDataset(out, action_horizon=2)
    assert ds.tactile.shape == (len(ds), len(FIELDS)) and ds[0]["observation.tactile"].shape == (len(FIELDS),)
    grasped = ds.tactile[:, 4] > 0
    assert grasped.any() and (ds.tactile[grasped, :2] > 0).all(), "a grasp presses both fingers"
    assert "observation.tactile" in json.loads((out / "meta" / "stats.json").read_text())


def test_tactile_demos_are_refused_on_libero():
    proc = run_cli("demos", "env=libero/libero_spatial/0", "n=1", "tactile=true")
    assert proc.returncode == 2 and "tactile=true records ManiSkill" in proc.stderr


def test_vary_grip_scales_each_episodes_closing_commands():
    from vla_kd.commands.demos import DemosCommandConfig
    from vla_kd.config_checks import ConfigValueError
    from vla_kd.data.demos import vary_grip

    actions = np.zeros((4, 7), np.float32)
    actions[:, 6] = [1.0, -1.0, -1.0, 1.0]  # open, closed, closed, open
    assert vary_grip(actions, 3, None) is actions
    varied = vary_grip(actions, 3, (0.1, 1.0))
    factor = -varied[1, 6]
    assert 0.1 <= factor <= 1.0 and varied[2, 6] == -factor and varied[[0, 3], 6].tolist() == [1.0, 1.0]
    assert np.array_equal(varied[:, :6], actions[:, :6]) and actions[1, 6] == -1.0  # a copy
    assert np.array_equal(vary_grip(actions, 3, (0.1, 1.0)), varied)  # seeded by the episode
    assert vary_grip(actions, 4, (0.1, 1.0))[1, 6] != varied[1, 6]
    with pytest.raises(ConfigValueError, match="grip_range"):
        DemosCommandConfig(grip_range=[0.8, 0.2])
