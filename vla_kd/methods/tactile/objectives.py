"""The losses of tactile distillation: the teacher's reward-weighted flow matching, the student's
tactile-token alignment (stage 1) and its actions with the token (stage 2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vla_kd.data.lerobot_writer import TACTILE
from vla_kd.methods.base import Method
from vla_kd.methods.bc import (
    TokenBC,
    add_privileged_aux_loss,
    camera_batch,
    check_aux_weight,
    vla_camera_input,
)
from vla_kd.methods.tactile.rewards import FrameWeights
from vla_kd.nn.flow_matching import flow_point


class RewardWeightedFlow(Method):
    """Flow matching of the teacher's action chunks, each row weighted by its tactile reward
    weight: the weighted mean over the batch of each row's velocity MSE (padding masked out),
    plus the auxiliary privileged-state loss when ``aux_weight > 0``."""

    def __init__(
        self, policy, weights: FrameWeights, shift_pad: int = 4, aux_weight: float = 0.0
    ) -> None:
        check_aux_weight(policy, aux_weight)
        self.model, self.weights = policy, weights
        self.shift_pad, self.aux_weight = shift_pad, aux_weight

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        policy = self.model
        images = camera_batch(batch, policy.config.cameras, self.shift_pad if policy.training else 0)
        features, image, _ = policy.conditioning(images, batch["observation.state"], batch[TACTILE])
        clean = policy.action_norm.normalize(batch["action"])
        point = flow_point(clean, policy.config.train_timesteps)
        predicted = policy.decoder(point.noisy, point.timestep, features)
        target = point.velocity if policy.config.prediction_type == "velocity" else clean
        keep = (~batch["action_is_pad"]).unsqueeze(-1).float()
        squared = (predicted - target) ** 2 * keep
        per_row = squared.sum((1, 2)) / (keep.sum((1, 2)) * predicted.shape[-1])
        weights = self.weights.of(batch).to(per_row.device)
        weighted = (weights * per_row).sum() / weights.sum()
        logs = {"losses/flow_mse": float(per_row.mean().detach()),
                "losses/weighted_flow_mse": float(weighted.detach()),
                "train/weight_mean": float(weights.mean())}
        return add_privileged_aux_loss(weighted, logs, policy, image, batch, self.aux_weight), logs


def token_alignment(student, teacher, image_summary: torch.Tensor, state: torch.Tensor,
                    batch: dict) -> tuple[torch.Tensor, float]:
    """(MSE between the student's predicted tactile token and the teacher's token of the frame's
    recorded touch, its error relative to the teacher tokens' spread)."""
    with torch.no_grad():
        target = teacher.tactile_token(batch[TACTILE])
    mse = F.mse_loss(student.predicted_tactile(image_summary, state), target)
    return mse, float(mse.detach() / target.var(0).mean().clamp_min(1e-8))


class TactileTokenAlignment(Method):
    """Stage 1: the student's tactile head (and the vision that feeds it) learns the teacher's
    tactile token from camera and proprio; nothing else receives gradient."""

    def __init__(self, student, teacher, shift_pad: int = 4) -> None:
        self.model, self.teacher = student, teacher.eval().requires_grad_(False)
        self.shift_pad = shift_pad

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        student = self.model
        rgb = vla_camera_input(student, batch, self.shift_pad)
        state = batch["observation.state"]
        _, image_summary = student.encode(rgb, state, list(batch["task"]))
        mse, relative = token_alignment(student, self.teacher, image_summary, state, batch)
        return mse, {"losses/tactile_token_mse": float(mse.detach()),
                     "train/tactile_token_relative_error": relative}


class WeightedTokenBC(TokenBC):
    """:class:`TokenBC` with each demonstration frame weighted by its tactile reward weight
    (the baseline with ``method.weighted_actions=true``); ``weights`` None: unweighted."""

    def __init__(self, policy, weights: FrameWeights | None = None, **token_bc) -> None:
        super().__init__(policy, **token_bc)
        self.weights = weights

    def row_weights(self, batch: dict) -> torch.Tensor:
        return super().row_weights(batch) if self.weights is None else self.weights.of(batch)


class TactileTokenBC(WeightedTokenBC):
    """Stage 2: the token cross-entropy of :class:`TokenBC` on the demonstrations' actions
    (weighted by their tactile rewards when ``weights`` are given), with the predicted token in
    the prompt, plus ``token_weight`` times the stage-1 token loss so the token keeps the
    teacher's meaning while the rest trains."""

    def __init__(self, student, teacher, token_weight: float = 1.0, weights: FrameWeights | None = None,
                 **token_bc) -> None:
        super().__init__(student, weights, **token_bc)
        self.teacher, self.token_weight = teacher.eval().requires_grad_(False), float(token_weight)

    def auxiliary_losses(self, loss, logs, image_summary, state, batch) -> torch.Tensor:
        loss = super().auxiliary_losses(loss, logs, image_summary, state, batch)
        mse, relative = token_alignment(self.model, self.teacher, image_summary, state, batch)
        logs.update({"losses/tactile_token_mse": float(mse.detach()),
                     "train/tactile_token_relative_error": relative})
        return loss + self.token_weight * mse if self.token_weight > 0 else loss
