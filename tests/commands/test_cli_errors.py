"""Bad input gets one clear line (no traceback) that suggests the nearest valid name."""
from __future__ import annotations

import json

import pytest
from helpers import error_lines, requires_maniskill, run_cli

from vla_kd.cli import main
from vla_kd.errors import UserError
from vla_kd.policies.loading import check_policy_spec


def one_line_error(capsys_or_proc) -> str:
    lines = error_lines(capsys_or_proc)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "Traceback" not in capsys_or_proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["eval", "episodes_per_tsk=3"], "did you mean 'episodes_per_task'"),
        (["eval", "suite=maniskill_smal"], "did you mean 'maniskill_small'"),
        (["eval", "tracker=wandbb"], "did you mean 'wandb'"),
        (["eval", "experiment=debgu"], "did you mean 'debug'"),
        (["eval", "-m", "seed=0,1", "suite=libero_spatil"], "did you mean 'libero_spatial'"),
        (["eval", "maniskill.sim_backnd=cpu"], "did you mean 'maniskill.sim_backend'"),
        (["evl"], "did you mean 'eval'"),
        (["demos", "tracker=none"], "Could not override 'tracker'"),  # demos has no tracker
    ],
)
def test_config_mistakes_are_one_line_with_a_suggestion(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_keys_are_checked_against_the_chosen_group_option():
    from vla_kd.cli_support import check_overrides

    # token_corruption exists in model=token_vla, not in the default chunked_bc.
    check_overrides("train", ["dataset=x", "model=token_vla", "model.token_corruption=0.5"])
    with pytest.raises(UserError, match=r"did you mean 'model\.token_corruption'"):
        check_overrides("train", ["dataset=x", "model=token_vla", "model.token_corruptin=0.5"])
    with pytest.raises(UserError, match=r"unknown config key 'model\.token_corruption'"):
        check_overrides("train", ["dataset=x", "model.token_corruption=0.5"])


def test_unknown_policy_suggests_builtin():
    with pytest.raises(UserError, match="did you mean 'scripted'"):
        check_policy_spec("scriptd")


def test_missing_and_corrupt_policy_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_policy_spec(str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"no config\.json"):
        check_policy_spec(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        check_policy_spec(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"policy_type": "mystery", "config": {}}))
    with pytest.raises(UserError, match="unknown policy_type"):
        check_policy_spec(str(tmp_path))


def test_bad_task_names_parse_errors():
    from vla_kd.envs.base import TaskId

    with pytest.raises(UserError, match="did you mean 'maniskill'"):
        TaskId.parse("maniskil/PickCube-v1")
    with pytest.raises(UserError, match="libero/libero_spatial/0"):
        TaskId.parse("libero/libero_spatial")


@requires_maniskill
def test_unknown_maniskill_task_via_cli():
    proc = run_cli("eval", "env=maniskill/PickCub-v1", "tracker=none")
    assert proc.returncode == 2
    assert "did you mean 'PickCube-v1'" in one_line_error(proc)


@requires_maniskill
def test_task_needing_downloaded_assets_is_refused_without_prompt():
    proc = run_cli("eval", "env=maniskill/PickSingleYCB-v1", "tracker=none", timeout=120)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "PickSingleYCB-v1" in line and "ycb" in line and "never downloads" in line


@requires_maniskill
def test_scripted_policy_on_task_without_expert_is_one_line():
    proc = run_cli("eval", "env=maniskill/RollBall-v1", "episodes_per_task=1", "tracker=none")
    assert proc.returncode == 2
    assert "no scripted expert for task 'RollBall-v1'" in one_line_error(proc)


@requires_maniskill
def test_validation_seeds_overlapping_the_held_out_ones_are_refused_before_training(tmp_path):
    proc = run_cli("train", "method=ppo", "env=maniskill/PushCube-v1", "tracker=none",
                   "method.validation.every=100", "method.validation.seed=100010", "eval.seed=100000",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert "overlap the held-out" in one_line_error(proc)
    assert not (tmp_path / "checkpoints").exists()  # refused before any env or model was built


def test_opd_validation_seeds_overlapping_the_held_out_ones_are_refused(tmp_path):
    # eval.env unset: the held-out evaluation runs on env, so its seeds count all the same
    proc = run_cli("train", "method=opd", "env=maniskill/PushCube-v1", "teacher=scripted", "tracker=none",
                   "method.validation_seed=100010", "eval.seed=100000", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert "method=opd validation seeds 100010..100029 overlap the held-out" in one_line_error(proc)
    assert not (tmp_path / "aggregate").exists()
