"""Episodes spread over worker processes in contiguous blocks, one torch thread per worker (the
simulators are single-threaded and the workers share the cores). The evaluator and OPD's
rollouts both run their episodes through :func:`map_blocks`."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import numpy as np
import torch

Result = TypeVar("Result")


def single_torch_thread() -> None:
    """Initializer of rollout worker processes: one torch thread each, as they share the cores."""
    torch.set_num_threads(1)


def contiguous_blocks(items: Sequence, workers: int) -> list[list]:
    """``items`` in at most ``workers`` contiguous, non-empty blocks of near-equal size."""
    count = max(1, min(workers, len(items)))
    return [[items[int(i)] for i in b] for b in np.array_split(np.arange(len(items)), count) if len(b)]


def map_blocks(work: Callable[[list, int], Result], items: Sequence, workers: int) -> list[Result]:
    """``work(block, block_index)`` for each contiguous block of ``items``, in order: in this
    process for one block, else in a pool of worker processes (``work`` must pickle)."""
    blocks = contiguous_blocks(items, workers)
    if len(blocks) == 1:
        return [work(blocks[0], 0)]
    # forkserver: a fork of a process holding a renderer or torch threads is not safe.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(len(blocks), mp_context=context, initializer=single_torch_thread) as pool:
        futures = [pool.submit(work, block, i) for i, block in enumerate(blocks)]
        return [future.result() for future in futures]
