"""Throughput past one process, side by side in one run: evaluation episodes per second with 1
and N local worker processes and as 1 and N Ray tasks (``engine=ray``, on a local Ray cluster
started before the clock runs), and training samples per second for 1 and N data-parallel
processes (``torchrun`` + ``trainer.distributed=true``), each timed by the command users run."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from vla_kd.envs import make_env
from vla_kd.evaluator import evaluate_task
from vla_kd.policies.base import RandomPolicy


@dataclasses.dataclass
class Throughput:
    """One contestant: what ran, on how many processes, and its rate."""

    job: str  # "evaluation" or "training"
    engine: str  # local workers, torchrun, ...
    processes: int
    units: int  # episodes or samples
    seconds: float

    @property
    def per_second(self) -> float:
        return self.units / self.seconds


def random_policy(env) -> RandomPolicy:
    return RandomPolicy(seed=0)


def evaluation_throughput(
    task: str, episodes: int, workers: int, max_steps: int, engine: str = "local", label: str = ""
) -> Throughput:
    """A random policy's episodes of ``task`` (state observations: the simulator's cost, not a
    network's) through the evaluator's worker processes or Ray tasks (``engine="ray"``: join or
    start the cluster first, :func:`vla_kd.ray_engine.connect`). Local workers fork from a
    server that has imported the suite already; a Ray task's first run in a new worker process
    imports torch, the simulator and the suite, a fixed cost per worker that later tasks of the
    same driver do not pay again (the ``warm`` rows)."""
    make = partial(make_env, task, obs_mode="state", max_episode_steps=max_steps)
    started = time.perf_counter()
    evaluate_task(task, make, random_policy, episodes, seed=100000, progress=False, workers=workers,
                  engine=engine)
    name = ("Ray tasks" if engine == "ray" else "local workers") + label
    return Throughput("evaluation", name, workers, episodes, time.perf_counter() - started)


def training_throughput(dataset: str, processes: int, steps: int, batch_size: int, run_dir: Path,
                        overrides: tuple[str, ...] = ()) -> Throughput:
    """``vla-kd train`` on ``dataset`` (batch ``batch_size`` per process), under torchrun for
    more than one process; samples per second of its training loop (``time/samples`` over
    ``time/seconds`` as the trainer logs them, not counting start-up)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    args = [f"dataset={dataset}", f"trainer.steps={steps}", f"trainer.batch_size={batch_size}",
            f"trainer.log_every={steps}", "trainer.progress=false", "tracker.mode=disabled",
            f"hydra.run.dir={run_dir}", *overrides]
    env = dict(os.environ)
    if processes == 1:
        command = [sys.executable, "-m", "vla_kd.cli", "train", *args]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        command = [torchrun, "--standalone", f"--nproc_per_node={processes}", "-m", "vla_kd.cli", "train",
                   *args, "trainer.distributed=true"]
        env["OMP_NUM_THREADS"] = "1"  # the processes share the cores
    proc = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"training on {processes} process(es) failed:\n{proc.stderr[-2000:]}")
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    return Throughput("training", "torchrun" if processes > 1 else "one process", processes,
                      int(last["time/samples"]), float(last["time/seconds"]))


def markdown(rows: list[Throughput]) -> str:
    """The side-by-side table: each row's rate against its engine's one-process row, and each
    evaluation row's against the local workers' row of equal count (the engine's overhead)."""
    one_process = {r.job: r.per_second for r in rows if r.processes == 1}
    one_process.update({(r.job, r.engine): r.per_second for r in rows if r.processes == 1})
    local = {r.processes: r.per_second for r in rows if r.engine == "local workers"}
    lines = ["| job | engine | processes | units | seconds | per second | vs 1 process "
             "| vs local, same count |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        unit = "episodes" if r.job == "evaluation" else "samples"
        base = one_process.get((r.job, r.engine), one_process[r.job])
        against_local = f"{r.per_second / local[r.processes]:.2f}x" if r.job == "evaluation" else ""
        lines.append(f"| {r.job} | {r.engine} | {r.processes} | {r.units} {unit} | {r.seconds:.1f} | "
                     f"{r.per_second:.2f} | {r.per_second / base:.2f}x | {against_local} |")
    return "\n".join(lines)
