"""`vla-kd pipeline resume=true`: finished stages are replayed from the run's record, not redone."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from vla_kd.errors import UserError
from vla_kd.pipeline.state import STATE_FILE, PipelineState


def settings(**overrides):
    cfg = OmegaConf.create({
        "task": "maniskill/PushCube-v1", "resume": False, "students": ["rpd"], "tracker": {"kind": "none"},
        "teacher_trainer": {"steps": 2000}, "eval": {"episodes": 50, "progress": True},
    })
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def must_not_run():
    raise AssertionError("a recorded stage ran again")


def test_a_resumed_run_replays_finished_stages_and_runs_the_rest(tmp_path):
    first = PipelineState(tmp_path, settings(), resume=False)
    assert first.run_stage("demos", lambda n: {"recorded": n}, 7) == {"recorded": 7}
    assert first.run_stage("train_teacher", lambda: {"samples": 64}) == {"samples": 64}
    recorded = json.loads((tmp_path / STATE_FILE).read_text())
    assert list(recorded["stages"]) == list(first.stage_seconds) == ["demos", "train_teacher"]
    assert recorded["wall_seconds"] >= sum(first.stage_seconds.values())

    # `students` and display settings may change on resume; the stages that finished are replayed
    resumed = PipelineState(tmp_path, settings(resume=True, students=["ceed"], **{"eval.progress": False}),
                            resume=True)
    assert resumed.run_stage("demos", must_not_run) == {"recorded": 7}
    assert resumed.run_stage("train_teacher", must_not_run) == {"samples": 64}
    assert resumed.stage_seconds == {k: recorded["stages"][k]["seconds"] for k in ("demos", "train_teacher")}
    assert resumed.run_stage("eval_teacher", lambda: {"success_rate": 0.5}) == {"success_rate": 0.5}
    assert resumed.wall_seconds() >= recorded["wall_seconds"]
    assert list(json.loads((tmp_path / STATE_FILE).read_text())["stages"]) == [
        "demos", "train_teacher", "eval_teacher"]


def test_a_fresh_run_in_the_same_folder_starts_over(tmp_path):
    PipelineState(tmp_path, settings(), resume=False).run_stage("demos", lambda: {"recorded": 7})
    fresh = PipelineState(tmp_path, settings(), resume=False)
    assert fresh.run_stage("demos", lambda: {"recorded": 8}) == {"recorded": 8}
    assert json.loads((tmp_path / STATE_FILE).read_text())["stages"]["demos"]["result"] == {"recorded": 8}


def test_resume_refuses_other_settings_a_missing_record_and_a_corrupt_one(tmp_path):
    with pytest.raises(UserError, match=r"holds no pipeline_state\.json"):
        PipelineState(tmp_path, settings(resume=True), resume=True)
    PipelineState(tmp_path, settings(), resume=False).run_stage("demos", lambda: {"recorded": 7})
    with pytest.raises(UserError, match=r"other settings \(teacher_trainer.steps\)"):
        PipelineState(tmp_path, settings(**{"teacher_trainer.steps": 3000}), resume=True)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        PipelineState(tmp_path, settings(), resume=True)
