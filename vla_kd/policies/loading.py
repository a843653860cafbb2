"""Every way a policy is named on the command line, resolved: ``random``, ``scripted`` (the
task's privileged-state expert) or a saved policy folder, plus what a folder's ``config.json``
says about the observations it needs, read without building the model."""
from __future__ import annotations

from pathlib import Path

from vla_kd.errors import UserError, unknown_name
from vla_kd.policies.base import Policy, RandomPolicy
from vla_kd.policies.pretrained import CONFIG_NAME, PretrainedPolicy, read_config
from vla_kd.policies.registry import TACTILE_POLICY_TYPES, check_policy_type
from vla_kd.policies.scripted_libero import LiberoPickPlaceExpert
from vla_kd.policies.scripted_maniskill import maniskill_expert_for
from vla_kd.policies.student_observations import observation_needs

BUILTIN = ("random", "scripted")


def looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.startswith(".") or Path(spec).exists()


def check_policy_spec(spec: str) -> None:
    """Validate ``policy=`` before any simulator starts."""
    if spec in BUILTIN:
        return
    if not looks_like_path(spec):
        raise unknown_name("policy", spec, (*BUILTIN, "<path to a saved policy folder>"))
    check_policy_type(read_config(Path(spec))["policy_type"], str(Path(spec) / CONFIG_NAME))


def load_policy(
    folder: str | Path | None, expected_type: str | tuple[str, ...] | None = None, role: str = "policy",
    user: str = "",
) -> PretrainedPolicy:
    """The saved policy at ``folder``, with one-line errors for a missing folder, a corrupt one,
    or (``expected_type``: one type or several) a policy of another type; ``role`` and ``user``
    name the setting and the command or method asking, for those errors (``method=ceed needs
    teacher=...``)."""
    asking = f"{user} " if user else ""
    accepted = (expected_type,) if isinstance(expected_type, str) else tuple(expected_type or ())
    kinds = " or ".join(accepted)
    if not folder or str(folder) == "none":
        kind = f"a saved {kinds} policy" if accepted else "a saved policy"
        raise UserError(f"{asking}needs {role}=<folder of {kind}>")
    actual = read_config(Path(folder))["policy_type"]
    if accepted and actual not in accepted:
        raise UserError(f"{asking}reads a {kinds} as {role}; '{folder}' holds a {actual}")
    return PretrainedPolicy.from_pretrained(folder)


def scripted_policy_for(env) -> Policy:
    """The scripted expert for ``env``'s task (LIBERO: one pick-and-place expert driven by the
    task's BDDL goal), or a one-line error naming the tasks that have one."""
    if hasattr(env, "goal"):
        return LiberoPickPlaceExpert(env.layout, env.goal)
    return maniskill_expert_for(env)


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
        return scripted_policy_for(env)
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
    return read_config(Path(spec))["policy_type"] == "gaussian_student"


def _seeing_config(model: dict) -> dict:
    """The part of a saved model config that says what it sees: its own, or for an aligned VLA
    (which keeps no image settings of its own) its VLM's."""
    return model if "image_size" in model else model.get("vlm", model)


def policy_image_size(spec: str) -> int | None:
    """The camera size a saved policy folder was trained at (None for built-in policies)."""
    if spec in BUILTIN:
        return None
    return _seeing_config(read_config(Path(spec)).get("config", {})).get("image_size")


def policy_cameras(spec: str) -> tuple[str, ...]:
    """The observation cameras a saved policy folder reads (``cameras`` in its config; the
    agent view alone when absent); empty for built-in policies."""
    if spec in BUILTIN:
        return ()
    return tuple(_seeing_config(read_config(Path(spec)).get("config", {})).get("cameras") or ("rgb",))


def policy_reads_tactile(spec: str) -> bool:
    """Whether a saved policy folder reads the fingers' contact forces (a tactile teacher)."""
    if spec in BUILTIN:
        return False
    return read_config(Path(spec)).get("policy_type") in TACTILE_POLICY_TYPES


def policy_observation(spec: str) -> tuple[str | None, bool]:
    """(the obs_mode a saved policy folder requires or None, whether it reads privileged state).

    RL students trained on privileged state declare it in their config; a folder whose model
    reads a camera (``image_size`` set, ``use_image`` not false) requires ``rgb``; other policies
    take the evaluation's ``obs_mode`` (scripted experts always get privileged state)."""
    if spec == "scripted":
        return None, True
    if spec in BUILTIN:
        return None, False
    config = read_config(Path(spec))
    if config["policy_type"] != "gaussian_student":
        model = _seeing_config(config.get("config", {}))
        return ("rgb" if model.get("image_size") and model.get("use_image", True) else None), False
    return observation_needs(config["config"].get("observation", "state"))
