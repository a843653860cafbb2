"""What an RL student reads, by kind: a name to contract observation keys. Apart from the
student's network (``gaussian_mlp``) so that reading a saved folder's needs imports no SB3."""
from __future__ import annotations

from vla_kd.errors import unknown_name

OBSERVATIONS = {"state": ("state", "privileged"), "rgb": ("rgb", "state")}


def student_keys(observation: str) -> tuple[str, ...]:
    """Observation keys a student of kind ``observation`` (``state`` | ``rgb``) reads."""
    if observation not in OBSERVATIONS:
        raise unknown_name("student observation", observation, OBSERVATIONS)
    return OBSERVATIONS[observation]


def observation_needs(observation: str) -> tuple[str, bool]:
    """(the contract obs_mode, whether privileged state is read) for a student of this kind."""
    keys = student_keys(observation)
    return ("rgb" if "rgb" in keys else "state"), "privileged" in keys
