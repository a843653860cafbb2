"""Resolve the ``policy=`` argument: ``random``, ``scripted`` or a saved policy folder."""
from __future__ import annotations

import importlib
from pathlib import Path

from vla_kd.errors import UserError, unknown_name
from vla_kd.policies.base import Policy, RandomPolicy

BUILTIN = ("random", "scripted")
POLICY_MODULES = (
    "vla_kd.policies.mlp_bc",
    "vla_kd.teachers.token_vla",
    "vla_kd.teachers.action_expert",
    "vla_kd.policies.gaussian_mlp",
    "vla_kd.policies.skip_vla",
    "vla_kd.policies.aligned_vla",
)

#: policy_type (in a saved folder's config.json) -> PretrainedPolicy subclass.
POLICY_CLASSES: dict[str, type] = {}


def register_policy_type(cls: type) -> type:
    """Class decorator: folders saved with ``cls.policy_type`` load as ``cls``."""
    POLICY_CLASSES[cls.policy_type] = cls
    return cls


def _import_policy_modules() -> None:
    """Import every module that registers a policy type (kept lazy: torch models are heavy)."""
    for module in POLICY_MODULES:
        importlib.import_module(module)


def looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.startswith(".") or Path(spec).exists()


def check_policy_spec(spec: str) -> None:
    """Validate ``policy=`` before any simulator starts."""
    if spec in BUILTIN:
        return
    if not looks_like_path(spec):
        raise unknown_name("policy", spec, (*BUILTIN, "<path to a saved policy folder>"))
    from vla_kd.policies.pretrained import read_config

    _import_policy_modules()
    policy_type = read_config(Path(spec))["policy_type"]
    if policy_type not in POLICY_CLASSES:
        raise unknown_name(f"policy_type in {Path(spec) / 'config.json'}", policy_type, POLICY_CLASSES)


def build_policy(
    spec: str, env, seed: int = 0, action_steps: int | None = None, sample_actions: bool = False
) -> Policy:
    """The policy named by ``spec`` for ``env`` (``action_steps``: how many actions of each
    predicted chunk a chunked policy executes before predicting again; None: all;
    ``sample_actions``: an RL student samples its Gaussian, seeded by ``seed``, instead of
    acting with the mean)."""
    check_policy_spec(spec)
    if sample_actions and not is_rl_student(spec):  # refused before anything is loaded or built
        raise UserError(f"sample_actions=true needs an RL student (gaussian_student), not '{spec}'")
    if spec == "random":
        return RandomPolicy(seed)
    if spec == "scripted":
        from vla_kd.teachers.scripted import scripted_policy_for

        return scripted_policy_for(env)
    from vla_kd.policies.pretrained import PretrainedPolicy

    policy = PretrainedPolicy.from_pretrained(spec)
    if action_steps is not None and hasattr(policy, "n_action_steps"):
        policy.n_action_steps = int(action_steps)
    if sample_actions:
        policy.sample_with(seed)
    return policy


def is_rl_student(spec: str) -> bool:
    """Whether ``spec`` is a saved PPO/RPD student folder (a ``gaussian_student``)."""
    if spec in BUILTIN:
        return False
    from vla_kd.policies.pretrained import read_config

    return read_config(Path(spec))["policy_type"] == "gaussian_student"


def _seeing_config(model: dict) -> dict:
    """The part of a saved model config that says what it sees: its own, or for an aligned VLA
    (which keeps no image settings of its own) its VLM's."""
    return model if "image_size" in model else model.get("vlm", model)


def policy_image_size(spec: str) -> int | None:
    """The camera size a saved policy folder was trained at (None for built-in policies)."""
    if spec in BUILTIN:
        return None
    from pathlib import Path

    from vla_kd.policies.pretrained import read_config

    return _seeing_config(read_config(Path(spec)).get("config", {})).get("image_size")


def policy_cameras(spec: str) -> tuple[str, ...]:
    """The observation cameras a saved policy folder reads (``cameras`` in its config; the
    agent view alone when absent); empty for built-in policies."""
    if spec in BUILTIN:
        return ()
    from pathlib import Path

    from vla_kd.policies.pretrained import read_config

    return tuple(_seeing_config(read_config(Path(spec)).get("config", {})).get("cameras") or ("rgb",))


def policy_observation(spec: str) -> tuple[str | None, bool]:
    """(the obs_mode a saved policy folder requires or None, whether it reads privileged state).

    RL students trained on privileged state declare it in their config; a folder whose model
    reads a camera (``image_size`` set, ``use_image`` not false) requires ``rgb``; other policies
    take the evaluation's ``obs_mode`` (scripted experts always get privileged state)."""
    if spec == "scripted":
        return None, True
    if spec in BUILTIN:
        return None, False
    from vla_kd.policies.pretrained import read_config

    config = read_config(Path(spec))
    if config["policy_type"] != "gaussian_student":
        model = _seeing_config(config.get("config", {}))
        return ("rgb" if model.get("image_size") and model.get("use_image", True) else None), False
    from vla_kd.policies.gaussian_mlp import observation_needs

    return observation_needs(config["config"].get("observation", "state"))

