"""Behaviour cloning of action chunks (``method=bc``): how the teacher, the action expert and the
baselines learn from demonstrations. The ``model`` node says what is trained
(:mod:`vla_kd.policies.factory`); the loss follows from the model's type."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vla_kd.evaluator import evaluate_policy, milestone_metrics
from vla_kd.methods.base import Method
from vla_kd.methods.distiller import Distiller, RunContext, TrainResult
from vla_kd.methods.registry import register
from vla_kd.policies.factory import build_model
from vla_kd.policies.mlp_bc import ChunkedBCPolicy
from vla_kd.trainer import Trainer, seed_initial_weights


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ-style augmentation: pad by replication and crop back at a random offset per image.

    Padding by replication then cropping equals indexing the original with clamped
    coordinates, so the crop is one gather in the images' own dtype (no padded float copy).
    """
    if pad <= 0:
        return images
    n, h, w, _ = images.shape
    dx = torch.randint(0, 2 * pad + 1, (n,))
    dy = torch.randint(0, 2 * pad + 1, (n,))
    rows = (dy[:, None] + torch.arange(h)[None] - pad).clamp(0, h - 1)
    cols = (dx[:, None] + torch.arange(w)[None] - pad).clamp(0, w - 1)
    return images[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def camera_batch(batch: dict, cameras, shift_pad: int = 0) -> dict[str, torch.Tensor]:
    """The batch's frames of each named camera (``observation.images.<name>``), each randomly
    shifted by up to ``shift_pad`` pixels when ``shift_pad > 0``."""
    images = {name: batch[f"observation.images.{name}"] for name in dict.fromkeys(cameras)}
    return {name: random_shift(frames, shift_pad) for name, frames in images.items()} if shift_pad else images


def image_rows(images, rows) -> torch.Tensor | dict[str, torch.Tensor]:
    """The ``rows`` of a model's camera input: one camera's frames, or each camera's in a dict."""
    if isinstance(images, dict):
        return {name: frames[rows] for name, frames in images.items()}
    return images[rows]


def noisy_state(state: torch.Tensor, std: torch.Tensor, scale: float) -> torch.Tensor:
    """Proprioception plus Gaussian noise of ``scale`` standard deviations per feature."""
    return state + scale * std * torch.randn_like(state) if scale > 0 else state


def corrupt_tokens(tokens: torch.Tensor, fraction: float, n_bins: int) -> torch.Tensor:
    """``tokens`` with about ``fraction`` of them replaced by uniformly random bins."""
    if fraction <= 0:
        return tokens
    corrupt = torch.rand(tokens.shape) < fraction
    return torch.where(corrupt, torch.randint_like(tokens, n_bins), tokens)


def check_aux_weight(policy, aux_weight: float) -> None:
    """An auxiliary privileged-state loss needs the policy's auxiliary head."""
    if aux_weight > 0 and not policy.config.aux_state_dim:
        raise ValueError("aux_weight > 0 needs a policy built with aux_state_dim > 0")


def add_privileged_aux_loss(
    loss: torch.Tensor, logs: dict[str, float], policy, image_features: torch.Tensor, batch: dict,
    weight: float,
) -> torch.Tensor:
    """``loss`` plus ``weight`` times the MSE, in standard deviations, between the policy's
    auxiliary-head prediction from its image features and the frame's privileged state (object
    and goal poses), logged as ``losses/aux_privileged``; ``loss`` itself when ``weight <= 0``."""
    if weight <= 0:
        return loss
    target = policy.aux_norm(batch["observation.environment_state"])
    aux = F.mse_loss(policy.aux_head(image_features), target)
    logs["losses/aux_privileged"] = float(aux.detach())
    return loss + weight * aux


class ChunkedBC(Method):
    """L1 between predicted and demonstrated (normalised) action chunks; padding is masked out.

    ``aux_weight > 0`` adds an auxiliary loss: the policy's auxiliary head predicts the frame's
    privileged state (``observation.environment_state``: object and goal poses) from the image
    features, MSE in standard deviations. It only shapes the encoder while training; the
    policy never reads privileged state when it acts. Without it, an encoder trained on a few
    hundred PickCube demos did not learn to locate the cube (docs/experiments/teacher_and_expert.md).
    """

    def __init__(self, policy: ChunkedBCPolicy, shift_pad: int = 4, aux_weight: float = 0.0) -> None:
        check_aux_weight(policy, aux_weight)
        self.model = policy
        self.shift_pad = shift_pad
        self.aux_weight = aux_weight

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        policy = self.model
        rgb = batch.get("observation.images.rgb")
        if rgb is not None and policy.training:
            rgb = random_shift(rgb, self.shift_pad)
        predicted, image = policy(batch["observation.state"], rgb, return_image_features=True)
        target = policy.action_norm.normalize(batch["action"])
        keep = (~batch["action_is_pad"]).unsqueeze(-1).float()
        l1 = masked_mean((predicted - target).abs(), keep)
        logs = {"losses/l1": float(l1.detach())}
        return add_privileged_aux_loss(l1, logs, policy, image, batch, self.aux_weight), logs


def vla_camera_input(policy, batch: dict, shift_pad: int) -> torch.Tensor:
    """A token VLA's image input from the batch's cameras, randomly shifted by up to
    ``shift_pad`` pixels while the policy trains."""
    return policy.camera_input(camera_batch(batch, policy.cameras, shift_pad if policy.training else 0))


class TokenBC(Method):
    """Cross-entropy on a TokenVLA's action tokens (teacher forcing), padding masked out.

    ``label_sigma > 0`` replaces one-hot targets by Gaussian-smoothed ones over the ordered bins
    (see ``ActionTokenizer.soft_targets``); 0 is OpenVLA's plain cross-entropy. ``state_noise``
    adds Gaussian noise (in standard deviations of each state feature) to proprioception while
    training: on a few dozen demos the exact joint angles and velocities identify the training
    frame, and a model that fits them need not look at the camera. ``token_corruption`` replaces
    that fraction of the teacher-forced input action tokens by random bins (targets stay clean):
    consecutive actions of a chunk are nearly equal, so with clean inputs most tokens are
    predictable by copying the one ``action_dim`` positions back, and the few that need the
    observation get little of the gradient. ``aux_weight`` adds the auxiliary privileged-state
    loss of :class:`ChunkedBC` on the image summary."""

    def __init__(
        self, policy, shift_pad: int = 4, label_sigma: float = 0.0, state_noise: float = 0.0,
        token_corruption: float = 0.0, aux_weight: float = 0.0,
    ) -> None:
        check_aux_weight(policy, aux_weight)
        self.model = policy
        self.shift_pad = shift_pad
        self.label_sigma = label_sigma
        self.state_noise = state_noise
        self.token_corruption = token_corruption
        self.aux_weight = aux_weight

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        policy = self.model
        rgb = vla_camera_input(policy, batch, self.shift_pad)
        state = batch["observation.state"]
        tokens = policy.action_tokens(batch["action"])  # (B, horizon // action_stride * 7)
        inputs = tokens
        if policy.training:
            state = noisy_state(state, policy.state_norm.std, self.state_noise)
            inputs = corrupt_tokens(tokens, self.token_corruption, policy.config.n_bins)
        prefix, image_summary = policy.encode(rgb, state, list(batch["task"]))
        logits = policy.token_logits(rgb, state, list(batch["task"]), inputs, prefix=prefix)
        keep = policy.token_keep(batch["action_is_pad"])
        if self.label_sigma > 0:
            soft = policy.action_soft_targets(batch["action"], self.label_sigma)
            ce = -(soft * F.log_softmax(logits, dim=-1)).sum(-1).flatten()
        else:
            ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none")
        weights = keep * self.row_weights(batch).to(keep)[:, None]
        loss = (ce * weights.flatten()).sum() / weights.sum()
        accuracy = ((logits.argmax(-1) == tokens).float() * keep).sum() / keep.sum()
        logs = {"losses/token_ce": float(loss.detach()), "train/token_accuracy": float(accuracy)}
        return self.auxiliary_losses(loss, logs, image_summary, state, batch), logs

    def row_weights(self, batch: dict) -> torch.Tensor:
        """``(B,)`` weights of the batch's rows in the token loss: equal here; a subclass weighs
        its demonstrations (HapticVLA's tactile rewards)."""
        return torch.ones(len(batch["action"]))

    def auxiliary_losses(
        self, loss: torch.Tensor, logs: dict[str, float], image_summary: torch.Tensor,
        state: torch.Tensor, batch: dict,
    ) -> torch.Tensor:
        """``loss`` plus the terms beside the token cross-entropy, from the image summary and the
        (noised) proprio the tokens were predicted from: the privileged pose head's here, a
        subclass adds its own (HapticVLA's tactile token)."""
        return add_privileged_aux_loss(loss, logs, self.model, image_summary, batch, self.aux_weight)


@dataclass
class Denoised:
    """One DDPM training draw: the noised chunk, the timesteps, the decoder's prediction (noise
    or clean chunk, by its ``prediction_type``), the one-step clean-chunk estimate, the padding
    mask ``(B, H, 1)`` and the masked MSE of the prediction."""

    noisy: torch.Tensor
    t: torch.Tensor
    predicted: torch.Tensor
    clean_estimate: torch.Tensor
    keep: torch.Tensor
    mse: torch.Tensor


def denoise_step(
    scheduler, decoder, features: torch.Tensor, clean: torch.Tensor, action_is_pad: torch.Tensor
) -> Denoised:
    """Noise the normalised chunk ``clean`` at random timesteps and let ``decoder`` predict, from
    ``features``, the noise (``prediction_type="epsilon"``) or the clean chunk (``"sample"``);
    the MSE to that target over unpadded actions."""
    noise = torch.randn_like(clean)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(clean),))
    noisy = scheduler.add_noise(clean, noise, t)
    predicted = decoder(noisy, t, features)
    if scheduler.config.prediction_type == "sample":
        target, estimate = clean, predicted
    else:
        alpha = scheduler.alphas_cumprod[t].view(-1, 1, 1)
        target, estimate = noise, (noisy - (1 - alpha).sqrt() * predicted) / alpha.sqrt()
    keep = (~action_is_pad).unsqueeze(-1).float()
    return Denoised(noisy, t, predicted, estimate.clamp(-1, 1), keep, masked_mse(predicted, target, keep))


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``(B, H, D)`` chunks over the actions ``keep`` ``(B, H, 1)`` marks."""
    return masked_mean((predicted - target) ** 2, keep)


def masked_mean(errors: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of per-element ``errors`` ``(B, H, D)`` over the actions ``keep`` ``(B, H, 1)`` marks."""
    return (errors * keep).sum() / (keep.sum() * errors.shape[-1])


class DiffusionBC(Method):
    """Denoising loss of the action expert: MSE between true and predicted noise (DDPM).

    ``aux_weight > 0`` adds the auxiliary privileged-state loss of :class:`ChunkedBC` on the
    expert's image features."""

    def __init__(self, policy, shift_pad: int = 4, aux_weight: float = 0.0) -> None:
        check_aux_weight(policy, aux_weight)
        self.model = policy
        self.shift_pad = shift_pad
        self.aux_weight = aux_weight
        self.scheduler = policy.decoder.scheduler("ddpm")

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        policy = self.model
        images = camera_batch(batch, policy.config.cameras, self.shift_pad if policy.training else 0)
        features, image = policy.encoder(images, batch["observation.state"], return_image_features=True)
        clean = policy.action_norm.normalize(batch["action"])
        mse = denoise_step(self.scheduler, policy.decoder, features, clean, batch["action_is_pad"]).mse
        logs = {"losses/denoise_mse": float(mse.detach())}
        return add_privileged_aux_loss(mse, logs, policy, image, batch, self.aux_weight), logs


@dataclass
class BCConfig:
    """``method=bc`` has no settings of its own: the ``model`` node holds what the loss reads
    (augmentation, label smoothing, the auxiliary pose head)."""

    name: str = "bc"


def bc_objective(policy, model) -> Method:
    """The behaviour-cloning loss for ``policy``, with the training settings of its ``model`` node."""
    if model.type in ("token_vla", "hf_vla"):
        return TokenBC(policy, shift_pad=model.shift_pad, label_sigma=model.label_sigma,
                       state_noise=model.state_noise, token_corruption=model.token_corruption,
                       aux_weight=model.aux_privileged_weight)
    if model.type == "diffusion_action_expert":
        return DiffusionBC(policy, shift_pad=model.shift_pad, aux_weight=model.aux_privileged_weight)
    return ChunkedBC(policy, shift_pad=model.shift_pad, aux_weight=model.aux_privileged_weight)


@register
class BehaviourCloning(Distiller):
    """A ``model`` trained on a dataset's demonstrations with the shared trainer."""

    name = "bc"
    data_parallel = True
    config_class = BCConfig
    inputs = ("dataset", "model")

    def fit(self, ctx: RunContext) -> TrainResult:
        model = ctx.model
        dataset = ctx.load_dataset(model.horizon, "a LeRobot v3 dataset, e.g. from `vla-kd demos`")
        seed_initial_weights(ctx.trainer.seed)
        policy = build_model(model, dataset)
        method = bc_objective(policy, model)
        evaluate = periodic_evaluation(ctx, policy)
        trainer = Trainer(method, dataset, ctx.trainer, ctx.run_dir, ctx.tracker, evaluate)
        metrics = trainer.fit()
        if hasattr(policy, "merge_lora"):  # LoRA adapters fold into the saved weights
            policy.merge_lora()
        samples = trainer.samples
        summary = {"model": model.type, "steps": trainer.step, "samples": samples,
                   "dataset_frames": len(dataset), **metrics}
        return TrainResult(policy, summary, samples, {"dataset": str(ctx.dataset), "steps": trainer.step})


def periodic_evaluation(ctx: RunContext, policy):
    """The trainer callback for ``trainer.eval_every`` (None when there is nothing to evaluate)."""
    if not (ctx.eval.env and ctx.trainer.eval_every):
        return None

    def evaluate(step: int) -> dict:
        summary = evaluate_policy(ctx.settings, ctx.eval, policy, str(ctx.eval.env))
        return {"eval/success_rate": summary["success_rate"], "eval/ci95_low": summary["ci95"][0],
                "eval/ci95_high": summary["ci95"][1], "eval/episodes": summary["episodes"],
                **milestone_metrics(summary)}

    return evaluate
