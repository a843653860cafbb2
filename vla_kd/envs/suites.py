"""Named task suites and their evaluation protocol, read from ``configs/suite/*.yaml``."""
from __future__ import annotations

from dataclasses import dataclass

from vla_kd.config_checks import ConfigValueError, at_least
from vla_kd.envs.base import TaskId
from vla_kd.envs.libero import num_tasks
from vla_kd.errors import UserError


@dataclass
class Suite:
    """A list of tasks evaluated under one protocol."""

    name: str
    tasks: list[str]
    max_episode_steps: int | None = None  # null: each task's registered limit (LIBERO: the protocol's)
    description: str = ""

    def __post_init__(self) -> None:
        at_least(self, 1, "max_episode_steps")
        if not self.tasks:
            raise ConfigValueError("tasks", "must name at least one task")


def expand_tasks(patterns: list[str]) -> list[str]:
    """Expand ``libero/<suite>/*`` into every task index of that suite; keep others as given."""
    tasks: list[str] = []
    for pattern in patterns:
        if pattern.endswith("/*"):
            prefix = pattern[:-2]
            backend, _, suite = prefix.partition("/")
            if backend != "libero":
                raise UserError(f"only LIBERO suites can be globbed, not '{pattern}'")

            tasks.extend(f"{prefix}/{i}" for i in range(num_tasks(suite)))
        else:
            tasks.append(str(TaskId.parse(pattern)))
    return tasks


def suite_from_config(cfg) -> Suite:
    """Build a Suite from the composed ``suite`` config node."""
    return Suite(
        name=cfg.name,
        tasks=expand_tasks(list(cfg.tasks)),
        max_episode_steps=cfg.max_episode_steps,
        description=cfg.description,
    )
