"""Teacher actions for the states of a whole rollout, computed once, in batches.

The teacher is frozen, so its label for a state never changes between PPO's epochs and
minibatches: labelling the rollout once is exact and costs one teacher pass per rollout instead
of one per minibatch per epoch. The label is the action the teacher itself would execute:

* models that act one prediction per step (``actions_per_chunk == 1``) are stateless: every
  stored state is labelled independently, in flat batches;
* teachers with memory are replayed over the rollout in time order, one batch of ``n_envs``
  states per step, resetting an env's memory where its episode started, exactly as if the
  teacher had run alongside the student. That covers the scripted experts (a phase per env)
  and chunked models such as the TokenVLA, which execute a predicted chunk open-loop and
  re-predict when it runs out. Re-predicting at every state instead would label with a
  different, much worse policy: the PushCube TokenVLA succeeds 62% of the time executing its
  4-action chunks and 1% when it re-plans after every action.
* a student that itself acts in k-action chunks (``chunk = k``) is labelled with the first k
  actions of the chunk the teacher predicts from the very state it labels, flattened to
  ``k * 7``: one fresh teacher prediction per student decision, in flat batches.
"""

from __future__ import annotations

import numpy as np
import torch

from vla_kd.envs.rl import contract_from_rl
from vla_kd.errors import UserError
from vla_kd.policies.base import Policy
from vla_kd.policies.pretrained import PretrainedPolicy


def is_stateless(teacher: Policy) -> bool:
    return isinstance(teacher, PretrainedPolicy) and getattr(teacher, "actions_per_chunk", 1) == 1


def check_teacher(teacher: Policy, chunk: int = 1) -> None:
    """Raise a one-line error for a teacher the labeller cannot query off-line (for a student
    acting in ``chunk``-action chunks: unless it predicts chunks of at least that many)."""
    if chunk > 1:
        horizon = getattr(getattr(teacher, "config", None), "horizon", None)
        if not isinstance(teacher, PretrainedPolicy) or horizon is None or horizon < chunk:
            raise UserError(
                f"a student acting in {chunk}-action chunks needs a teacher that predicts chunks of "
                f"at least {chunk} actions; '{getattr(teacher, 'name', type(teacher).__name__)}' "
                f"predicts {horizon or 1}"
            )
        return
    if not is_stateless(teacher) and not hasattr(teacher, "reset_envs"):
        raise UserError(
            f"teacher '{getattr(teacher, 'name', type(teacher).__name__)}' keeps per-episode memory "
            "but cannot reset single envs, so it cannot label a vectorised rollout"
        )


def first_actions(teacher: PretrainedPolicy, obs: dict) -> np.ndarray:
    """``(B, 7)`` first actions of the teacher's predicted chunks for a contract batch (a
    chunked model told to execute one action per prediction decodes just that one)."""
    if hasattr(teacher, "predict_first_action"):
        return np.asarray(teacher.predict_first_action(obs), dtype=np.float32)
    return np.asarray(teacher.predict_action_chunk(obs), dtype=np.float32)[:, 0]


def contract_batch(observations: dict, index, instruction: str) -> dict:
    """Rows ``index`` of RL-layout ``observations`` as a contract batch for a teacher."""
    batch = {k: v[index] for k, v in observations.items() if k != "rgb_fresh"}
    if "rgb" in batch:  # SB3's buffer stores every key as float32
        batch["rgb"] = np.asarray(batch["rgb"]).round().astype(np.uint8)
    batch = contract_from_rl(batch)
    batch["instruction"] = [instruction] * len(next(iter(batch.values())))
    return batch


def label_each_state(predict, observations: dict, n_steps: int, n_envs: int, width: int,
                     instruction: str, batch_size: int) -> np.ndarray:
    """``(n_steps, n_envs, width)``: ``predict(contract batch) -> (B, width)`` on every stored
    state independently, in flat batches (teachers without memory, and chunk labels)."""
    flat = {k: v.reshape(n_steps * n_envs, *v.shape[2:]) for k, v in observations.items()}
    out = np.zeros((n_steps * n_envs, width), np.float32)
    for start in range(0, n_steps * n_envs, batch_size):
        index = slice(start, start + batch_size)
        out[index] = predict(contract_batch(flat, index, instruction))
    return out.reshape(n_steps, n_envs, width)


def first_chunk_actions(teacher: PretrainedPolicy, obs: dict, chunk: int) -> np.ndarray:
    """``(B, chunk * 7)``: the first ``chunk`` actions of the teacher's predicted chunks, flat."""
    predicted = np.asarray(teacher.predict_action_chunk(obs), dtype=np.float32)[:, :chunk]
    return predicted.reshape(len(predicted), chunk * 7)


def label_rollout(
    teacher: Policy,
    observations: dict[str, np.ndarray],
    episode_starts: np.ndarray,
    instruction: str,
    batch_size: int = 256,
    chunk: int = 1,
) -> np.ndarray:
    """Teacher actions ``(n_steps, n_envs, 7)`` for a rollout's ``observations`` (key ->
    ``(n_steps, n_envs, ...)``, RL layout) with ``episode_starts`` ``(n_steps, n_envs)``;
    ``(n_steps, n_envs, chunk * 7)`` chunk labels for a student acting in ``chunk``-action chunks."""

    check_teacher(teacher, chunk)
    if hasattr(teacher, "eval"):
        teacher.eval()
    n_steps, n_envs = episode_starts.shape
    fresh = observations.get("rgb_fresh")
    with torch.no_grad():
        if chunk > 1:  # every stored state is a chunk-acting student's decision point
            if fresh is not None and not np.all(fresh > 0.5):
                raise RuntimeError("a chunk label would be predicted from a skipped camera frame")
            return label_each_state(
                lambda obs: first_chunk_actions(teacher, obs, chunk),
                observations, n_steps, n_envs, chunk * 7, instruction, batch_size,
            )
        if is_stateless(teacher):
            return label_each_state(
                lambda obs: first_actions(teacher, obs),
                observations, n_steps, n_envs, 7, instruction, batch_size,
            )
        labels = np.zeros((n_steps, n_envs, 7), np.float32)
        for t in range(n_steps):
            restarted = np.flatnonzero(episode_starts[t])
            if len(restarted):
                teacher.reset_envs(restarted)
            if fresh is not None and hasattr(teacher, "rows_to_predict"):
                predicting = teacher.rows_to_predict(n_envs)
                if not np.all(fresh[t, predicting, 0] > 0.5):  # the env skipped that camera frame
                    raise RuntimeError(f"the teacher would predict from a skipped camera frame at step {t}")
            labels[t] = teacher.act(contract_batch(observations, t, instruction))
    return labels
