"""The learning loop end to end on a real task: demonstrations -> a short BC run -> a policy
that succeeds on held-out seeds clearly more often than a random one."""
from __future__ import annotations

import json
import os

import pytest
from conftest import requires_maniskill, run_cli

TASK = "maniskill/PushCube-v1"
EPISODES = 20


@requires_maniskill
@pytest.mark.maniskill
@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("VLA_KD_LEARNING_TESTS") != "1",
    reason="not yet reliable at this budget: BC scored 15% on one run and ≥25% on another of the same setup "
    "(random 5%); set VLA_KD_LEARNING_TESTS=1 to run it",
)
def test_short_bc_run_beats_random_on_pushcube(tmp_path):
    data = tmp_path / "demos"
    proc = run_cli("demos", f"env={TASK}", "n=60", "image_size=128", f"output={data}", "progress=false",
                   f"hydra.run.dir={tmp_path / 'demos_run'}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    held_out = ["eval.seed=100000", f"eval.episodes={EPISODES}", "eval.max_episode_steps=100"]
    proc = run_cli("train", f"dataset={data}", "model=chunked_bc", "trainer.steps=2500",
                   "trainer.batch_size=32", "trainer.progress=false", "tracker=none", f"eval.env={TASK}",
                   *held_out, f"output={tmp_path / 'bc'}", f"hydra.run.dir={tmp_path / 'train'}",
                   timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bc = json.loads((tmp_path / "train" / "train_summary.json").read_text())["eval/success_rate"]

    results = tmp_path / "random.json"
    proc = run_cli("eval", "policy=random", f"env={TASK}", f"episodes_per_task={EPISODES}", "seed=100000",
                   "max_episode_steps=100", "tracker=none", "progress=false", f"output_json={results}",
                   f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    random = json.loads(results.read_text())["success_rate"]
    # 4 more successes in 20 episodes: far outside what chance gives a random policy here.
    assert bc >= random + 0.2, (bc, random)
