"""Teacher actions for the states of a whole rollout, computed once, in batches.

The teacher is frozen, so its label for a state never changes between PPO's epochs and
minibatches: labelling the rollout once is exact and costs one teacher pass per rollout instead
of one per minibatch per epoch. Two kinds of teacher:

* stateless models (saved policy folders such as the TokenVLA): every stored state is labelled
  independently, in flat batches, by the first action of the chunk the model would predict;
* stateful experts (the scripted ones, which keep a phase per env): the rollout is replayed
  in time order, one batch of ``n_envs`` states per step, and an env's phase is reset where
  its episode started, exactly as if the expert had been queried alongside the student.
"""

from __future__ import annotations

import numpy as np

from vla_kd.envs.rl import contract_from_rl
from vla_kd.errors import UserError
from vla_kd.policies.base import Policy
from vla_kd.policies.pretrained import PretrainedPolicy


def is_stateless(teacher: Policy) -> bool:
    return isinstance(teacher, PretrainedPolicy)


def check_teacher(teacher: Policy) -> None:
    """Raise a one-line error for a teacher the labeller cannot query off-line."""
    if not is_stateless(teacher) and not hasattr(teacher, "reset_envs"):
        raise UserError(
            f"teacher '{getattr(teacher, 'name', type(teacher).__name__)}' keeps per-episode memory "
            "but cannot reset single envs, so it cannot label a vectorised rollout"
        )


def first_actions(teacher: PretrainedPolicy, obs: dict) -> np.ndarray:
    """``(B, 7)`` first actions of the teacher's predicted chunks for a contract batch."""
    if hasattr(teacher, "predict_first_action"):
        return np.asarray(teacher.predict_first_action(obs), dtype=np.float32)
    return np.asarray(teacher.predict_action_chunk(obs), dtype=np.float32)[:, 0]


def _contract_batch(observations: dict, index, instruction: str) -> dict:
    batch = {k: v[index] for k, v in observations.items()}
    if "rgb" in batch:  # SB3's buffer stores every key as float32
        batch["rgb"] = np.asarray(batch["rgb"]).round().astype(np.uint8)
    batch = contract_from_rl(batch)
    batch["instruction"] = [instruction] * len(next(iter(batch.values())))
    return batch


def label_rollout(
    teacher: Policy,
    observations: dict[str, np.ndarray],
    episode_starts: np.ndarray,
    instruction: str,
    batch_size: int = 256,
) -> np.ndarray:
    """Teacher actions ``(n_steps, n_envs, 7)`` for a rollout's ``observations`` (key ->
    ``(n_steps, n_envs, ...)``, RL layout) with ``episode_starts`` ``(n_steps, n_envs)``."""
    import torch

    check_teacher(teacher)
    n_steps, n_envs = episode_starts.shape
    labels = np.zeros((n_steps, n_envs, 7), np.float32)
    with torch.no_grad():
        if is_stateless(teacher):
            flat = {k: v.reshape(n_steps * n_envs, *v.shape[2:]) for k, v in observations.items()}
            out = labels.reshape(n_steps * n_envs, 7)
            for start in range(0, n_steps * n_envs, batch_size):
                index = slice(start, start + batch_size)
                out[index] = first_actions(teacher, _contract_batch(flat, index, instruction))
            return labels
        for t in range(n_steps):
            restarted = np.flatnonzero(episode_starts[t])
            if len(restarted):
                teacher.reset_envs(restarted)
            labels[t] = teacher.act(_contract_batch(observations, t, instruction))
    return labels
