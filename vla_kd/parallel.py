"""Episodes spread over workers in contiguous blocks, one torch thread per worker (the
simulators are single-threaded and the workers share the cores). The evaluator, demonstration
recording and OPD's rollouts run their episodes through :func:`map_blocks`, on local processes
(``engine="local"``) or as tasks of a Ray cluster (``engine="ray"``, :mod:`vla_kd.ray_engine`):
the same blocks, so the same episodes meet the same simulator state either way."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import numpy as np
import torch

Result = TypeVar("Result")

#: where blocks run: worker processes of this machine, or tasks of a Ray cluster
ENGINES = ("local", "ray")


def single_torch_thread() -> None:
    """Initializer of rollout worker processes: one torch thread each, as they share the cores."""
    torch.set_num_threads(1)


def contiguous_blocks(items: Sequence, workers: int) -> list[list]:
    """``items`` in at most ``workers`` contiguous, non-empty blocks of near-equal size."""
    count = max(1, min(workers, len(items)))
    return [[items[int(i)] for i in b] for b in np.array_split(np.arange(len(items)), count) if len(b)]


def map_blocks(
    work: Callable[[list, int], Result],
    items: Sequence,
    workers: int,
    engine: str = "local",
    ray_address: str | None = None,
) -> list[Result]:
    """``work(block, block_index)`` for each contiguous block of ``items``, in order. Locally: in
    this process for one block, else in a pool of worker processes; ``engine="ray"``: one Ray
    task per block on the cluster at ``ray_address`` (see :func:`vla_kd.ray_engine.connect`).
    ``work`` must pickle."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}' (one of {', '.join(ENGINES)})")
    blocks = contiguous_blocks(items, workers)
    if engine == "ray":
        from vla_kd.ray_engine import run_blocks  # optional: the ray extra

        return run_blocks(work, blocks, ray_address)
    if len(blocks) == 1:
        return [work(blocks[0], 0)]
    # forkserver: a fork of a process holding a renderer or torch threads is not safe.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(len(blocks), mp_context=context, initializer=single_torch_thread) as pool:
        futures = [pool.submit(work, block, i) for i, block in enumerate(blocks)]
        return [future.result() for future in futures]
