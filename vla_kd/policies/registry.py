"""Resolve the ``policy=`` argument: ``random``, ``scripted`` or a saved policy folder."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from vla_kd.errors import UserError, unknown_name
from vla_kd.policies.base import Policy, RandomPolicy

BUILTIN = ("random", "scripted")

#: policy_type (in a saved folder's config.json) -> loader taking the folder.
POLICY_TYPES: dict[str, Callable[[Path], Policy]] = {}


def register_policy_type(name: str) -> Callable:
    """Class decorator: ``cls.from_pretrained(folder)`` loads folders saved with this type."""

    def wrap(cls):
        POLICY_TYPES[name] = cls.from_pretrained
        return cls

    return wrap


def looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.startswith(".") or Path(spec).exists()


def check_policy_spec(spec: str) -> None:
    """Validate ``policy=`` before any simulator starts."""
    if spec in BUILTIN:
        return
    if not looks_like_path(spec):
        raise unknown_name("policy", spec, (*BUILTIN, "<path to a saved policy folder>"))
    folder = Path(spec)
    if not folder.is_dir():
        raise UserError(f"policy folder '{spec}' does not exist")
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"'{spec}' is not a saved policy: it has no config.json")
    try:
        policy_type = json.loads(config.read_text())["policy_type"]
    except (json.JSONDecodeError, KeyError) as err:
        raise UserError(f"'{config}' is corrupt or has no 'policy_type' ({err})") from None
    if policy_type not in POLICY_TYPES:
        raise unknown_name("policy_type in " + str(config), policy_type, POLICY_TYPES)


def build_policy(spec: str, env, seed: int = 0) -> Policy:
    """The policy named by ``spec`` for ``env``."""
    check_policy_spec(spec)
    if spec == "random":
        return RandomPolicy(seed)
    if spec == "scripted":
        from vla_kd.teachers.scripted import scripted_policy_for

        return scripted_policy_for(env)
    folder = Path(spec)
    policy_type = json.loads((folder / "config.json").read_text())["policy_type"]
    return POLICY_TYPES[policy_type](folder)
