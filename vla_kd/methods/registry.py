"""Training methods by name: ``vla-kd train method=<name>`` and the pipeline's ``students`` look
them up here.

A method module registers its :class:`~vla_kd.methods.distiller.Distiller` with
:func:`register`, which also stores the method's config dataclass in Hydra's ConfigStore as
``method/<name>_schema``, the schema its ``configs/method/<name>.yaml`` names. The registry
finds the modules itself (every module under ``vla_kd.methods``), so a new method is its module,
its YAML and its tests, with no list to edit.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from hydra.core.config_store import ConfigStore

import vla_kd.methods
from vla_kd.errors import unknown_name

if TYPE_CHECKING:  # the registry stays light: the CLI reads it before any model code is needed
    from vla_kd.methods.distiller import Distiller

_DISTILLERS: dict[str, type[Distiller]] = {}
SCHEMA_SUFFIX = "_schema"


def register(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: ``cls`` answers to ``cls.name``; its config is the schema of the
    ``method`` config group's ``<name>`` option."""
    _DISTILLERS[cls.name] = cls
    ConfigStore.instance().store(group="method", name=f"{cls.name}{SCHEMA_SUFFIX}", node=cls.config_class)
    return cls


def load_all() -> None:
    """Import every method module, so that each registers itself (idempotent)."""
    for module in pkgutil.walk_packages(vla_kd.methods.__path__, prefix="vla_kd.methods."):
        importlib.import_module(module.name)


def names() -> list[str]:
    """The registered method names, sorted."""
    load_all()
    return sorted(_DISTILLERS)


def get(name: str) -> Distiller:
    """A fresh distiller of method ``name``, or a one-line error suggesting the nearest name."""
    load_all()
    if name not in _DISTILLERS:
        raise unknown_name("method", name, _DISTILLERS)
    return _DISTILLERS[name]()
