"""The policy contract shared by teachers and students."""
from __future__ import annotations

import abc

import numpy as np

from vla_kd.envs.base import ACTION_DIM


def add_batch_dim(obs: dict) -> dict:
    """One env's observation -> a batch of one (strings stay strings)."""
    return {k: (v if isinstance(v, str) else np.asarray(v)[None]) for k, v in obs.items()}


def views_by_camera(images, cameras: tuple[str, ...], owner: str) -> dict:
    """``images`` as ``{camera: frames}`` for a model reading ``cameras``: a bare tensor is the
    one camera's frames (refused when the model reads several); a missing camera is an error."""
    if not isinstance(images, dict):
        if len(cameras) > 1:
            raise ValueError(f"this {owner} reads {len(cameras)} cameras {cameras}: pass a dict of them")
        return {cameras[0]: images}
    missing = [name for name in cameras if name not in images]
    if missing:
        raise ValueError(f"this {owner} reads cameras {cameras}; missing {missing}"
                         " (LIBERO's wrist camera: libero.wrist_camera=true)")
    return images


class Policy(abc.ABC):
    """Maps batched contract observations to batched 7-D actions in [-1, 1].

    ``act(obs)`` takes a dict of arrays with a leading batch dimension and returns
    ``(batch, 7)``; ``predict_action_chunk`` returns ``(batch, chunk, 7)``. ``reset()`` is called
    at the start of every episode (policies with memory clear it there).
    """

    name: str = "policy"
    #: True if the policy reads ``obs["privileged"]`` (never allowed for students of a VLA).
    uses_privileged: bool = False

    def reset(self) -> None:  # noqa: B027 - optional hook; stateless policies need nothing
        """Forget per-episode state."""

    @abc.abstractmethod
    def act(self, obs: dict) -> np.ndarray:
        """Batched observation -> ``(batch, 7)`` actions."""

    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        """Batched observation -> ``(batch, chunk, 7)``; a chunk of one by default."""
        return self.act(obs)[:, None, :]


class RandomPolicy(Policy):
    """Uniform random actions: the floor every trained policy must beat."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, obs: dict) -> np.ndarray:
        batch = len(next(v for v in obs.values() if not isinstance(v, str)))
        return self._rng.uniform(-1.0, 1.0, size=(batch, ACTION_DIM)).astype(np.float32)
