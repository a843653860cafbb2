"""Bad values, as a new user types them, end in one ``error:`` line and exit status 2 within
seconds, in every subcommand: the typed schemas check every field's type and range where the
config is composed, before anything is built."""

from __future__ import annotations

import time

import pytest
from helpers import error_lines, run_cli

from vla_kd.cli import main

#: (argv, what the one line must say)
BAD_VALUES = [
    (["eval", "episodes_per_task=-3"], "episodes_per_task must be at least 1, got -3"),
    (["eval", "max_episode_steps=0"], "max_episode_steps must be at least 1, got 0"),
    (["eval", "workers=0"], "workers must be at least 1"),
    (["eval", "obs_mode=depth"], "obs_mode must be one of state, rgb"),
    (["eval", "seed=abc"], "seed: Value 'abc'"),
    (["eval", "video.fps=0"], "video.fps must be at least 1"),
    (["eval", "suite.max_episode_steps=-1"], "suite.max_episode_steps must be at least 1"),
    (["eval", "maniskill.sim_backend=gpu"], "maniskill.sim_backend must be one of cpu, physx_cuda"),
    (["demos", "n=0"], "n must be at least 1, got 0"),
    (["demos", "n=abc"], "n: Value 'abc'"),
    (["demos", "workers=-1"], "workers must be at least 1"),
    (["demos", "grip_range=[0.8,0.2]"], "grip_range must be [low, high] with 0 < low <= high <= 1"),
    (["train", "dataset=d", "trainer.steps=abc"], "trainer.steps: Value 'abc'"),
    (["train", "dataset=d", "trainer.steps=-3"], "trainer.steps must be at least 0, got -3"),
    (["train", "dataset=d", "trainer.batch_size=0"], "trainer.batch_size must be at least 1"),
    (["train", "dataset=d", "trainer.lr=0"], "trainer.lr must be positive"),
    (["train", "dataset=d", "trainer.lr_schedule=linear"], "trainer.lr_schedule must be one of cosine"),
    (["train", "dataset=d", "trainer.ema_decay=1"], "trainer.ema_decay must be in [0, 1)"),
    (["train", "dataset=d", "model=token_vla", "model.horizon=6", "model.action_stride=4"],
     "model.action_stride must divide horizon 6"),
    (["train", "dataset=d", "eval.episodes=0"], "eval.episodes must be at least 1"),
    (["train", "dataset=d", "model=hf_vla", "model.lora_dropout=2"], "model.lora_dropout must be in [0, 1]"),
    (["train", "dataset=d", "model=hf_vla", "model.dtype=int8"], "model.dtype must be one of float32"),
    (["train", "dataset=d", "model=hf_vla", "model.prompt=go"], "model.prompt must contain {instruction}"),
    (["train", "dataset=d", "tracker.mode=cloud"], "tracker.mode must be one of offline, online, disabled"),
    (["train", "method=ceed", "method.windows_per_state=0"], "method.windows_per_state must be at least 1"),
    (["train", "method=ceed", "method.token_corruption=2"], "method.token_corruption must be in [0, 1]"),
    (["train", "method=dysl", "method.skip_probability=1.5"], "method.skip_probability must be in [0, 1]"),
    (["train", "method=dysl", "method.post_calibration=evaluation"], "method.post_calibration must be"),
    (["train", "method=align", "method.stage=3"], "method.stage must be one of 1, 2, both, scratch"),
    (["train", "method=align", "method.stage2_parts=[mapper,wheels]"], "unknown align part 'wheels'"),
    (["train", "method=opd", "method.beta_decay=2"], "method.beta_decay must be in [0, 1]"),
    (["train", "method=opd", "method.rounds=0"], "method.rounds must be at least 1"),
    (["train", "method=opd", "method.seed=49990"], "method.validation_seed 50000.. overlaps the training"),
    (["train", "method=rpd", "method.ppo.gamma=2"], "method.ppo.gamma must be in [0, 1], got 2.0"),
    (["train", "method=rpd", "method.num_envs=0"], "method.num_envs must be at least 1"),
    (["train", "method=rpd", "method.teacher_loss=huber"], "method.teacher_loss must be one of"),
    (["train", "method=ppo", "method.validation.episodes=0"], "method.validation.episodes must be at"),
    (["train", "method=tactile", "method.stage=sensor"], "method.stage must be one of teacher, student"),
    (["train", "method=tactile", "method.force_limit=0"], "method.force_limit must be positive"),
    (["train", "dataset=d", "model=tactile_flow_expert", "model.tactile_token_dim=0"],
     "model.tactile_token_dim must be at least 1"),
    (["pipeline", "demos.n=0"], "demos.n must be at least 1, got 0"),
    (["pipeline", "students=[rpd,cede]"], "unknown method 'cede'; did you mean 'ceed'?"),
    (["pipeline", "eval.workers=0"], "eval.workers must be at least 1"),
    (["pipeline", "teacher_trainer.steps=-1"], "teacher_trainer.steps must be at least 0"),
    (["pipeline", "rpd.action_chunk=0"], "rpd.action_chunk must be at least 1"),
    (["bench", "teachers=[t]", "batch_sizes=[0]"], "batch_sizes must be at least 1, got [0]"),
    (["bench", "teachers=[t]", "calls=0"], "calls must be at least 1"),
    (["bench", "teachers=[t]", "dysl_quantiles=[2]"], "dysl_quantiles must lie in [0, 1]"),
    (["make-vlm", "architecture=llava"], "architecture must be one of idefics3, paligemma"),
    (["make-vlm", "architecture=paligemma", "text_weights=smollm2"], "text_weights smollm2 is SmolVLM's"),
    (["make-vlm", "image_size=8"], "image_size must be at least 16"),
    (["deploy", "policy=p", "state.joints=[a]", "rate_hz=0"], "rate_hz must be positive"),
    (["deploy", "policy=p", "state.joints=[a]", "ros.port=0"], "ros.port must be at least 1"),
    (["deploy", "policy=p", "state.joints=[a]", "command=fly"], "command must be one of"),
    (["deploy", "policy=p", "state.joints=[a]", "limits.max_translation=-1"], "limits.max_translation"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_a_bad_value_is_one_error_line_and_exit_status_2(argv, expected, capsys):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_every_subcommand_has_a_bad_value_in_the_table():
    from vla_kd.cli import COMMANDS

    assert {argv[0] for argv, _ in BAD_VALUES} == set(COMMANDS)


def test_report_of_a_folder_without_runs_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: report: no finished experiment runs")


@pytest.mark.parametrize("argv", [
    ("demos", "env=maniskill/PushCube-v1", "n=0"),  # once waited forever for a planner worker
    ("train", "trainer.steps=abc"),  # once a TypeError inside the progress bar
    ("eval", "episodes_per_task=-3"),  # once a ZeroDivisionError
])
def test_the_command_line_answers_in_seconds(argv, tmp_path):
    started = time.perf_counter()
    proc = run_cli(*argv, f"hydra.run.dir={tmp_path}", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert time.perf_counter() - started < 30
    assert not (tmp_path / ".hydra").exists()  # refused before the run began
