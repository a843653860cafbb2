"""Range checks for the typed config dataclasses (Hydra checks the types, these the values).

A dataclass calls them from ``__post_init__``; a failed check raises :class:`ConfigValueError`
naming the field, and the command line prefixes the node's path (``trainer.steps must be at
least 1, got -3``)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigValueError(ValueError):
    """A config value of the right type but out of range: ``key`` and what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} {problem}")
        self.key, self.problem = key, problem


def _values(config: Any, names: Iterable[str]):
    for name in names:
        value = getattr(config, name)
        if value is not None:  # null means "not set" wherever a field allows it
            yield name, value


def at_least(config: Any, minimum: float, *names: str) -> None:
    """Each of ``names`` is None or at least ``minimum`` (every element, for a list)."""
    for name, value in _values(config, names):
        for item in value if isinstance(value, list | tuple) else [value]:
            if item < minimum:
                raise ConfigValueError(name, f"must be at least {minimum}, got {_shown(value)}")


def positive(config: Any, *names: str) -> None:
    """Each of ``names`` is None or greater than 0."""
    for name, value in _values(config, names):
        if value <= 0:
            raise ConfigValueError(name, f"must be positive, got {value}")


def fraction(config: Any, *names: str, below_one: bool = False) -> None:
    """Each of ``names`` is None or in [0, 1] ([0, 1) with ``below_one``)."""
    for name, value in _values(config, names):
        if not 0 <= value <= 1 or (below_one and value == 1):
            interval = "[0, 1)" if below_one else "[0, 1]"
            raise ConfigValueError(name, f"must be in {interval}, got {value}")


def one_of(config: Any, name: str, choices: Iterable[str]) -> None:
    """``name`` is None or one of ``choices``."""
    choices = tuple(choices)
    value = getattr(config, name)
    if value is not None and value not in choices:
        raise ConfigValueError(name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


def _shown(value: Any) -> str:
    return str(list(value)) if isinstance(value, list | tuple) else str(value)
