"""Evaluation episodes/s with 1 and N local worker processes and Ray tasks, and training samples/s
with 1 and N data-parallel processes (torchrun), side by side in one run.

    python scripts/bench_scale_out.py --dataset runs/pipeline/<time>/dataset --out runs/bench_scale_out

Writes ``scale_out.json`` and ``scale_out.md`` under ``--out``; see
``vla_kd.benchmarks.scale_out`` for what is timed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from vla_kd.benchmarks.scale_out import evaluation_throughput, markdown, training_throughput
from vla_kd.ray_engine import connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a LeRobot dataset for the training rows")
    parser.add_argument("--task", default="maniskill/PushCube-v1")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200, help="training steps per contestant")
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ray-address", default=None, help="a running Ray cluster (default: a local one)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [evaluation_throughput(args.task, args.episodes, n, args.max_steps) for n in (1, args.processes)]
    connect(args.ray_address, num_cpus=args.processes)  # the cluster's start-up is not timed
    rows += [evaluation_throughput(args.task, args.episodes, n, args.max_steps, engine="ray")
             for n in (1, args.processes)]
    # the same again: the workers started above now have everything imported
    rows += [evaluation_throughput(args.task, args.episodes, n, args.max_steps, engine="ray", label=", warm")
             for n in (1, args.processes)]
    rows += [
        training_throughput(args.dataset, n, args.steps, args.batch_size, args.out / f"train_{n}")
        for n in (1, args.processes)
    ]
    table = markdown(rows)
    (args.out / "scale_out.json").write_text(
        json.dumps([{**dataclasses.asdict(r), "per_second": r.per_second} for r in rows], indent=2)
    )
    (args.out / "scale_out.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
