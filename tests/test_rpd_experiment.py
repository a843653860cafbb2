"""scripts/rpd_experiment.py's table and plot (drawn by vla_kd/benchmarks/rpd_report.py), from
made-up results (no training)."""

from __future__ import annotations

import numpy as np
from conftest import load_script


def result(seed, rate, steps, reach=None, validation=None, reach_validated=None):
    return {"seed": seed, "success_rate": rate, "ci95": [rate - 0.1, rate + 0.1], "episodes": 100,
            "env_steps": steps, "steps_to_teacher": reach,
            "sampled": {"success_rate": rate, "ci95": [0, 1], "episodes": 100},
            "validation_curve": validation or [[], []], "steps_to_teacher_validated": reach_validated}


def test_table_has_clone_rows_and_every_seed_of_both_methods(tmp_path):
    script = load_script("rpd_experiment")
    latency = {"call_ms_median": 2.0, "action_ms": 1.0, "actions_per_call": 8}
    summary = {"tasks": {"maniskill/PushCube-v1": {
        "teacher": {"success_rate": 0.8, "ci95": [0.7, 0.9], "episodes": 100},
        "clone": [{"seed": s, "success_rate": 0.5, "ci95": [0.4, 0.6], "episodes": 100, "env_steps": 7000}
                  for s in (0, 1)],
        "ppo": [result(0, 0.1, 37000), result(1, 0.2, 37000)],
        "rpd": [result(0, 0.8, 37000, reach=9000.0, validation=[[7000, 9500], [0.5, 0.85]],
                       reach_validated=9500.0),
                result(1, 0.6, 37000, validation=[[7000, 9500], [0.5, 0.6]])],
        "latency": {"teacher": latency, "rpd": {**latency, "call_ms_median": 0.5, "action_ms": 0.25}},
    }}}
    table = script.results_table(summary)
    lines = table.splitlines()
    assert sum("clone seed" in line for line in lines) == 2
    assert sum("ppo seed" in line for line in lines) == 2 and sum("rpd seed" in line for line in lines) == 2
    assert "| 9000 / 9500 |" in table  # training / validation
    assert "| not reached / not reached |" in table  # rpd seed 1 validated, never at the teacher's rate
    assert "| not reached / - |" in table  # ppo did not validate
    assert lines[-1].endswith("| 4x | 4x |")  # 2.0 / 0.5 per call, 1.0 / 0.25 per action

    steps = np.array([1000.0, 2000.0])
    curves = {"maniskill/PushCube-v1": {"ppo": [(steps, np.array([0.1, 0.2]))] * 2,
                                        "rpd": [(steps, np.array([0.5, 0.6]))] * 2}}
    path = tmp_path / "plot.png"
    script.plot(curves, {"maniskill/PushCube-v1": 0.8}, path, {"maniskill/PushCube-v1": [(7000, 0.5)]})
    assert path.stat().st_size > 1000
    validation = {"maniskill/PushCube-v1": {"ppo": [(np.array([]), np.array([]))],
                                            "rpd": [(np.array([7000, 9500]), np.array([0.5, 0.85]))]}}
    with_validation = tmp_path / "plot_validation.png"
    script.plot(curves, {"maniskill/PushCube-v1": 0.8}, with_validation, None, validation)
    from PIL import Image

    assert Image.open(with_validation).size[1] > Image.open(path).size[1]  # a second row of panels


def test_validation_curve_is_shifted_by_the_warm_start_and_empty_without_validation():
    script = load_script("rpd_experiment")
    steps, success = script.validation_curve({"validation": {"history": [[0, 0.3], [2500, 0.9]]}}, 7000)
    assert steps.tolist() == [7000, 9500] and success.tolist() == [0.3, 0.9]
    assert script.steps_to_reach(steps, success, 0.85) == 9500
    assert len(script.validation_curve({"validation": None})[0]) == 0


def test_ppo_from_scratch_rows_and_the_env_step_ratio_to_the_teachers_rate():
    script = load_script("rpd_experiment")
    latency = {"call_ms_median": 2.0, "action_ms": 1.0, "actions_per_call": 8}
    entry = {
        "teacher": {"success_rate": 0.8, "ci95": [0.7, 0.9], "episodes": 100},
        "ppo": [result(0, 0.0, 27000), result(1, 0.0, 27000)],
        "rpd": [result(0, 0.8, 27000, validation=[[7000, 10000], [0.5, 0.85]], reach_validated=10000.0),
                result(1, 0.6, 27000, validation=[[7000, 10000], [0.5, 0.6]])],
        "ppo_scratch": [result(0, 0.9, 150000, validation=[[0, 80000], [0.0, 0.9]], reach_validated=80000.0),
                        result(1, 0.9, 150000, validation=[[0, 90000], [0.0, 0.9]], reach_validated=90000.0)],
        "latency": {"teacher": latency, "rpd": {**latency, "call_ms_median": 0.5, "action_ms": 0.25}},
    }
    table = script.results_table({"tasks": {"maniskill/PushCube-v1": entry}})
    assert sum("ppo_scratch seed" in line for line in table.splitlines()) == 2
    assert table.rstrip().splitlines()[-1].endswith("seed 0: 0.12; seed 1: RPD not reached")
    one_seed = {**entry, "ppo_scratch": entry["ppo_scratch"][:1]}
    last = script.results_table({"tasks": {"maniskill/PushCube-v1": one_seed}}).rstrip().splitlines()[-1]
    assert last.endswith("seed 0: 0.12; seed 1: no PPO-from-scratch run")
    from vla_kd.benchmarks.rpd_report import scratch_ratio

    assert scratch_ratio({k: v for k, v in entry.items() if k != "ppo_scratch"}) is None
    # PPO from scratch never at the rate: RPD's steps over PPO's last validation bound the ratio
    unreached = [result(s, 0.5, 60000, validation=[[0, 30000, 60000], [0.0, 0.3, 0.6]]) for s in (0, 1)]
    bounded = scratch_ratio({**entry, "ppo_scratch": unreached})
    assert bounded.endswith("seed 0: < 0.17 (PPO from scratch not reached at its validations up to 60000); "
                            "seed 1: neither reached")


def test_runs_from_a_clone_do_not_clone_again(tmp_path):
    script = load_script("rpd_experiment")
    overrides = script.clone_start(tmp_path / "clone_seed0")
    # rl=from_clone sets a warm start; later overrides win in Hydra, so this one must be last
    assert overrides[-1] == "rl.warm_start.episodes=0"
    assert overrides[0] == f"rl.init_policy={tmp_path / 'clone_seed0' / 'policy'}"


def test_methods_limits_the_rl_runs_and_the_table_needs_no_ppo(tmp_path, monkeypatch):
    import argparse

    script = load_script("rpd_experiment")
    trained = []
    teacher_eval = {"success_rate": 0.8, "ci95": [0.7, 0.9], "episodes": 100}
    latency = {"call_ms_median": 2.0, "action_ms": 1.0, "actions_per_call": 8}
    monkeypatch.setattr(script, "evaluate_teacher", lambda *a: teacher_eval)

    def train(task, teacher, method, seed, *rest):
        trained.append((method, seed))
        return tmp_path / f"{method}_seed{seed}"

    monkeypatch.setattr(script, "train", train)
    monkeypatch.setattr(script, "run_record", lambda task, folder, seed, *a: (result(seed, 0.7, 20000), None))
    monkeypatch.setattr(script, "latency", lambda *a: {"teacher": latency, "rpd": latency})
    args = argparse.Namespace(out=tmp_path, episodes=100, teacher_action_steps=None, clone_episodes=0,
                              seeds=[0, 1], steps=20000, extra=[], methods=["rpd"], ppo_from_scratch=0,
                              scratch_seeds=None)
    entry, _ = script.run_task("maniskill/PushCube-v1", "teacher", args)
    assert trained == [("rpd", 0), ("rpd", 1)] and "ppo" not in entry
    table = script.results_table({"tasks": {"maniskill/PushCube-v1": entry}})
    assert sum("rpd seed" in line for line in table.splitlines()) == 2 and "ppo seed" not in table


def test_ppo_from_scratch_validates_at_the_given_interval_without_the_experiments_overrides(
    tmp_path, monkeypatch
):
    script = load_script("rpd_experiment")
    calls = []
    monkeypatch.setattr(script, "run", calls.append)
    folder = script.ppo_from_scratch("maniskill/PushCube-v1", 1, 51200, 100, tmp_path, every=1024)
    (args,) = calls
    assert folder == tmp_path / "ppo_scratch_seed1"
    assert "rl.validation.every=1024" in args and "rl.total_timesteps=51200" in args
    assert f"rl.max_episode_steps={script.SCRATCH_EPISODE_STEPS}" in args and "teacher=none" in args
    assert not any(a.startswith(("rl=", "rl.init_policy", "rl.ppo.learning_rate")) for a in args)


def test_ppo_from_scratch_is_validated_on_the_grid_rl_from_clone_gives_rpd():
    from pathlib import Path

    from omegaconf import OmegaConf

    import vla_kd.configs

    script = load_script("rpd_experiment")
    from_clone = OmegaConf.load(Path(vla_kd.configs.__file__).parent / "rl" / "from_clone.yaml")
    assert script.SCRATCH_VALIDATION_EVERY == from_clone.validation.every
