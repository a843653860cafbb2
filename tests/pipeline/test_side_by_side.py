"""The pipeline's trainings side by side: worker processes, order by needs, results kept as they
finish, a failure raised once the stages beside it are kept, resumed runs replay."""
from __future__ import annotations

import json
import logging
import os
import time

import pytest
import torch
from omegaconf import OmegaConf

from vla_kd.errors import UserError
from vla_kd.pipeline.side_by_side import Stage, run_side_by_side
from vla_kd.pipeline.state import STATE_FILE, PipelineState


def settings():
    return OmegaConf.create({"task": "maniskill/PushCube-v1", "resume": False, "students": []})


def timed_work(name: str, seconds: float) -> dict:
    """A stage: where and when it ran."""
    started = time.time()
    logging.getLogger("vla_kd.test").info("%s ran in a worker", name)
    time.sleep(seconds)
    return {"name": name, "pid": os.getpid(), "threads": torch.get_num_threads(), "started": started,
            "ended": time.time()}


def failing_work() -> dict:
    raise UserError("this stage fails")


def must_not_run() -> dict:
    raise AssertionError("a recorded stage ran again")


def test_stages_run_two_at_a_time_in_worker_processes_after_what_they_need(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    state = PipelineState(tmp_path, settings(), resume=False)
    stages = [
        Stage("a", timed_work, ("a", 1.5)),
        Stage("b", timed_work, ("b", 0.2)),
        Stage("c", timed_work, ("c", 0.2), needs=("a",)),
        Stage("d", timed_work, ("d", 0.2)),
    ]
    results = run_side_by_side(stages, state, workers=2)
    assert [results[name]["name"] for name in "abcd"] == list("abcd")
    assert all(r["pid"] != os.getpid() and r["threads"] == 1 for r in results.values())
    assert results["c"]["started"] >= results["a"]["ended"]  # c waited for a
    assert results["d"]["started"] < results["a"]["ended"]  # d did not wait behind c
    moments = sorted(t for r in results.values() for t in (r["started"], r["ended"]))
    for moment in moments:  # never more than two at once
        assert sum(r["started"] <= moment < r["ended"] for r in results.values()) <= 2
    recorded = json.loads((tmp_path / STATE_FILE).read_text())["stages"]
    assert sorted(recorded) == list("abcd") and recorded["a"]["result"] == results["a"]
    assert list(state.stage_seconds)[-1] == "c"  # recorded in the order they finished
    assert state.stage_seconds["a"] >= 1.5
    assert "a ran in a worker" in caplog.text  # the workers log through this process's handlers

    resumed = PipelineState(tmp_path, settings(), resume=True)
    again = run_side_by_side(
        [Stage(name, must_not_run) for name in "abcd"] + [Stage("e", timed_work, ("e", 0.0), needs=("c",))],
        resumed, workers=2,
    )
    assert {name: again[name] for name in "abcd"} == results and again["e"]["pid"] == os.getpid()


def test_two_stages_that_spread_never_run_side_by_side(tmp_path):
    state = PipelineState(tmp_path, settings(), resume=False)
    stages = [Stage("rl", timed_work, ("rl", 1.0), spreads=True),
              Stage("rollouts", timed_work, ("rollouts", 0.2), spreads=True),
              Stage("plain", timed_work, ("plain", 0.2))]
    results = run_side_by_side(stages, state, workers=2)
    assert results["rollouts"]["started"] >= results["rl"]["ended"]
    assert results["plain"]["started"] < results["rl"]["ended"]  # it went ahead of the waiting one


def test_a_failed_stage_is_raised_after_the_stage_beside_it_is_kept(tmp_path):
    state = PipelineState(tmp_path, settings(), resume=False)
    stages = [Stage("slow", timed_work, ("slow", 1.0)), Stage("fails", failing_work),
              Stage("never", timed_work, ("never", 0.0))]
    with pytest.raises(UserError, match="this stage fails"):
        run_side_by_side(stages, state, workers=2)
    recorded = json.loads((tmp_path / STATE_FILE).read_text())["stages"]
    assert list(recorded) == ["slow"]  # kept for resume=true; nothing started after the failure


def test_one_worker_runs_the_stages_here_in_order_and_needs_must_come_first(tmp_path):
    state = PipelineState(tmp_path, settings(), resume=False)
    results = run_side_by_side([Stage("a", timed_work, ("a", 0.0)), Stage("b", timed_work, ("b", 0.0))],
                               state, workers=1)
    assert results["a"]["pid"] == results["b"]["pid"] == os.getpid()
    assert results["a"]["ended"] <= results["b"]["started"]
    with pytest.raises(ValueError, match=r"stage b needs \['c'\]"):
        run_side_by_side([Stage("b", timed_work, ("b", 0.0), needs=("c",)), Stage("c", timed_work)],
                         state, workers=2)
