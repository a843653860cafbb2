"""The env contract on every listed ManiSkill3 task (CPU physics)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import requires_maniskill

pytestmark = [requires_maniskill, pytest.mark.maniskill]

TASKS = [
    "PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1", "LiftPegUpright-v1",
    "PushT-v1", "PegInsertionSide-v1", "PlugCharger-v1", "RollBall-v1", "PlaceSphere-v1",
]


def assert_contract(env, obs, info):
    assert set(obs) <= {"rgb", "wrist_rgb", "state", "privileged"} and "state" in obs
    assert env.observation_space.contains(obs)
    assert obs["state"].dtype == np.float32 and obs["state"].ndim == 1
    if "rgb" in obs:
        assert obs["rgb"].dtype == np.uint8 and obs["rgb"].shape[-1] == 3
    assert env.action_space.shape == (7,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert isinstance(info["success"], bool)
    assert isinstance(info["instruction"], str) and info["instruction"] == env.instruction


@pytest.mark.parametrize("task", TASKS)
def test_state_contract(task):
    from gymnasium.utils.env_checker import check_env

    from vla_kd.envs import make_env

    env = make_env(f"maniskill/{task}", obs_mode="state")
    try:
        check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=7)
        assert_contract(env, obs, info)
        again, _ = env.reset(seed=7)
        assert all(np.array_equal(obs[k], again[k]) for k in obs)
        other, _ = env.reset(seed=8)
        assert not np.array_equal(obs["privileged"], other["privileged"]) or not np.array_equal(
            obs["state"], other["state"]
        ), "different seeds should give different initial scenes"
        env.action_space.seed(0)
        for _ in range(5):
            obs, reward, terminated, _, info = env.step(env.action_space.sample())
            assert_contract(env, obs, info)
            assert isinstance(reward, float) and isinstance(terminated, bool)
    finally:
        env.close()


def test_privileged_poses_never_leak_into_state():
    from vla_kd.envs import make_env

    env = make_env("maniskill/PushCube-v1", obs_mode="state")
    try:
        assert "obj_pose" in env.layout["privileged"]
        assert "obj_pose" not in env.layout["state"]
        assert {"qpos", "qvel", "tcp_pose"} <= set(env.layout["state"])
    finally:
        env.close()


def test_rgb_contract_at_128px():
    from gymnasium.utils.env_checker import check_env

    from vla_kd.envs import make_env

    env = make_env("maniskill/PickCube-v1", obs_mode="rgb")
    try:
        check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=1)
        assert obs["rgb"].shape == (128, 128, 3) and "privileged" not in obs
        assert_contract(env, obs, info)
        assert obs["rgb"].std() > 5, "the camera should see a scene, not a blank frame"
    finally:
        env.close()


def test_vector_env_runs_workers_in_parallel_processes():
    from vla_kd.envs import make_vector_env

    envs = make_vector_env("maniskill/PushCube-v1", num_envs=2, obs_mode="state")
    try:
        obs, info = envs.reset(seed=[3, 4])
        assert obs["state"].shape[0] == 2 and obs["state"].dtype == np.float32
        assert not np.array_equal(obs["privileged"][0], obs["privileged"][1])
        actions = np.zeros((2, 7), np.float32)
        obs, reward, _, _, info = envs.step(actions)
        assert reward.shape == (2,) and info["success"].shape == (2,)
    finally:
        envs.close()


def test_batched_env_matches_the_single_env_contract():
    """The GPU-batched path, run with one env on CPU physics, gives the single env's numbers."""
    import torch

    from vla_kd.envs import make_env
    from vla_kd.envs.maniskill_gpu import ManiSkillBatchedEnv

    single = make_env("maniskill/PushCube-v1", obs_mode="state")
    try:
        expected, _ = single.reset(seed=11)
        layout = single.layout
    finally:
        single.close()
    batched = ManiSkillBatchedEnv(
        "PushCube-v1", num_envs=1, obs_mode="state", sim_backend="cpu", render_backend="cpu"
    )
    try:
        obs, _ = batched.reset(seed=11)
        for key in ("state", "privileged"):
            assert obs[key].shape == (1, *expected[key].shape) and obs[key].dtype == torch.float32
            np.testing.assert_allclose(obs[key][0].cpu().numpy(), expected[key], atol=1e-6)
        assert batched.single_observation_space["state"].shape == expected["state"].shape
        obs, reward, _, _, info = batched.step(torch.zeros(1, 7))
        assert reward.shape == (1,) and info["success"].shape == (1,)
        assert obs["state"].shape[1] == max(part.stop for part in layout["state"].values())
    finally:
        batched.close()


def test_episodes_after_a_seeded_reset_repeat_from_run_to_run():
    """An RL worker seeds its first reset only; the episodes after it must repeat too."""
    import torch

    from vla_kd.envs import make_env

    def initial_poses(torch_seed):
        torch.manual_seed(torch_seed)  # the process's global RNG must not matter
        env = make_env("maniskill/PushCube-v1", obs_mode="state", include_privileged=True)
        try:
            first = env.reset(seed=5)[0]["privileged"]
            return [first] + [env.reset()[0]["privileged"] for _ in range(3)]
        finally:
            env.close()

    one, two = initial_poses(0), initial_poses(1)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(one[1], one[2])  # still a new episode at every reset


def test_the_gpu_sim_refuses_to_start_without_the_physx_gpu_library(tmp_path, monkeypatch):
    """SAPIEN would download the library from GitHub at first GPU use; the suite says what to
    fetch instead, before any simulator starts."""
    from vla_kd.envs.maniskill_gpu import ManiSkillBatchedEnv, check_physx_gpu_library, physx_gpu_library
    from vla_kd.errors import UserError

    monkeypatch.setenv("HOME", str(tmp_path))
    library = physx_gpu_library()
    assert library.is_relative_to(tmp_path)
    with pytest.raises(UserError, match=r"libPhysXGpu_64\.so") as error:
        ManiSkillBatchedEnv("PushCube-v1", num_envs=4, sim_backend="physx_cuda")
    assert "linux-so.zip" in str(error.value) and str(library.parent) in str(error.value)
    check_physx_gpu_library("cpu")  # the CPU sim needs no such library
    library.parent.mkdir(parents=True)
    library.write_bytes(b"")
    check_physx_gpu_library("physx_cuda")  # present: nothing to refuse
