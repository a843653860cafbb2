"""LIBERO demonstrations: the scripted expert from sampled layouts, recorded as a LeRobot dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import requires_libero

pytestmark = [requires_libero, pytest.mark.libero, pytest.mark.slow]


def test_sampled_layouts_depend_on_the_seed_and_differ_from_the_fixed_states():
    from vla_kd.envs import make_env

    env = make_env("libero/libero_object/0", obs_mode="state", include_privileged=True)
    try:
        sampled = lambda seed: env.reset(seed=seed, options={"sampled_init": True})[0]["privileged"]  # noqa: E731
        first, again, other = sampled(1), sampled(1), sampled(2)
        obs, info = env.reset(seed=1)
        np.testing.assert_array_equal(first, again)
        assert np.abs(first - other).max() > 1e-3
        assert np.abs(first - obs["privileged"]).max() > 1e-3 and info["init_state_id"] == 1
    finally:
        env.close()


def test_expert_demos_are_written_and_read_back(tmp_path):
    from vla_kd.data.lerobot_dataset import LeRobotDataset
    from vla_kd.data.libero_demos import generate_libero_demos

    report = generate_libero_demos("libero/libero_object/0", 2, tmp_path / "ds", image_size=64,
                                   progress=False, wrist_camera=True)
    assert report.recorded_success >= 1 and report.attempts == 2
    data = LeRobotDataset(tmp_path / "ds", action_horizon=4)
    assert len(data) == report.frames
    item = data[0]
    assert item["observation.images.rgb"].shape == (64, 64, 3)
    # The eye-in-hand camera is recorded beside the agent view, and it is a different view.
    wrist = item["observation.images.wrist_rgb"]
    assert wrist.shape == (64, 64, 3)
    assert (wrist.float() - item["observation.images.rgb"].float()).abs().mean() > 10
    assert "alphabet soup" in item["task"]
    saved = json.loads((tmp_path / "ds" / "meta" / "demos_report.json").read_text())
    assert saved["recorded_success"] == report.recorded_success
