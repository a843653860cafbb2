"""`vla-kd train` end to end on a tiny dataset: trains, saves a loadable policy, evaluates it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import requires_libero, requires_maniskill, run_cli

from vla_kd.data.lerobot_writer import LeRobotWriter


@pytest.fixture()
def tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    writer = LeRobotWriter(tmp_path / "ds", fps=20, robot_type="panda", cameras={"rgb": (128, 128)},
                           state_dim=25)
    for _ in range(2):
        writer.add_episode("push the cube to the red and white target",
                           rng.normal(size=(6, 25)).astype(np.float32),
                           rng.uniform(-0.3, 0.3, size=(6, 7)).astype(np.float32),
                           {"rgb": rng.integers(0, 255, size=(6, 128, 128, 3), dtype=np.uint8)})
    return writer.finalize()


def test_train_debug_saves_a_policy(tiny_dataset, tmp_path):
    out = tmp_path / "policy"
    proc = run_cli("train", f"dataset={tiny_dataset}", "trainer=debug", "tracker=none",
                   "model.hidden=32", f"output={out}", f"hydra.run.dir={tmp_path / 'run'}",
                   "trainer.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["samples"] == 32 and "losses/l1" in summary
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["policy_type"] == "chunked_bc"


@requires_maniskill
@pytest.mark.maniskill
@pytest.mark.slow
def test_trained_policy_folder_is_evaluable(tiny_dataset, tmp_path):
    out = tmp_path / "policy"
    proc = run_cli("train", f"dataset={tiny_dataset}", "trainer=debug", "tracker=none",
                   "model.hidden=32", f"output={out}", f"hydra.run.dir={tmp_path / 'run'}",
                   "eval.env=maniskill/PushCube-v1", "eval.episodes=1", "eval.max_episode_steps=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["eval/episodes"] == 1 and 0.0 <= summary["eval/success_rate"] <= 1.0
    # the held-out evaluation's whole document stays beside the summary, episode by episode
    kept = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert kept["success_rate"] == summary["eval/success_rate"] and len(kept["episode_results"]) == 1
    results = tmp_path / "eval.json"
    # no obs_mode=rgb needed: the folder's config says the model reads a camera
    proc = run_cli("eval", f"policy={out}", "env=maniskill/PushCube-v1",
                   "episodes_per_task=1", "max_episode_steps=5", "tracker=none",
                   f"output_json={results}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(results.read_text())["episodes"] == 1


@pytest.mark.slow
def test_two_runs_of_one_command_train_the_same_weights(tiny_dataset, tmp_path):
    """The initial weights are seeded from trainer.seed, not only the training steps."""
    from safetensors.torch import load_file

    weights = {}
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        proc = run_cli("train", f"dataset={tiny_dataset}", "trainer=debug", "tracker=none",
                       "model.hidden=32", f"trainer.seed={seed}", f"output={tmp_path / name}",
                       f"hydra.run.dir={tmp_path / 'run' / name}", "trainer.progress=false")
        assert proc.returncode == 0, proc.stderr[-3000:]
        weights[name] = load_file(tmp_path / name / "model.safetensors")
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_train_requires_a_dataset(tmp_path):
    proc = run_cli("train", "tracker=none", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "dataset" in proc.stderr and "Traceback" not in proc.stderr


def test_a_saved_camera_policy_asks_for_rgb_observations(tmp_path):
    from vla_kd.policies.loading import policy_observation
    from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy

    for use_image, expected in ((True, "rgb"), (False, None)):
        folder = tmp_path / f"image_{use_image}"
        ChunkedBCPolicy(ChunkedBCConfig(state_dim=4, image_size=64, use_image=use_image, hidden=16)
                        ).save_pretrained(folder)
        assert policy_observation(str(folder)) == (expected, False)
    assert policy_observation("random") == (None, False)
    from vla_kd.errors import UserError
    from vla_kd.policies.loading import build_policy

    with pytest.raises(UserError, match="RL student"):  # only PPO/RPD students sample actions
        build_policy(str(folder), None, sample_actions=True)


@pytest.mark.parametrize("model", [
    ["model=chunked_bc", "model.hidden=32"],
    ["model=token_vla", "model.hidden=32", "model.layers=1", "model.heads=2", "model.intermediate=64",
     "model.horizon=2"],
    ["model=diffusion_action_expert", "model.features=32", "model.hidden=64"],
], ids=["chunked_bc", "token_vla", "diffusion_action_expert"])
def test_train_with_the_auxiliary_privileged_head(tmp_path, model):
    rng = np.random.default_rng(0)
    writer = LeRobotWriter(tmp_path / "ds", fps=20, robot_type="panda", cameras={"rgb": (64, 64)},
                           state_dim=5, env_state_dim=3)
    for _ in range(2):
        writer.add_episode("pick up the cube", rng.normal(size=(6, 5)).astype(np.float32),
                           rng.uniform(-0.3, 0.3, size=(6, 7)).astype(np.float32),
                           {"rgb": rng.integers(0, 255, size=(6, 64, 64, 3), dtype=np.uint8)},
                           env_states=rng.normal(size=(6, 3)).astype(np.float32))
    dataset = writer.finalize()
    out = tmp_path / "policy"
    proc = run_cli("train", f"dataset={dataset}", "trainer=debug", "tracker=none", *model,
                   "model.aux_privileged_weight=1.0", f"output={out}", f"hydra.run.dir={tmp_path / 'run'}",
                   "trainer.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["losses/aux_privileged"] > 0
    assert json.loads((out / "config.json").read_text())["config"]["aux_state_dim"] == 3


def test_auxiliary_head_needs_privileged_state_in_the_dataset(tiny_dataset, tmp_path):
    proc = run_cli("train", f"dataset={tiny_dataset}", "trainer=debug", "tracker=none",
                   "model.aux_privileged_weight=1.0", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert "observation.environment_state" in proc.stderr


def test_a_two_camera_expert_trains_and_refuses_cameras_the_dataset_lacks(tmp_path):
    """Also: the proprio features it reads (``model.state_features``) are saved with it."""
    from vla_kd.policies.loading import policy_cameras

    rng = np.random.default_rng(0)
    frames = lambda: rng.integers(0, 255, size=(6, 64, 64, 3), dtype=np.uint8)  # noqa: E731
    writer = LeRobotWriter(tmp_path / "ds", fps=20, robot_type="panda",
                           cameras={"rgb": (64, 64), "wrist_rgb": (64, 64)}, state_dim=5)
    for _ in range(2):
        writer.add_episode("pick up the soup", rng.normal(size=(6, 5)).astype(np.float32),
                           rng.uniform(-0.3, 0.3, size=(6, 7)).astype(np.float32),
                           {"rgb": frames(), "wrist_rgb": frames()})
    dataset = writer.finalize()
    out = tmp_path / "policy"
    common = [f"dataset={dataset}", "trainer=debug", "tracker=none", "model=diffusion_action_expert",
              "model.features=32", "model.hidden=64", "trainer.progress=false"]
    proc = run_cli("train", *common, "model.cameras=[rgb,wrist_rgb]", "model.state_features=[0,1,2]",
                   f"output={out}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert policy_cameras(str(out)) == ("rgb", "wrist_rgb")
    assert json.loads((out / "config.json").read_text())["config"]["state_features"] == [0, 1, 2]
    proc = run_cli("train", *common, "model.cameras=[rgb,side]", f"hydra.run.dir={tmp_path / 'bad'}")
    assert proc.returncode != 0 and "the dataset has cameras ['rgb', 'wrist_rgb']" in proc.stderr


@requires_libero
@requires_maniskill
def test_evaluation_turns_on_the_wrist_camera_only_on_libero():
    from omegaconf import OmegaConf

    from vla_kd.envs.from_config import env_kwargs
    from vla_kd.errors import UserError

    cfg = OmegaConf.create({"libero": {"image_size": 128, "wrist_camera": False, "fast_render": True,
                                       "settle_steps": 10},
                            "maniskill": {"sim_backend": "cpu"}})
    assert env_kwargs(cfg, "libero/libero_object/0", "rgb", wrist_camera=True)["wrist_camera"] is True
    assert env_kwargs(cfg, "libero/libero_object/0", "rgb")["wrist_camera"] is False
    with pytest.raises(UserError, match="only LIBERO"):
        env_kwargs(cfg, "maniskill/PushCube-v1", "rgb", wrist_camera=True)


def test_state_features_outside_the_dataset_state_are_refused(tiny_dataset, tmp_path):
    proc = run_cli("train", f"dataset={tiny_dataset}", "trainer=debug", "tracker=none",
                   "model.state_features=[0,25]", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert "model.state_features=[0, 25]" in proc.stderr and "25-wide observation.state" in proc.stderr
