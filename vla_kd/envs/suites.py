"""Named task suites and their evaluation protocol, read from ``configs/suite/*.yaml``."""
from __future__ import annotations

from dataclasses import dataclass

from vla_kd.envs.base import TaskId
from vla_kd.errors import UserError


@dataclass
class Suite:
    """A list of tasks evaluated under one protocol."""

    name: str
    tasks: list[str]
    max_episode_steps: int | None = None
    description: str = ""


def expand_tasks(patterns: list[str]) -> list[str]:
    """Expand ``libero/<suite>/*`` into every task index of that suite; keep others as given."""
    tasks: list[str] = []
    for pattern in patterns:
        if pattern.endswith("/*"):
            prefix = pattern[:-2]
            backend, _, suite = prefix.partition("/")
            if backend != "libero":
                raise UserError(f"only LIBERO suites can be globbed, not '{pattern}'")
            from vla_kd.envs.libero import num_tasks

            tasks.extend(f"{prefix}/{i}" for i in range(num_tasks(suite)))
        else:
            tasks.append(str(TaskId.parse(pattern)))
    return tasks


def suite_from_config(cfg) -> Suite:
    """Build a Suite from the composed ``suite`` config node."""
    return Suite(
        name=cfg.name,
        tasks=expand_tasks(list(cfg.tasks)),
        max_episode_steps=cfg.get("max_episode_steps"),
        description=cfg.get("description", ""),
    )
