"""Hydra multirun sweeps run through the local joblib launcher, one results file per job."""
from __future__ import annotations

import json

import pytest
from helpers import requires_maniskill, run_cli


@requires_maniskill
@pytest.mark.maniskill
def test_local_multirun_over_seeds(tmp_path):
    proc = run_cli(
        "eval", "-m", "hydra/launcher=local", "experiment=debug", "seed=0,50",
        f"hydra.sweep.dir={tmp_path}", timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/results.json"))]
    assert len(docs) == 2
    seeds = sorted(d["tasks"]["maniskill/PickCube-v1"]["protocol"]["seeds"][0] for d in docs)
    assert seeds == [0, 50]


@requires_maniskill
@pytest.mark.maniskill
def test_submitit_local_sweep_runs_the_slurm_launchers_code_without_a_scheduler(tmp_path):
    # hydra/launcher=slurm and submitit_local share the submitit plugin; only the executor differs
    proc = run_cli(
        "eval", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        "experiment=debug", "seed=0,50", f"hydra.sweep.dir={tmp_path}", timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/results.json"))]
    seeds = sorted(d["tasks"]["maniskill/PickCube-v1"]["protocol"]["seeds"][0] for d in docs)
    assert seeds == [0, 50]
    assert list(tmp_path.glob(".submitit/*/*_log.out"))  # submitit ran each job as its own process
