"""LeRobot v3.0 datasets: exact round trip of vectors, near-exact of video, chunks, errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.data.lerobot_writer import LeRobotWriter
from vla_kd.errors import UserError


def synthetic_episode(rng, length, shade):
    # Smooth images (gradients + a moving square) compress like simulator frames do.
    t = np.arange(length)[:, None, None]
    y, x = np.mgrid[0:32, 0:32]
    channels = [x * 6 + t * 2, y * 6, np.full_like(x, shade)]  # shade tells episodes apart
    frames = np.stack(np.broadcast_arrays(*channels), -1).astype(np.uint8)
    for i in range(length):
        frames[i, 10:16, (i % 20) : (i % 20) + 6] = 255
    return {
        "states": rng.normal(size=(length, 5)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(length, 7)).astype(np.float32),
        "env_states": rng.normal(size=(length, 3)).astype(np.float32),
        "images": {"rgb": frames},
        "successes": np.arange(length) == length - 1,
    }


@pytest.fixture()
def written(tmp_path):
    rng = np.random.default_rng(0)
    writer = LeRobotWriter(tmp_path / "ds", fps=20, robot_type="panda", cameras={"rgb": (32, 32)},
                           state_dim=5, env_state_dim=3)
    episodes = [synthetic_episode(rng, n, shade) for n, shade in ((6, 40), (9, 120), (4, 200))]
    tasks = ["push the cube", "pick the cube", "push the cube"]
    for episode, task in zip(episodes, tasks, strict=True):
        writer.add_episode(task, **episode)
    return writer.finalize(), episodes, tasks


def test_round_trip_is_exact_for_vectors_and_close_for_video(written):
    root, episodes, tasks = written
    ds = LeRobotDataset(root, action_horizon=1)
    assert len(ds) == 19 and ds.fps == 20
    np.testing.assert_array_equal(ds.states, np.concatenate([e["states"] for e in episodes]))
    np.testing.assert_array_equal(ds.actions, np.concatenate([e["actions"] for e in episodes]))
    np.testing.assert_array_equal(ds.env_states, np.concatenate([e["env_states"] for e in episodes]))
    original = np.concatenate([e["images"]["rgb"] for e in episodes]).astype(int)
    decoded = ds.images["observation.images.rgb"].astype(int)
    assert decoded.shape == original.shape
    # Video is lossy (yuv420p h264, CRF 18, as LeRobot stores it): check fidelity, not equality.
    psnr = 10 * np.log10(255**2 / np.mean((decoded - original) ** 2))
    assert psnr > 30, f"PSNR {psnr:.1f} dB"
    # Frames land in the right place: each decoded frame is closest to its own original.
    errors = np.abs(decoded[:, None] - original[None]).mean(axis=(2, 3, 4))
    assert (errors.argmin(axis=1) == np.arange(len(original))).all()
    assert [ds[i]["task"] for i in (0, 6, 15)] == tasks
    assert ds[7]["episode_index"] == 1 and ds[7]["frame_index"] == 1


def test_layout_matches_lerobot_v3(written):
    root, _, _ = written
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 19
    assert info["total_tasks"] == 2 and info["features"]["action"]["shape"] == [7]
    assert (root / "data" / "chunk-000" / "file-000.parquet").is_file()
    assert (root / "videos" / "observation.images.rgb" / "chunk-000" / "file-000.mp4").is_file()
    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    assert tasks.index.name == "task" and tasks.loc["pick the cube", "task_index"] == 1
    episodes = pd.read_parquet(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    assert episodes["length"].tolist() == [6, 9, 4]
    assert episodes["videos/observation.images.rgb/from_timestamp"].tolist() == [0.0, 0.3, 0.75]
    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert np.array(stats["observation.images.rgb"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [19] and len(stats["observation.state"]["std"]) == 5
    assert not (root.parent / "ds.partial").exists()


def test_action_chunks_stop_at_episode_end(written):
    root, episodes, _ = written
    ds = LeRobotDataset(root, action_horizon=4, load_images=False)
    item = ds[3]  # frames 3..5 are left in episode 0 (length 6)
    np.testing.assert_array_equal(item["action"][:3].numpy(), episodes[0]["actions"][3:6])
    np.testing.assert_array_equal(item["action"][3].numpy(), episodes[0]["actions"][5])
    assert item["action_is_pad"].tolist() == [False, False, False, True]
    assert ds[6]["action_is_pad"].tolist() == [False] * 4


def test_stats_match_the_data(written):
    root, episodes, _ = written
    ds = LeRobotDataset(root, load_images=False)
    stats = ds.feature_stats("action")
    actions = np.concatenate([e["actions"] for e in episodes])
    np.testing.assert_allclose(stats["mean"], actions.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], actions.std(0), rtol=1e-5)


def test_clear_errors_for_missing_or_corrupt_datasets(written, tmp_path):
    root, _, _ = written
    with pytest.raises(UserError, match=r"meta/info\.json is missing"):
        LeRobotDataset(tmp_path / "nothing")
    (root / "meta" / "stats.json").write_text("{broken")
    with pytest.raises(UserError, match="corrupt"):
        LeRobotDataset(root)


def test_writer_refuses_to_overwrite_and_checks_shapes(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(UserError, match="already exists"):
        LeRobotWriter(tmp_path / "exists", 20, "panda", {}, state_dim=2)
    writer = LeRobotWriter(tmp_path / "new", 20, "panda", {"rgb": (8, 8)}, state_dim=2)
    with pytest.raises(ValueError, match="frames"):
        writer.add_episode("t", np.zeros((3, 2)), np.zeros((3, 7)), {"rgb": np.zeros((3, 4, 4, 3))})
