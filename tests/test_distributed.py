"""Data-parallel training (trainer.distributed): two gloo processes on this machine train as one
process at the doubled batch, resume at the exact step, and `torchrun` runs `vla-kd train`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import PACKAGE_ROOT

from vla_kd.methods.base import Method
from vla_kd.trainer import Trainer, TrainerConfig

SETTINGS = TrainerConfig(steps=6, batch_size=4, lr=0.05, warmup_steps=0, checkpoint_every=3, progress=False)


class Pairs(torch.utils.data.Dataset):
    """32 fixed (x, y) pairs of a noisy linear map."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 5, generator=generator)
        self.y = self.x @ torch.randn(5, 3, generator=generator) + 0.1 * torch.randn(
            32, 3, generator=generator
        )

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index]}


class Regression(Method):
    """Mean squared error of a linear layer: no randomness, so ranks and batches compare exactly."""

    def __init__(self) -> None:
        torch.manual_seed(1)
        self.model = torch.nn.Linear(5, 3)

    def loss(self, batch: dict, step: int):
        loss = torch.nn.functional.mse_loss(self.model(batch["x"]), batch["y"])
        return loss, {"losses/mse": float(loss.detach())}


def train(settings: TrainerConfig, run_dir: Path, until: int | None = None) -> tuple[dict, float]:
    method = Regression()
    trainer = Trainer(method, Pairs(), settings, run_dir)
    trainer.fit(until=until)
    with torch.no_grad():
        full = Pairs()
        loss = float(torch.nn.functional.mse_loss(method.model(full.x), full.y))
    return {k: v.clone() for k, v in method.model.state_dict().items()}, loss


def rank_main(rank: int, world: int, init_file: str, out: str, stop_at: int | None) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        run_dir = Path(out) / "run"
        if stop_at is not None:  # as if cut short after a checkpoint, then started again
            train(SETTINGS, run_dir, until=stop_at)
            weights, loss = train(replace(SETTINGS, resume=True), run_dir)
        else:
            weights, loss = train(SETTINGS, run_dir)
        torch.save({"weights": weights, "loss": loss}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path: Path, name: str, stop_at: int | None = None) -> list[dict]:
    out = tmp_path / name
    out.mkdir()
    mp.spawn(rank_main, args=(2, str(tmp_path / f"{name}.init"), str(out), stop_at), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_two_processes_train_as_one_at_the_doubled_batch_and_resume_exactly(tmp_path):
    ranks = run_ranks(tmp_path, "straight")
    for name, value in ranks[0]["weights"].items():  # every rank holds the same weights
        assert torch.equal(value, ranks[1]["weights"][name])
    single, single_loss = train(replace(SETTINGS, batch_size=8), tmp_path / "single")
    for name, value in single.items():
        torch.testing.assert_close(ranks[0]["weights"][name], value, rtol=1e-5, atol=1e-6)
    assert ranks[0]["loss"] == pytest.approx(single_loss, rel=1e-5)
    first_loss = train(replace(SETTINGS, steps=0), tmp_path / "untrained")[1]
    assert single_loss < 0.8 * first_loss  # it learnt something worth comparing
    # rank 0 alone wrote the checkpoint; a run stopped at step 3 and resumed equals the straight run
    assert (tmp_path / "straight" / "run" / "checkpoints" / "last").is_dir()
    resumed = run_ranks(tmp_path, "resumed", stop_at=3)
    for name, value in ranks[0]["weights"].items():
        torch.testing.assert_close(resumed[0]["weights"][name], value, rtol=0, atol=0)


@pytest.mark.slow
def test_torchrun_trains_a_policy_on_two_processes_and_rank_0_writes(tmp_path, tiny_datasets):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    dataset = tiny_datasets(episodes=2, frames=8)
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), OMP_NUM_THREADS="1")
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "vla_kd.cli",
        "train",
        f"dataset={dataset}",
        "model.hidden=16",
        "model.horizon=2",
        "trainer.steps=4",
        "trainer.batch_size=4",
        "trainer.distributed=true",
        "trainer.progress=false",
        "tracker=none",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4 and summary["samples"] == 4 * 4 * 2
    assert (tmp_path / "policy" / "config.json").is_file()
    assert proc.stdout.count('"processes": 2') == 1  # one summary, rank 0's
    # a method that trains from rollouts refuses in one line
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_kd.cli",
            "train",
            "method=opd",
            "trainer.distributed=true",
            "tracker=none",
            f"hydra.run.dir={tmp_path / 'opd'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode != 0 and "Data-parallel methods: " in refused.stderr
    assert "Traceback" not in refused.stderr
