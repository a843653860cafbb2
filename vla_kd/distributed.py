"""Data-parallel training with torch.distributed, as ``torchrun`` launches it.

Every process (rank) holds the whole model, reads its own share of each batch and averages its
gradients with the others' before the optimiser step, so all ranks keep identical weights; rank
0 alone writes checkpoints, the saved policy, the summary and the tracker. CPUs talk over gloo,
GPUs over NCCL. One process (no ``torchrun``) is world size 1 and changes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

from vla_kd.errors import UserError


def launched_by_torchrun() -> bool:
    """True inside a process ``torchrun`` started (it sets these variables for each rank)."""
    return all(key in os.environ for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_from_environment() -> None:
    """Join the process group ``torchrun`` set up (once; gloo on CPU, NCCL with a GPU)."""
    if dist.is_initialized():
        return
    if not launched_by_torchrun():
        raise UserError(
            "trainer.distributed=true runs under torchrun: torchrun --nproc_per_node=2 -m vla_kd.cli "
            "train ... trainer.distributed=true (README, Scaling out)"
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on the process that writes (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Each gradient replaced by its mean over the ranks (what DistributedDataParallel does after
    backward; the methods' losses call many model functions besides ``forward``, whose hooks
    DDP relies on, so the all-reduce is done here, one flat buffer per call)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_from_main(value):
    """Rank 0's ``value`` on every rank (e.g. the run folder, which Hydra names by the time)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
