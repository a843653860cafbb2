"""Tactile distillation (HapticVLA): the reward weights by hand, the flow sampler, the teacher's
and the student's save/load, that their losses fall, that the student never reads touch, and the
three stages through `vla-kd train`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import error_lines, run_cli

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.errors import UserError
from vla_kd.methods.tactile.config import TactileConfig
from vla_kd.methods.tactile.objectives import (
    RewardWeightedFlow,
    TactileTokenAlignment,
    TactileTokenBC,
    WeightedTokenBC,
)
from vla_kd.methods.tactile.rewards import (
    FrameWeights,
    RewardSettings,
    reward_weights,
    tactile_rewards,
)
from vla_kd.nn.flow_matching import euler_sample, flow_point
from vla_kd.policies.loading import load_policy
from vla_kd.policies.tactile_expert import TactileExpertConfig, TactileFlowExpert
from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

SETTINGS = RewardSettings(force_limit=10.0, spike_limit=4.0, contact_force=0.5, slip_weight=2.0,
                          temperature=1.0, min_weight=0.05)


def test_reward_weights_against_hand_computed_values():
    # [left, right, left change, right change, grasped]; two episodes of 3 and 2 frames
    touch = np.array([
        [0.0, 0.0, 0.0, 0.0, 0.0],    # no contact
        [14.0, 10.0, 14.0, 10.0, 1.0],  # grasp 12 N (excess 0.2), change 12 (spike 2.0)
        [12.0, 12.0, -2.0, 2.0, 1.0],   # grasp 12 N (excess 0.2), change 0
        [3.0, 0.0, 3.0, 0.0, 0.0],      # one finger touches, no grasp: slip
        [0.0, 0.0, -3.0, 0.0, 0.0],     # nothing
    ], np.float32)
    episodes = np.array([0, 0, 0, 1, 1])
    reward, terms = tactile_rewards(touch, episodes, horizon=2, settings=SETTINGS)
    # windows (horizon 2, not crossing the episode's end): {0,1} {1,2} {2} {3,4} {4}
    assert terms["excess"] == pytest.approx([0.1, 0.2, 0.2, 0.0, 0.0])
    assert terms["spike"] == pytest.approx([1.0, 1.0, 0.0, 0.0, 0.0])
    assert terms["slip"] == pytest.approx([0.0, 0.0, 0.0, 0.5, 0.0])
    assert reward == pytest.approx([-1.1, -1.2, -0.2, -1.0, 0.0])
    raw = np.maximum(np.exp(np.array([-1.1, -1.2, -0.2, -1.0, 0.0])), 0.05)
    weights = reward_weights(reward, SETTINGS)
    assert weights == pytest.approx(raw / raw.mean())
    assert weights.mean() == pytest.approx(1.0)
    floored = reward_weights(np.array([-100.0, 0.0]), SETTINGS)
    assert floored == pytest.approx(np.array([0.05, 1.0]) / 0.525)


def test_frame_weights_follow_episode_and_frame():
    episodes, frames = np.array([0, 0, 0, 2, 2]), np.array([0, 1, 2, 0, 1])
    lookup = FrameWeights(np.arange(5.0), episodes, frames)
    batch = {"episode_index": torch.tensor([2, 0, 2]), "frame_index": torch.tensor([1, 2, 0])}
    assert lookup.of(batch).tolist() == [4.0, 2.0, 3.0]


def test_flow_points_and_the_euler_sampler():
    clean, noise = torch.randn(4, 3, 2), torch.randn(4, 3, 2)
    ends = flow_point(clean, 1000, noise, torch.tensor([0.0, 1.0, 0.5, 0.25]))
    assert torch.allclose(ends.noisy[0], clean[0]) and torch.allclose(ends.noisy[1], noise[1])
    assert torch.allclose(ends.velocity, noise - clean) and ends.timestep.tolist() == [0, 1000, 500, 250]
    # the exact velocity field of a single target c is (x - c) / sigma: Euler steps land on c
    target = torch.tensor([[0.3, -0.7]])
    sample = euler_sample(lambda x, t: (x - target) / (t.view(-1, 1) / 1000), (5, 2), steps=4,
                          time_scale=1000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sample, target.expand(5, 2), atol=1e-4)


def test_a_clean_chunk_predictor_samples_through_its_velocity():
    """prediction_type=sample: a decoder that always predicts the chunk c samples c."""
    config = TactileExpertConfig(state_dim=5, horizon=2, image_size=64, features=16, hidden=32,
                                 inference_steps=4, prediction_type="sample")
    decoder = TactileFlowExpert(config).decoder
    target = torch.linspace(-0.5, 0.5, 14).view(1, 2, 7)
    for layer in decoder.net:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    with torch.no_grad():
        decoder.net[-1].bias.copy_(target.flatten())
    sample = decoder.sample(torch.zeros(3, 16), torch.Generator().manual_seed(0))
    assert torch.allclose(sample, target.expand(3, 2, 7), atol=1e-5)
    with pytest.raises(ValueError, match="prediction_type"):
        TactileFlowExpert(TactileExpertConfig(state_dim=5, prediction_type="epsilon"))


def tiny_teacher(
    dataset: LeRobotDataset, seed: int = 0, prediction_type: str = "velocity"
) -> TactileFlowExpert:
    torch.manual_seed(seed)
    teacher = TactileFlowExpert(TactileExpertConfig(
        state_dim=5, horizon=2, image_size=64, features=16, hidden=32, inference_steps=3,
        tactile_token_dim=8, prediction_type=prediction_type))
    teacher.set_normalization(dataset.feature_stats("observation.state"), dataset.feature_stats("action"),
                              dataset.feature_stats("observation.tactile"))
    return teacher


def observation(dataset: LeRobotDataset, rows, tactile: bool) -> dict:
    obs = {"rgb": dataset.images["observation.images.rgb"][rows], "state": dataset.states[rows],
           "instruction": ["push the cube"] * len(rows)}
    return {**obs, "tactile": dataset.tactile[rows]} if tactile else obs


def batch_of(dataset: LeRobotDataset, rows) -> dict:
    return torch.utils.data.default_collate([dataset[i] for i in rows])


def fit(method, batch: dict, steps: int, lr: float) -> tuple[float, float]:
    optimiser = torch.optim.Adam(method.parameters(), lr=lr)
    first = last = None
    for step in range(steps):
        torch.manual_seed(step % 4)  # the same few noise draws, so the loss curve is comparable
        loss, _ = method.loss(batch, step)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first = float(loss.detach()) if first is None else first
        last = float(loss.detach())
    return first, last


@pytest.mark.parametrize("prediction_type", ["velocity", "sample"])
def test_the_teacher_reads_touch_learns_and_round_trips(tiny_datasets, tmp_path, prediction_type):
    dataset = LeRobotDataset(tiny_datasets(tactile=True, episodes=2), action_horizon=2)
    teacher = tiny_teacher(dataset, prediction_type=prediction_type).train()
    weights = FrameWeights(np.ones(len(dataset)), dataset.episode_index, dataset.frame_index)
    method = RewardWeightedFlow(teacher, weights, shift_pad=0)
    first, last = fit(method, batch_of(dataset, range(8)), 60, 3e-3)
    assert last < 0.5 * first
    teacher.eval()
    rows = [0, 3]
    with pytest.raises(UserError, match="tactile"):
        teacher.predict_action_chunk(observation(dataset, rows, tactile=False))
    chunk = teacher.predict_action_chunk(observation(dataset, rows, tactile=True))
    assert chunk.shape == (2, 2, 7) and np.abs(chunk).max() <= 1
    teacher.sample_seed = 0
    teacher.save_pretrained(tmp_path / "teacher")
    loaded = load_policy(str(tmp_path / "teacher"), "tactile_flow_expert")
    assert np.array_equal(loaded.predict_action_chunk(observation(dataset, rows, tactile=True)), chunk)
    # the token depends on touch: other forces, another token
    touch = torch.as_tensor(dataset.tactile[:2])
    assert not torch.allclose(teacher.tactile_token(touch), teacher.tactile_token(touch.flip(0)))


def test_a_weighted_row_counts_by_its_weight(tiny_datasets):
    """On one batch and noise draw, the loss is the weights' mean of the rows' losses."""
    dataset = LeRobotDataset(tiny_datasets(tactile=True, episodes=2), action_horizon=2)
    teacher = tiny_teacher(dataset).eval()
    batch = batch_of(dataset, [0, 1])

    def loss_with(first: float, second: float) -> float:
        weights = np.ones(len(dataset))
        weights[:2] = first, second
        torch.manual_seed(0)
        lookup = FrameWeights(weights, dataset.episode_index, dataset.frame_index)
        return float(RewardWeightedFlow(teacher, lookup, shift_pad=0).loss(batch, 0)[0].detach())

    first, second, both = loss_with(1.0, 0.0), loss_with(0.0, 1.0), loss_with(1.0, 1.0)
    assert first != pytest.approx(second)
    assert both == pytest.approx((first + second) / 2)
    assert loss_with(3.0, 1.0) == pytest.approx((3 * first + second) / 4)


def tiny_student(dataset: LeRobotDataset, token_dim: int) -> TokenVLA:
    torch.manual_seed(0)
    student = TokenVLA(TokenVLAConfig(state_dim=5, horizon=2, image_size=64, hidden=32, layers=2, heads=2,
                                      intermediate=64, tactile_token_dim=token_dim))
    student.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
    return student


def test_the_student_predicts_the_token_without_touch(tiny_datasets, tmp_path):
    dataset = LeRobotDataset(tiny_datasets(tactile=True, episodes=2), action_horizon=2)
    teacher = tiny_teacher(dataset).eval()
    student = tiny_student(dataset, token_dim=8)
    assert student.prefix_length == tiny_student(dataset, token_dim=0).prefix_length + 1
    batch = batch_of(dataset, range(8))
    first, last = fit(TactileTokenAlignment(student.train(), teacher, shift_pad=0), batch, 60, 3e-3)
    assert last < 0.5 * first
    trunk = {k: v.clone() for k, v in student.trunk.state_dict().items()}
    _, logs = TactileTokenBC(student, teacher, token_weight=1.0, shift_pad=0).loss(batch, 0)
    assert {"losses/token_ce", "losses/tactile_token_mse"} <= set(logs)
    assert all(torch.equal(v, student.trunk.state_dict()[k]) for k, v in trunk.items())
    student.eval()
    rows = [0, 5]
    chunk = student.predict_action_chunk(observation(dataset, rows, tactile=False))  # no touch at inference
    assert chunk.shape == (2, 2, 7)
    student.save_pretrained(tmp_path / "student")
    loaded = load_policy(str(tmp_path / "student"), "token_vla")
    assert loaded.config.tactile_token_dim == 8
    assert np.array_equal(loaded.predict_action_chunk(observation(dataset, rows, tactile=False)), chunk)


def test_an_hf_vla_student_learns_the_token_and_acts_without_touch(tiny_datasets, tmp_path):
    from vla_kd.policies.hf_vla import HFVLA, HFVLAConfig
    from vla_kd.policies.vlm_maker import VLMSpec, make_vlm

    dataset = LeRobotDataset(tiny_datasets(tactile=True, episodes=2), action_horizon=2)
    teacher = tiny_teacher(dataset).eval()
    folder = make_vlm(tmp_path / "vlm", VLMSpec(architecture="idefics3", image_size=64, hidden=64,
                                                 vision_hidden=64, heads=2, kv_heads=1, vision_heads=2))
    torch.manual_seed(0)
    student = HFVLA.from_checkpoint(folder, HFVLAConfig(state_dim=5, horizon=2, image_size=64,
                                                        tactile_token_dim=teacher.config.tactile_token_dim))
    student.set_normalization(dataset.feature_stats("observation.state"), dataset.actions, dataset.states)
    batch = batch_of(dataset, range(8))
    first, last = fit(TactileTokenAlignment(student.train(), teacher, shift_pad=0), batch, 40, 3e-3)
    assert last < 0.5 * first
    _, logs = TactileTokenBC(student, teacher, token_weight=1.0, shift_pad=0).loss(batch, 0)
    assert {"losses/token_ce", "losses/tactile_token_mse"} <= set(logs)
    chunk = student.eval().predict_action_chunk(observation(dataset, [0, 5], tactile=False))
    assert chunk.shape == (2, 2, 7)


def test_weighted_token_bc_counts_rows_by_their_weights(tiny_datasets):
    """A row of weight 0 drops out: the loss on two rows weighted (1, 0) is the loss on the first."""
    dataset = LeRobotDataset(tiny_datasets(tactile=True, episodes=2), action_horizon=2)
    student = tiny_student(dataset, token_dim=0).eval()
    exact = {"shift_pad": 0, "state_noise": 0.0, "token_corruption": 0.0}
    weights = np.ones(len(dataset))
    weights[1] = 0.0
    lookup = FrameWeights(weights, dataset.episode_index, dataset.frame_index)
    with torch.no_grad():
        both = WeightedTokenBC(student, lookup, **exact).loss(batch_of(dataset, [0, 1]), 0)[0]
        first = WeightedTokenBC(student, None, **exact).loss(batch_of(dataset, [0]), 0)[0]
        unweighted = WeightedTokenBC(student, None, **exact).loss(batch_of(dataset, [0, 1]), 0)[0]
    assert float(both) == pytest.approx(float(first), rel=1e-5)
    assert abs(float(unweighted) - float(first)) > 1e-3  # the second row does count unweighted


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="stage"):
        TactileConfig(stage="tactile")
    with pytest.raises(ValueError, match="force_limit"):
        TactileConfig(force_limit=0.0)


def test_the_three_stages_through_vla_kd_train(tiny_datasets, tmp_path):
    data = tiny_datasets(tactile=True, episodes=2)
    common = ("trainer=debug", "tracker=none", "trainer.progress=false", f"dataset={data}")
    teacher = tmp_path / "teacher"
    proc = run_cli("train", "method=tactile", "method.stage=teacher", "model=tactile_flow_expert",
                   "model.features=16", "model.hidden=32", *common, f"hydra.run.dir={teacher}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((teacher / "train_summary.json").read_text())
    assert summary["reward_weighting"]["weight_max"] >= 1.0 >= summary["reward_weighting"]["weight_min"]
    small_vla = ("model=token_vla", "model.hidden=32", "model.layers=1", "model.heads=2",
                 "model.intermediate=64")
    for stage in ("student", "baseline"):
        run = tmp_path / stage
        proc = run_cli("train", "method=tactile", f"method.stage={stage}", "method.stage1_steps=2",
                       f"teacher={teacher / 'policy'}", *small_vla, *common, f"hydra.run.dir={run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        config = json.loads((run / "policy" / "config.json").read_text())["config"]
        assert config["tactile_token_dim"] == (32 if stage == "student" else 0)
        assert json.loads((run / "train_summary.json").read_text())["steps"] == 2 + 4
    # the hf_vla student: a small VLM built here
    from vla_kd.policies.vlm_maker import VLMSpec, make_vlm

    vlm = make_vlm(tmp_path / "vlm", VLMSpec(architecture="idefics3", image_size=64, hidden=64,
                                              vision_hidden=64, heads=2, kv_heads=1, vision_heads=2))
    run = tmp_path / "hf_student"
    proc = run_cli("train", "method=tactile", "method.stage=student", "method.stage1_steps=2",
                   f"teacher={teacher / 'policy'}", "model=hf_vla", f"model.checkpoint={vlm}", *common,
                   f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "policy" / "config.json").read_text())["config"]["tactile_token_dim"] == 32
    plain = tiny_datasets(episodes=2)
    proc = run_cli("train", "method=tactile", "method.stage=teacher", "model=tactile_flow_expert",
                   "trainer=debug", "tracker=none", f"dataset={plain}",
                   f"hydra.run.dir={tmp_path / 'no_touch'}")
    assert proc.returncode != 0 and any("tactile=true" in line for line in error_lines(proc))
