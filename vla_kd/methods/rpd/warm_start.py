"""Behaviour-cloning warm start of an RL student's actor on the teacher's own rollouts.

RPD as published starts its student from scratch and lets the teacher term pull it along. With
a chunked VLA teacher on this CPU that is slow: the teacher term stalls well above the labels'
own spread (docs/experiments/rpd.md). The warm start clones the teacher first, then RL
(RPD or PPO) fine-tunes from there:

1. the *teacher* acts in the very training envs the student will use, so what is recorded is
   exactly what the student reads (its observation keys, in RL layout) and each label is the
   action (or, for a chunk-acting student, the k-action chunk) the teacher executed there;
2. the student's actor mean (features, actor MLP, action head) is fit to those labels by MSE,
   the loss RPD's default teacher term uses, with its own Adam optimiser; the critic and the
   log-std are left to RL.

No library offers this for SB3 policies (``imitation``'s BC trains a fresh policy from
transitions and has no chunk labels), so it is written here; it is a plain regression.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.policies import ActorCriticPolicy
from tqdm.auto import tqdm

from vla_kd.envs.rl import executed_steps
from vla_kd.methods.rpd.labels import check_teacher, contract_batch, first_chunk_actions
from vla_kd.policies.gaussian_mlp import actor_mean


@dataclass
class TeacherDecisions:
    """What the teacher's warm-start rollouts recorded, one row per decision."""

    observations: dict[str, np.ndarray]  # the student's keys, RL layout, (N, ...)
    labels: np.ndarray  # (N, chunk * 7)
    episodes: int  # episodes that ended
    successes: int  # of those, how many succeeded
    env_steps: int  # env steps executed (a chunk decision executes up to k of them)
    seconds: float


def collect_teacher_decisions(
    venv, teacher, instruction: str, episodes: int, keys: tuple[str, ...], chunk: int = 1,
    progress: bool = False,
) -> TeacherDecisions:
    """Let ``teacher`` act in ``venv`` (the student's SB3 training envs) until ``episodes``
    episodes have ended; record the student's ``keys`` and the teacher's executed action at
    every decision. A chunk-acting student's decision executes the teacher's first ``chunk``
    predicted actions, so a chunked teacher acts as it does in evaluation when ``chunk``
    equals its horizon."""
    check_teacher(teacher, chunk)
    if hasattr(teacher, "eval"):
        teacher.eval()
    started = time.perf_counter()
    n_envs = venv.num_envs
    rows: dict[str, list] = {k: [] for k in keys}
    labels: list[np.ndarray] = []
    ended = succeeded = env_steps = 0
    if hasattr(teacher, "reset"):
        teacher.reset()
    obs = venv.reset()
    bar = tqdm(total=episodes, desc="warm start: teacher episodes", disable=not progress)
    with torch.no_grad():
        while ended < episodes:
            batch = contract_batch(obs, slice(None), instruction)
            if chunk > 1:
                action = first_chunk_actions(teacher, batch, chunk)
            else:
                action = np.asarray(teacher.act(batch), np.float32)
            for key in keys:
                rows[key].append(np.asarray(obs[key]).copy())
            labels.append(action)
            obs, _, dones, infos = venv.step(action)
            env_steps += executed_steps(infos)
            finished = np.flatnonzero(dones)
            if len(finished):
                ended += len(finished)
                succeeded += sum(bool(infos[i].get("is_success", False)) for i in finished)
                bar.update(len(finished))
                if chunk == 1 and hasattr(teacher, "reset_envs"):
                    teacher.reset_envs(finished)
    bar.close()
    return TeacherDecisions(
        observations={k: np.concatenate(v) for k, v in rows.items()},
        labels=np.concatenate(labels).reshape(len(labels) * n_envs, -1),
        episodes=ended,
        successes=succeeded,
        env_steps=env_steps,
        seconds=time.perf_counter() - started,
    )


def fit_actor(
    policy: ActorCriticPolicy,
    decisions: TeacherDecisions,
    steps: int,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    held_out: float = 0.1,
    progress: bool = False,
) -> dict[str, float]:
    """Fit ``policy``'s actor mean to ``decisions.labels`` by MSE for ``steps`` Adam steps;
    a random ``held_out`` fraction of the decisions is kept out to report overfitting. Returns
    the first, final and held-out MSE."""
    generator = torch.Generator().manual_seed(seed)
    observations = {k: torch.as_tensor(v) for k, v in decisions.observations.items()}
    labels = torch.as_tensor(decisions.labels, dtype=torch.float32)
    order = torch.randperm(len(labels), generator=generator)
    n_test = round(held_out * len(labels)) if len(labels) > 1 else 0
    test, train = order[:n_test], order[n_test:]
    actor = [policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net]
    parameters = list(dict.fromkeys(p for module in actor for p in module.parameters()))
    optimiser = torch.optim.Adam(parameters, lr=learning_rate)
    policy.set_training_mode(True)
    losses = []
    for _ in tqdm(range(steps), desc="warm start: fit actor", disable=not progress):
        index = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=generator)]
        loss = F.mse_loss(actor_mean(policy, {k: v[index] for k, v in observations.items()}), labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    policy.set_training_mode(False)
    result = {"first_mse": losses[0] if losses else float("nan"),
              "final_mse": float(np.mean(losses[-50:])) if losses else float("nan")}
    if n_test:
        with torch.no_grad():
            result["held_out_mse"] = F.mse_loss(
                actor_mean(policy, {k: v[test] for k, v in observations.items()}), labels[test]
            ).item()
    return result
