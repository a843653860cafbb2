"""experiments/align_probe.py: its ridge probe scores a linear read-out near 1 and noise near 0, and
it reads the aligned VLA's features exactly as the model computes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import load_experiment, tiny_align_parts

from vla_kd.data.lerobot_dataset import LeRobotDataset

pytest.importorskip("sklearn")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")


def test_probe_r2_finds_a_linear_read_out_and_not_noise():
    probe = load_experiment("align_probe")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12))
    fit = np.arange(400) < 300
    readable = x[:, :3] @ rng.normal(size=(3, 2))
    assert probe.probe_r2(x, readable, fit) > 0.99
    assert probe.probe_r2(x, rng.normal(size=(400, 2)), fit) < 0.1
    assert probe.parse_target("cube to goal=10:13") == ("cube to goal", slice(10, 13))


def test_probe_reads_the_models_features_and_reports_every_probe(tiny_datasets, tmp_path, monkeypatch):
    from vla_kd.policies.aligned_vla import AlignedVLA

    dataset = LeRobotDataset(tiny_datasets(episodes=4, frames=6, env_state_dim=4), action_horizon=2)
    vlm, expert = tiny_align_parts(dataset)
    model = AlignedVLA.from_parts(vlm, expert, [3, 2], mapper_hidden=24).eval()
    skip = AlignedVLA.from_parts(vlm, expert, [3, 2], mapper_hidden=24, state_skip=True).eval()
    probe = load_experiment("align_probe")
    rows = np.arange(len(dataset))
    features = probe.probe_features(dataset, expert, {"tiny": model, "skip": skip}, rows, batch_size=7)

    batch = torch.utils.data.default_collate([dataset[i] for i in range(3)])
    with torch.no_grad():
        state = batch["observation.state"]
        direct = model.features(model.vlm.camera_input(batch), state, list(batch["task"]))
        expert_direct = expert.encoder(batch["observation.images.rgb"], state)
        direct_skip = skip.features(skip.vlm.camera_input(batch), state, list(batch["task"]))
    np.testing.assert_allclose(features["tiny: m"][:3], direct.numpy(), rtol=1e-5, atol=1e-6)
    # with the state skip, m is still the model's own features and h the action token's state alone
    np.testing.assert_allclose(features["skip: m"][:3], direct_skip.numpy(), rtol=1e-5, atol=1e-6)
    assert features["skip: h"].shape == (len(dataset), vlm.config.hidden)
    np.testing.assert_allclose(features["expert e"][:3], expert_direct.numpy(), rtol=1e-5, atol=1e-6)
    assert features["tiny: h"].shape == (len(dataset), vlm.config.hidden)
    assert features["environment_state"].shape == (len(dataset), 4)

    result = probe.probe_table(features, ["tiny"], ["a=0:2", "b=2:4"], probe_train_episodes=3)
    assert set(result["r2"]) == {"expert e", "tiny: h", "tiny: m"}
    assert set(result["r2"]["tiny: m"]) == {"a", "b"}
    expected = float(((features["tiny: m"] - features["expert e"]) ** 2).mean())
    assert result["l2"]["tiny"]["l2"] == pytest.approx(expected)
    assert "| tiny: m |" in probe.markdown(result)
    with pytest.raises(SystemExit):
        probe.probe_table(features, ["tiny"], ["a=0:2"], probe_train_episodes=99)

    # the command line: folders of the wrong kind are refused; the right ones write the report
    expert_dir = expert.save_pretrained(tmp_path / "expert")
    aligned_dir = model.save_pretrained(tmp_path / "aligned")
    base = ["align_probe", "--dataset", str(dataset.root), "--probe-train-episodes", "3",
            "--target", "a=0:2", "--out", str(tmp_path / "out")]
    monkeypatch.setattr("sys.argv", [*base, "--expert", str(aligned_dir), "--aligned", str(aligned_dir)])
    with pytest.raises(SystemExit, match="not an action expert"):
        probe.main()
    monkeypatch.setattr("sys.argv", [*base, "--expert", str(expert_dir), "--aligned", str(expert_dir)])
    with pytest.raises(SystemExit, match="not an aligned VLA"):
        probe.main()
    monkeypatch.setattr("sys.argv", [*base, "--expert", str(expert_dir), "--aligned", str(aligned_dir)])
    probe.main()
    assert f"| {aligned_dir}: m |" in (tmp_path / "out" / "probe.md").read_text()
