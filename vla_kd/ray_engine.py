"""Blocks of episodes as Ray tasks (``engine=ray`` of ``vla-kd eval`` and ``vla-kd demos``).

Each block is one task needing one CPU: the task builds its simulator once and rolls out the
whole block, exactly as a local worker process does, so results match ``workers=N`` on the same
seeds. Every node of the cluster needs vla_kd installed (the tasks import it); the driver only
submits blocks and gathers their results, in block order."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from vla_kd.errors import UserError

Result = TypeVar("Result")


def connect(address: str | None, num_cpus: int | None) -> None:
    """Join the Ray cluster at ``address`` (``host:port`` of ``ray start --head``); with no
    address, the one in ``RAY_ADDRESS``, else a local cluster of ``num_cpus`` CPUs started for
    this process (null: all of this machine's). Nothing happens when Ray is already initialised here."""
    try:
        import ray  # optional: the ray extra
    except ImportError as error:
        raise UserError(
            "engine=ray needs Ray: pip install 'vla-kd[ray]' (scripts/setup.sh installs it)"
        ) from error
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    options = {"log_to_driver": True, "configure_logging": False}
    if address:
        check_answers(address)
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **options)


def check_answers(address: str, timeout_s: float = 10.0) -> None:
    """Refuse an address where nothing listens: ``ray.init`` would retry it for minutes."""
    host, _, port = address.rpartition(":")
    if address in ("auto", "local") or address.startswith("ray://"):
        return  # Ray's own ways of finding a cluster
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as error:
        raise UserError(
            f"no Ray cluster answers at '{address}' ({error}); start one with "
            "'ray start --head --port=<port>' or leave ray_address unset for a local one"
        ) from None


def _run_block(work: Callable[[list, int], Result], block: list, index: int) -> Result:
    torch.set_num_threads(1)  # one core per task, as the local workers
    return work(block, index)


def run_blocks(
    work: Callable[[list, int], Result], blocks: Sequence[list], address: str | None
) -> list[Result]:
    """``work(block, index)`` for every block, each as a one-CPU Ray task; results in block order."""
    connect(address, num_cpus=len(blocks))
    import ray  # optional: the ray extra (connect said so if missing)

    task = ray.remote(num_cpus=1, max_retries=0)(_run_block)
    return ray.get([task.remote(work, list(block), index) for index, block in enumerate(blocks)])
