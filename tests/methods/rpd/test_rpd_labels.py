"""RPD's teacher labels without a simulator: cached labels equal direct teacher calls, chunked
and stateful teachers are replayed on their own schedule, chunk labels are predicted per state."""

from __future__ import annotations

import numpy as np
import pytest

from vla_kd.errors import UserError
from vla_kd.methods.rpd.labels import label_rollout

pytest.importorskip("stable_baselines3")

from rl_toys import CountingExpert, tiny_vla


def rollout_observations(n_steps=3, n_envs=2, seed=0):
    """What SB3's buffer holds: float32 arrays, images channel-first."""
    rng = np.random.default_rng(seed)
    return {
        "rgb": rng.integers(0, 256, size=(n_steps, n_envs, 3, 64, 64)).astype(np.float32),
        "state": rng.normal(size=(n_steps, n_envs, 5)).astype(np.float32),
    }


def contract_step(obs, t, rows=slice(None)):
    return {
        "rgb": np.moveaxis(obs["rgb"][t][rows], 1, -1).astype(np.uint8),
        "state": obs["state"][t][rows],
        "instruction": ["push the cube"] * len(obs["state"][t][rows]),
    }


def test_cached_labels_of_a_one_step_teacher_equal_direct_calls():
    teacher = tiny_vla()
    teacher.n_action_steps = 1  # re-plans every step: stateless, labelled in flat batches
    obs = rollout_observations()
    labels = label_rollout(teacher, obs, np.zeros((3, 2), bool), "push the cube", batch_size=4)
    assert labels.shape == (3, 2, 7)
    for t in range(3):
        direct = teacher.predict_action_chunk(contract_step(obs, t))[:, 0]
        np.testing.assert_allclose(labels[t], direct, atol=1e-6)


def test_chunked_teacher_labels_follow_its_own_chunk_schedule_per_env():
    teacher = tiny_vla()  # horizon 2: predicts at t = 0, 2, ... unless an episode restarts
    obs = rollout_observations(n_steps=4)
    starts = np.array([[1, 1], [0, 1], [0, 0], [0, 0]], bool)  # env 1 restarts at t = 1
    labels = label_rollout(teacher, obs, starts, "push the cube")
    chunk_t0 = teacher.predict_action_chunk(contract_step(obs, 0))
    np.testing.assert_allclose(labels[0], chunk_t0[:, 0], atol=1e-6)
    np.testing.assert_allclose(labels[1, 0], chunk_t0[0, 1], atol=1e-6)  # env 0 continues its chunk
    chunk_env1_t1 = teacher.predict_action_chunk(contract_step(obs, 1, [1]))
    np.testing.assert_allclose(labels[1, 1], chunk_env1_t1[0, 0], atol=1e-6)  # env 1 re-predicts
    np.testing.assert_allclose(
        labels[2, 0], teacher.predict_action_chunk(contract_step(obs, 2, [0]))[0, 0], atol=1e-6
    )
    np.testing.assert_allclose(labels[2, 1], chunk_env1_t1[0, 1], atol=1e-6)


def test_teacher_action_steps_sets_the_labels_chunk_and_the_camera_period(tmp_path):
    from omegaconf import OmegaConf

    from vla_kd.methods.rpd.training_envs import camera_period, load_teacher

    folder = tiny_vla().save_pretrained(tmp_path / "teacher")
    task = "maniskill/PushCube-v1"  # a saved folder loads without building the task's env
    whole = load_teacher(str(folder), task, OmegaConf.create({"teacher_action_steps": None}))
    fresh = load_teacher(str(folder), task, OmegaConf.create({"teacher_action_steps": 1}))
    assert whole.actions_per_chunk == 2 and camera_period(whole, ("state",)) == 2
    assert fresh.actions_per_chunk == 1 and camera_period(fresh, ("state",)) == 1
    obs = rollout_observations(n_steps=2)
    labels = label_rollout(fresh, obs, np.zeros((2, 2), bool), "push the cube")
    direct = fresh.predict_action_chunk(contract_step(obs, 1))[:, 0]  # step 1: predicted afresh
    np.testing.assert_allclose(labels[1], direct, atol=1e-6)


def test_stateful_teacher_is_replayed_in_time_order_with_episode_resets():
    starts = np.array([[1, 1], [0, 0], [0, 1], [1, 0]], bool)
    obs = {"state": np.zeros((4, 2, 3), np.float32)}
    labels = label_rollout(CountingExpert(), obs, starts, "x")
    np.testing.assert_array_equal(labels[:, :, 0], [[1, 1], [2, 2], [3, 1], [1, 2]])


def test_a_teacher_that_cannot_reset_single_envs_is_refused():
    class Memoryful:
        name = "memoryful"

        def act(self, obs):
            return np.zeros((len(obs["state"]), 7), np.float32)

    with pytest.raises(UserError, match="cannot reset single envs"):
        label_rollout(Memoryful(), {"state": np.zeros((1, 1, 3), np.float32)}, np.ones((1, 1), bool), "x")



def test_a_chunked_teacher_never_predicts_from_a_skipped_camera_frame():
    teacher = tiny_vla()  # horizon 2: looks at the camera at episode steps 0, 2, ...
    obs = rollout_observations(n_steps=4)
    starts = np.array([[1, 1], [0, 0], [0, 0], [0, 0]], bool)
    obs["rgb_fresh"] = np.array([[1, 1], [0, 0], [1, 1], [0, 0]], np.float32)[..., None]
    label_rollout(teacher, obs, starts, "push the cube")  # in step with the chunks: fine
    obs["rgb_fresh"][2, 1] = 0.0
    with pytest.raises(RuntimeError, match="skipped camera frame"):
        label_rollout(tiny_vla(), obs, starts, "push the cube")



def test_chunk_labels_are_the_teachers_chunks_predicted_from_each_state():
    teacher = tiny_vla()  # horizon 2
    obs = rollout_observations(n_steps=3)
    starts = np.array([[1, 1], [0, 0], [0, 1]], bool)
    labels = label_rollout(teacher, obs, starts, "push the cube", batch_size=4, chunk=2)
    assert labels.shape == (3, 2, 14)
    for t in range(3):  # every stored state is a decision point: no replay, no memory
        direct = teacher.predict_action_chunk(contract_step(obs, t))
        np.testing.assert_allclose(labels[t], direct.reshape(2, 14), atol=1e-6)
    with pytest.raises(UserError, match="chunks of at least 3"):
        label_rollout(teacher, obs, starts, "push the cube", chunk=3)
    with pytest.raises(UserError, match="chunks of at least 2"):
        label_rollout(CountingExpert(), {"state": np.zeros((1, 1, 3))}, starts[:1, :1], "x", chunk=2)
    obs["rgb_fresh"] = np.ones((3, 2, 1), np.float32)
    obs["rgb_fresh"][1, 0] = 0.0
    with pytest.raises(RuntimeError, match="skipped camera frame"):
        label_rollout(teacher, obs, starts, "push the cube", chunk=2)
