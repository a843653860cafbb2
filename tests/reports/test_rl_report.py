"""The RL experiment's report: its table and plot from made-up records, its records collected from
made-up run folders (no training), and the experiment configs that write those folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from vla_kd.cli_support import without_hydra
from vla_kd.commands.report import main as report
from vla_kd.reports import rl
from vla_kd.reports.rl_tables import plot, results_table, scratch_ratio, steps_to_reach, validation_curve

LATENCY = {"call_ms_median": 2.0, "action_ms": 1.0, "actions_per_call": 8}


def result(seed, rate, steps, reach=None, validation=None, reach_validated=None):
    return {"seed": seed, "success_rate": rate, "ci95": [rate - 0.1, rate + 0.1], "episodes": 100,
            "env_steps": steps, "steps_to_teacher": reach,
            "sampled": {"success_rate": rate, "ci95": [0, 1], "episodes": 100},
            "validation_curve": validation or [[], []], "steps_to_teacher_validated": reach_validated}


def test_table_has_clone_rows_and_every_seed_of_both_methods(tmp_path):
    summary = {"tasks": {"maniskill/PushCube-v1": {
        "teacher": {"success_rate": 0.8, "ci95": [0.7, 0.9], "episodes": 100},
        "clone": [{"seed": s, "success_rate": 0.5, "ci95": [0.4, 0.6], "episodes": 100, "env_steps": 7000}
                  for s in (0, 1)],
        "ppo": [result(0, 0.1, 37000), result(1, 0.2, 37000)],
        "rpd": [result(0, 0.8, 37000, reach=9000.0, validation=[[7000, 9500], [0.5, 0.85]],
                       reach_validated=9500.0),
                result(1, 0.6, 37000, validation=[[7000, 9500], [0.5, 0.6]])],
        "latency": {"teacher": LATENCY, "rpd": {**LATENCY, "call_ms_median": 0.5, "action_ms": 0.25}},
    }}}
    table = results_table(summary)
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
    plot(curves, {"maniskill/PushCube-v1": 0.8}, path, {"maniskill/PushCube-v1": [(7000, 0.5)]})
    assert path.stat().st_size > 1000
    validation = {"maniskill/PushCube-v1": {"ppo": [(np.array([]), np.array([]))],
                                            "rpd": [(np.array([7000, 9500]), np.array([0.5, 0.85]))]}}
    with_validation = tmp_path / "plot_validation.png"
    plot(curves, {"maniskill/PushCube-v1": 0.8}, with_validation, None, validation)
    from PIL import Image

    assert Image.open(with_validation).size[1] > Image.open(path).size[1]  # a second row of panels


def test_validation_curve_is_shifted_by_the_warm_start_and_empty_without_validation():
    steps, success = validation_curve({"validation": {"history": [[0, 0.3], [2500, 0.9]]}}, 7000)
    assert steps.tolist() == [7000, 9500] and success.tolist() == [0.3, 0.9]
    assert steps_to_reach(steps, success, 0.85) == 9500
    assert len(validation_curve({"validation": None})[0]) == 0


def test_ppo_from_scratch_rows_and_the_env_step_ratio_to_the_teachers_rate():
    entry = {
        "teacher": {"success_rate": 0.8, "ci95": [0.7, 0.9], "episodes": 100},
        "ppo": [result(0, 0.0, 27000), result(1, 0.0, 27000)],
        "rpd": [result(0, 0.8, 27000, validation=[[7000, 10000], [0.5, 0.85]], reach_validated=10000.0),
                result(1, 0.6, 27000, validation=[[7000, 10000], [0.5, 0.6]])],
        "ppo_scratch": [result(0, 0.9, 150000, validation=[[0, 80000], [0.0, 0.9]], reach_validated=80000.0),
                        result(1, 0.9, 150000, validation=[[0, 90000], [0.0, 0.9]], reach_validated=90000.0)],
        "latency": {"teacher": LATENCY, "rpd": {**LATENCY, "call_ms_median": 0.5, "action_ms": 0.25}},
    }
    table = results_table({"tasks": {"maniskill/PushCube-v1": entry}})
    assert sum("ppo_scratch seed" in line for line in table.splitlines()) == 2
    assert table.rstrip().splitlines()[-1].endswith("seed 0: 0.12; seed 1: RPD not reached")
    one_seed = {**entry, "ppo_scratch": entry["ppo_scratch"][:1]}
    last = results_table({"tasks": {"maniskill/PushCube-v1": one_seed}}).rstrip().splitlines()[-1]
    assert last.endswith("seed 0: 0.12; seed 1: no PPO-from-scratch run")
    assert scratch_ratio({k: v for k, v in entry.items() if k != "ppo_scratch"}) is None
    # PPO from scratch never at the rate: RPD's steps over PPO's last validation bound the ratio
    unreached = [result(s, 0.5, 60000, validation=[[0, 30000, 60000], [0.0, 0.3, 0.6]]) for s in (0, 1)]
    bounded = scratch_ratio({**entry, "ppo_scratch": unreached})
    assert bounded.endswith("seed 0: < 0.17 (PPO from scratch not reached at its validations up to 60000); "
                            "seed 1: neither reached")


def write_run(folder, method, seed, success, env_steps, warm=0, init_policy=None, curve=(0.2, 0.9),
              validation=None):
    """A finished `vla-kd train method=rpd|ppo` run folder, as the runner writes one."""
    run = folder / f"{method}_seed{seed}"
    run.mkdir(parents=True)
    summary = {"method": method.removesuffix("_scratch").replace("clone", "ppo"), "env_steps": env_steps,
               "wall_seconds": 10.0, "warm_start": {"env_steps": warm} if warm else None,
               "init_policy": init_policy, "validation": validation, "eval/task": "maniskill/PushCube-v1",
               "eval/success_rate": success, "eval/ci95": [0.0, 1.0], "eval/episodes": 100,
               "eval_sampled/success_rate": success / 2, "eval_sampled/ci95": [0.0, 1.0],
               "eval_sampled/episodes": 100}
    (run / "train_summary.json").write_text(json.dumps(summary))
    rows = [{"env_steps": s, "train/success_rate": r} for s, r in zip((1000, 2000), curve, strict=True)]
    (run / "curve.json").write_text(json.dumps(rows))
    return run


def test_the_report_collects_clones_runs_and_the_teacher_from_run_folders(tmp_path, monkeypatch):
    (tmp_path / "teacher_eval").mkdir()
    (tmp_path / "teacher_eval" / "results.json").write_text(json.dumps(
        {"policy": "teacher", "success_rate": 0.8, "ci95": [0.7, 0.9], "episodes": 100}))
    for seed in (0, 1):
        clone = write_run(tmp_path, "clone", seed, 0.5, 0, warm=7000)
        start = str(clone / "policy")
        write_run(tmp_path, "rpd", seed, 0.85, 20000, init_policy=start, curve=(0.85, 0.95),
                  validation={"history": [[0, 0.5], [2500, 0.85]]})
        write_run(tmp_path, "ppo", seed, 0.4, 20000, init_policy=start)
    (tmp_path / "unrelated").mkdir()  # other folders are left alone
    monkeypatch.setattr(rl, "latency", lambda folder: {"teacher": LATENCY, "rpd": LATENCY})
    summary, curves = rl.collect(tmp_path)
    entry = summary["tasks"]["maniskill/PushCube-v1"]
    assert summary["seeds"] == [0, 1] and [r["seed"] for r in entry["clone"]] == [0, 1]
    rpd = entry["rpd"][0]
    assert rpd["env_steps"] == 27000 and rpd["warm_start_env_steps"] == 7000  # the clone's episodes count
    assert rpd["validation_curve"] == [[7000, 9500], [0.5, 0.85]]
    assert rpd["steps_to_teacher_validated"] == 9500
    assert rpd["sampled"]["success_rate"] == pytest.approx(0.425)
    assert rpd["steps_to_teacher"] == 8000  # its training curve's first point, after the clone's 7000
    assert len(curves["maniskill/PushCube-v1"]["ppo"]) == 2

    assert report([str(tmp_path)]) == 0
    assert "rpd seed 1" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "success_vs_steps.png").read_bytes()[:4] == b"\x89PNG"
    assert report([str(tmp_path / "unrelated")]) == 2  # no runs there: one error line


@pytest.fixture()
def composed():
    """``vla-kd train``'s config with overrides; its Hydra node kept apart, as in a run."""

    def compose_train(*overrides: str):
        with initialize_config_module(config_module="vla_kd.configs", version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        hydra_node = cfg.hydra
        without_hydra(cfg)
        return cfg, hydra_node

    return compose_train


def test_runs_from_a_clone_start_from_their_seeds_clone_and_do_not_clone_again(composed):
    cfg, hydra_node = composed("experiment=rpd_vs_ppo_from_clones", "method=rpd_from_clone", "seed=2",
                               "hydra.sweep.dir=/sweep")
    assert cfg.method.warm_start.episodes == 0  # rpd_from_clone's own warm start is off
    assert cfg.method.init_policy == "/sweep/clone_seed2/policy" and cfg.eval.all_variants
    assert hydra_node.sweep.subdir == "rpd_seed2"
    clone, hydra_node = composed("experiment=rl_clone", "seed=2")
    assert clone.method.name == "ppo" and clone.method.total_timesteps == 0
    assert clone.method.warm_start.episodes == 100 and hydra_node.sweep.subdir == "clone_seed2"


def test_ppo_from_scratch_is_ppo_as_usually_run_on_the_grid_rpd_from_clone_validates_on(composed):
    scratch, hydra_node = composed("experiment=ppo_from_scratch")
    clone_recipe, _ = composed("method=rpd_from_clone")
    defaults, _ = composed("method=ppo")
    assert scratch.method.name == "ppo" and scratch.teacher is None
    assert scratch.method.validation.every == clone_recipe.method.validation.every
    assert scratch.method.max_episode_steps == defaults.method.max_episode_steps == 50  # ManiSkill's own
    assert scratch.method.action_chunk == 1 and scratch.method.ppo == defaults.method.ppo
    assert scratch.eval.max_episode_steps == 100 and hydra_node.sweep.subdir == "ppo_scratch_seed0"
