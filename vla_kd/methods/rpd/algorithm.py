"""Refined policy distillation (RPD, Jülg et al. 2025): PPO whose actor is also pulled toward a
frozen teacher's actions on the student's own states.

    loss = pg_loss - ent_coef * H + vf_coef * V_loss + lambda_t * L_teacher

Everything else is stable-baselines3's PPO: rollouts, GAE, the clipped surrogate, value
clipping, target-KL early stop, logging. SB3 has no hook inside ``PPO.train``, so this class
re-states that loop with the one extra term (the lines mirror SB3 2.7's). With
``teacher_weight=0`` it *is* PPO, which is how the baseline runs. The teacher labels each
rollout once (see :mod:`vla_kd.methods.rpd.labels`); minibatches read the cached labels.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import explained_variance

from vla_kd.errors import unknown_name
from vla_kd.methods.rpd.labels import check_teacher, label_rollout

TEACHER_LOSSES = ("mse", "l1", "bc", "kl")
#: The 7 action dimensions (pd_ee_delta_pose + gripper), for the per-dimension teacher error.
ACTION_PARTS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
SCHEDULES = ("constant", "cosine")


def teacher_loss(
    kind: str,
    mean: torch.Tensor,
    std: torch.Tensor,
    log_prob_of_teacher: torch.Tensor | None,
    teacher_actions: torch.Tensor,
    ratio: torch.Tensor | None = None,
    clip_range: float = 0.2,
    teacher_std: float = 0.1,
) -> torch.Tensor:
    """``L_teacher`` for a minibatch, as RPD's code defines it.

    ``mean``/``std``: the student's Gaussian ``(B, 7)``; ``log_prob_of_teacher``: the student's
    log-density of the teacher's action summed over dimensions ``(B,)`` (for ``bc``);
    ``ratio``: PPO's probability ratio ``(B,)`` (for ``kl``, where the teacher is a Gaussian
    of std ``teacher_std`` around its action and the KL is weighted by ``max(ratio, 1 - clip)``).
    """
    if kind == "mse":
        return F.mse_loss(mean, teacher_actions)
    if kind == "l1":
        return F.l1_loss(mean, teacher_actions)
    if kind == "bc":
        return -log_prob_of_teacher.mean()
    if kind == "kl":
        student = torch.distributions.Normal(mean, std)
        teacher = torch.distributions.Normal(teacher_actions, torch.full_like(teacher_actions, teacher_std))
        kl = torch.distributions.kl_divergence(student, teacher).sum(-1)
        return (kl * torch.clamp(ratio, min=1 - clip_range)).mean()
    raise unknown_name("teacher loss", kind, TEACHER_LOSSES)


def teacher_weight(env_steps: int, weight: float, schedule: str, anneal_steps: int | None) -> float:
    """lambda at ``env_steps``: constant, or ``weight * (0.5 cos(pi t / T) + 0.5)`` until
    ``T = anneal_steps`` and 0 after (RPD's cosine annealing)."""
    if schedule == "constant":
        return float(weight)
    if schedule != "cosine":
        raise unknown_name("teacher-weight schedule", schedule, SCHEDULES)
    if not anneal_steps or env_steps >= anneal_steps:
        return 0.0
    return float(weight) * (0.5 * math.cos(math.pi * env_steps / anneal_steps) + 0.5)


class LabelledSamples(NamedTuple):
    observations: dict
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    teacher_actions: torch.Tensor


class LabelledRolloutBuffer(DictRolloutBuffer):
    """SB3's dict rollout buffer plus one teacher action per stored state."""

    def reset(self) -> None:
        super().reset()
        self.teacher_actions = np.zeros((self.buffer_size, self.n_envs, self.action_dim), np.float32)

    def get(self, batch_size: int | None = None):
        if not self.generator_ready:  # SB3 flattens its own arrays on the first call
            self.teacher_actions = self.swap_and_flatten(self.teacher_actions)
        yield from super().get(batch_size)

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> LabelledSamples:
        samples = super()._get_samples(batch_inds, env)
        return LabelledSamples(*samples, teacher_actions=self.to_torch(self.teacher_actions[batch_inds]))


class RPD(PPO):
    """PPO + ``lambda_t * L_teacher`` on the actor (see the module docstring).

    ``teacher``: any suite policy (a saved model folder's policy or a scripted expert), or None
    for plain PPO; ``instruction``: the task's language instruction, given to VLA teachers;
    ``action_chunk``: actions per student decision (the envs execute chunks of that many; the
    labels are the teacher's chunks, see :mod:`vla_kd.methods.rpd.labels`);
    ``critic_warmup_steps``: for the updates of the first that many env steps only the value
    function trains (the actor's layers and the log-std stay as they are; an rgb student's
    shared CNN learns from the value loss), so a student that starts from a
    clone meets its first policy-gradient step with a critic fitted to its own returns, not a
    random one whose advantages would push the clone anywhere.
    """

    def __init__(
        self,
        policy,
        env,
        teacher=None,
        instruction: str = "",
        teacher_loss: str = "mse",
        teacher_weight: float = 1.0,
        teacher_schedule: str = "constant",
        anneal_steps: int | None = None,
        teacher_std: float = 0.1,
        label_batch_size: int = 256,
        action_chunk: int = 1,
        critic_warmup_steps: int = 0,
        **ppo_kwargs,
    ) -> None:
        if teacher_loss not in TEACHER_LOSSES:
            raise unknown_name("teacher loss", teacher_loss, TEACHER_LOSSES)
        if teacher_schedule not in SCHEDULES:
            raise unknown_name("teacher-weight schedule", teacher_schedule, SCHEDULES)
        if teacher is not None:
            check_teacher(teacher, action_chunk)
        # Attribute names match the arguments: SB3's ``load(path, **kwargs)`` sets them by name.
        self.teacher, self.instruction = teacher, instruction
        self.teacher_loss, self.teacher_weight = teacher_loss, teacher_weight
        self.teacher_schedule, self.anneal_steps = teacher_schedule, anneal_steps
        self.teacher_std, self.label_batch_size = teacher_std, label_batch_size
        self.action_chunk, self.critic_warmup_steps = action_chunk, critic_warmup_steps
        super().__init__(policy, env, rollout_buffer_class=LabelledRolloutBuffer, **ppo_kwargs)
        if not self.verbose and self.tensorboard_log is None:
            # SB3's default logger would make an empty folder under the system temp dir on every
            # ``learn``; with nothing to print or write, an in-memory logger keeps the values the
            # tracking callback reads.
            self.set_logger(Logger(folder=None, output_formats=[]))

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "teacher"]  # a frozen model: given again at load

    def current_teacher_weight(self) -> float:
        if self.teacher is None:
            return 0.0
        env_steps = self.num_timesteps * self.action_chunk  # the schedule is in env steps
        return teacher_weight(env_steps, self.teacher_weight, self.teacher_schedule, self.anneal_steps)

    def warming_up_critic(self) -> bool:
        """Whether this update trains the value function only (its rollout ended within
        ``critic_warmup_steps`` env steps)."""
        return self.num_timesteps * self.action_chunk <= self.critic_warmup_steps

    def label_rollout(self) -> float:
        """Fill the buffer's teacher actions; returns the seconds it took."""
        started = time.perf_counter()
        buffer = self.rollout_buffer
        buffer.teacher_actions[:] = label_rollout(
            self.teacher, buffer.observations, buffer.episode_starts, self.instruction, self.label_batch_size,
            self.action_chunk,
        )
        return time.perf_counter() - started

    def _evaluate(self, observations: dict, actions: torch.Tensor):
        """SB3's ``evaluate_actions``, also returning the action distribution."""
        policy = self.policy
        features = policy.extract_features(observations)
        if policy.share_features_extractor:
            latent_pi, latent_vf = policy.mlp_extractor(features)
        else:
            latent_pi = policy.mlp_extractor.forward_actor(features[0])
            latent_vf = policy.mlp_extractor.forward_critic(features[1])
        distribution = policy._get_action_dist_from_latent(latent_pi)
        return (
            policy.value_net(latent_vf).flatten(),
            distribution.log_prob(actions),
            distribution.entropy(),
            distribution,
        )

    def train(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        clip_range_vf = self.clip_range_vf(self._current_progress_remaining) if self.clip_range_vf else None
        critic_only = self.warming_up_critic()
        weight = 0.0 if critic_only else self.current_teacher_weight()
        if weight > 0:
            self.logger.record("time/teacher_label_seconds", self.label_rollout())

        logs: dict[str, list] = {
            k: [] for k in ("entropy", "pg", "value", "clip", "teacher", "kl", "teacher_parts")
        }
        continue_training = True
        for _epoch in range(self.n_epochs):
            for batch in self.rollout_buffer.get(self.batch_size):
                values, log_prob, entropy, distribution = self._evaluate(batch.observations, batch.actions)
                advantages = batch.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = torch.exp(log_prob - batch.old_log_prob)
                pg_loss = -torch.min(
                    advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                ).mean()
                if clip_range_vf is not None:
                    values = batch.old_values + torch.clamp(
                        values - batch.old_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = F.mse_loss(batch.returns, values)
                entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
                if critic_only:  # no gradient reaches the actor or the log-std: Adam skips them
                    loss = self.vf_coef * value_loss
                else:
                    loss = pg_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                if weight > 0:  # the RPD term
                    gaussian = distribution.distribution
                    l_teacher = teacher_loss(
                        self.teacher_loss,
                        gaussian.mean,
                        gaussian.stddev,
                        distribution.log_prob(batch.teacher_actions) if self.teacher_loss == "bc" else None,
                        batch.teacher_actions,
                        ratio,
                        clip_range,
                        self.teacher_std,
                    )
                    loss = loss + weight * l_teacher
                    logs["teacher"].append(l_teacher.item())
                    with torch.no_grad():  # which action parts the student misses (chunks folded)
                        error = (gaussian.mean - batch.teacher_actions) ** 2
                        logs["teacher_parts"].append(error.reshape(-1, len(ACTION_PARTS)).mean(0).numpy())

                with torch.no_grad():
                    log_ratio = log_prob - batch.old_log_prob
                    approx_kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                logs["pg"].append(pg_loss.item())
                logs["value"].append(value_loss.item())
                logs["entropy"].append(entropy_loss.item())
                logs["clip"].append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())
                logs["kl"].append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        buffer = self.rollout_buffer
        self.logger.record(
            "train/explained_variance", explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        )
        for name, key in (
            ("entropy_loss", "entropy"),
            ("policy_gradient_loss", "pg"),
            ("value_loss", "value"),
            ("clip_fraction", "clip"),
            ("approx_kl", "kl"),
            ("teacher_loss", "teacher"),
        ):
            if logs[key]:
                self.logger.record(f"train/{name}", float(np.mean(logs[key])))
        if logs["teacher_parts"]:
            for name, value in zip(ACTION_PARTS, np.mean(logs["teacher_parts"], 0), strict=True):
                self.logger.record(f"train/teacher_mse/{name}", float(value))
        self.logger.record("train/teacher_weight", weight)
        self.logger.record("train/critic_only", float(critic_only))
        self.logger.record("train/std", torch.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
