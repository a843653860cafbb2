"""Touch in ManiSkill: on a scripted PickCube grasp the tactile vector is the simulator's own
pairwise contact query, the grasp flag its own grasp test, the change a step's difference; the
evaluator reports every policy's grasp force; a student evaluated without the key runs."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import requires_maniskill

from vla_kd.envs.tactile import TACTILE_DIM, episode_forces, force_summary, grasp_force

pytestmark = [requires_maniskill, pytest.mark.maniskill]


def simulator_forces(env) -> np.ndarray:
    """The simulator's own query, outside the wrapper: finger-cube force magnitudes (N)."""
    base = env.unwrapped._base
    fingers = (base.agent.finger1_link, base.agent.finger2_link)
    return np.array([np.linalg.norm(base.scene.get_pairwise_contact_forces(f, base.cube)[0].cpu().numpy())
                     for f in fingers])


def test_scripted_grasp_reads_the_simulators_contact_forces():
    from vla_kd.envs import make_env
    from vla_kd.policies.base import add_batch_dim
    from vla_kd.policies.scripted_maniskill import maniskill_expert_for

    env = make_env("maniskill/PickCube-v1", obs_mode="state", tactile=True, max_episode_steps=60)
    try:
        assert env.observation_space["tactile"].shape == (TACTILE_DIM,)
        expert = maniskill_expert_for(env)
        obs, info = env.reset(seed=3)
        assert np.array_equal(obs["tactile"], np.zeros(TACTILE_DIM, np.float32))
        expert.reset()
        previous, grasped_steps, touching_steps = np.zeros(2), 0, 0
        for _ in range(60):
            obs, _, _, _, info = env.step(expert.act(add_batch_dim(obs))[0])
            tactile = obs["tactile"]
            assert env.observation_space.contains(obs)
            assert np.allclose(tactile[:2], simulator_forces(env), rtol=1e-5, atol=1e-4)
            assert np.allclose(tactile[2:4], tactile[:2] - previous, atol=1e-4)
            base = env.unwrapped._base
            assert bool(tactile[4]) == bool(base.agent.is_grasping(base.cube)[0])
            assert info["grasp_force"] == pytest.approx(grasp_force(tactile))
            previous = tactile[:2]
            grasped_steps += bool(tactile[4])
            touching_steps += bool(tactile[:2].min() > 0)
        assert grasped_steps > 5 and touching_steps > 5, "the scripted expert must grasp the cube"
    finally:
        env.close()


def test_force_figures_by_hand():
    assert episode_forces([]) == {"peak_grasp_force": None, "mean_grasp_force": None}
    assert episode_forces([0.0, 2.0, 4.0, 0.0]) == {"peak_grasp_force": 4.0, "mean_grasp_force": 3.0}
    assert episode_forces([0.0, 0.0]) == {"peak_grasp_force": 0.0, "mean_grasp_force": 0.0}
    summary = force_summary([4.0, 0.0, 10.0], [3.0, 0.0, 6.0])
    assert summary == {"peak_mean": pytest.approx(14 / 3), "peak_max": 10.0, "peak_mean_touched": 7.0,
                       "in_contact_mean": 4.5}


def test_the_evaluator_reports_grasp_force_for_every_policy():
    from functools import partial

    from vla_kd.envs import make_env
    from vla_kd.evaluator import evaluate_task, summarize
    from vla_kd.policies.scripted_maniskill import maniskill_expert_for

    make = partial(make_env, "maniskill/PickCube-v1", obs_mode="state", max_episode_steps=50)
    results, _ = evaluate_task("maniskill/PickCube-v1", make, maniskill_expert_for, 2, seed=100000,
                               progress=False)
    assert all(r.peak_grasp_force is not None and r.peak_grasp_force > 0 for r in results)
    forces = summarize(results)["grasp_force"]
    assert forces["peak_max"] >= forces["peak_mean"] > 0 and forces["in_contact_mean"] > 0


def test_vla_kd_eval_gives_a_tactile_teacher_touch_and_its_student_none(tmp_path):
    """The tactile teacher's folder makes `vla-kd eval` build the env with the tactile key (the
    teacher refuses to act without it); the student with a tactile token runs on an env without it."""
    import json

    from helpers import run_cli

    from vla_kd.envs import make_env
    from vla_kd.policies.tactile_expert import TactileExpertConfig, TactileFlowExpert
    from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

    env = make_env("maniskill/PickCube-v1", obs_mode="rgb", image_size=64)
    state_dim = env.observation_space["state"].shape[0]
    assert "tactile" not in env.observation_space.spaces
    env.close()
    TactileFlowExpert(TactileExpertConfig(state_dim=state_dim, horizon=2, image_size=64, features=16,
                                          hidden=32, inference_steps=2)).save_pretrained(tmp_path / "teacher")
    TokenVLA(TokenVLAConfig(state_dim=state_dim, horizon=2, image_size=64, hidden=32, layers=1, heads=2,
                            intermediate=64, tactile_token_dim=32)).save_pretrained(tmp_path / "student")
    for name in ("teacher", "student"):
        results = tmp_path / f"{name}.json"
        proc = run_cli("eval", f"policy={tmp_path / name}", "env=maniskill/PickCube-v1",
                       "episodes_per_task=1", "max_episode_steps=3", "workers=1", "tracker=none",
                       f"output_json={results}", f"hydra.run.dir={tmp_path / name}_eval")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(results.read_text())["episodes"] == 1
