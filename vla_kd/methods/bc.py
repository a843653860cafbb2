"""Behaviour cloning of action chunks (the teacher's and the baselines' first method)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vla_kd.methods.base import Method
from vla_kd.policies.mlp_bc import ChunkedBCPolicy


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ-style augmentation: pad by replication and crop back at a random offset per image."""
    if pad <= 0:
        return images
    n, h, w, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,))
    dy = torch.randint(0, 2 * pad + 1, (n,))
    rows = (dy[:, None] + torch.arange(h)[None]).clamp(max=h + 2 * pad - 1)
    cols = (dx[:, None] + torch.arange(w)[None]).clamp(max=w + 2 * pad - 1)
    batch = torch.arange(n)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return cropped.round().to(images.dtype)


class ChunkedBC(Method):
    """L1 between predicted and demonstrated (normalised) action chunks; padding is masked out."""

    def __init__(self, policy: ChunkedBCPolicy, shift_pad: int = 4) -> None:
        self.model = policy
        self.shift_pad = shift_pad

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        policy = self.model
        rgb = batch.get("observation.images.rgb")
        if rgb is not None and policy.training:
            rgb = random_shift(rgb, self.shift_pad)
        predicted = policy(batch["observation.state"], rgb)
        target = policy.action_norm.normalize(batch["action"])
        keep = (~batch["action_is_pad"]).unsqueeze(-1).float()
        l1 = ((predicted - target).abs() * keep).sum() / (keep.sum() * target.shape[-1])
        return l1, {"losses/l1": float(l1.detach())}


class TokenBC(Method):
    """Cross-entropy on a TokenVLA's action tokens (teacher forcing), padding masked out."""

    def __init__(self, policy, shift_pad: int = 4) -> None:
        self.model = policy
        self.shift_pad = shift_pad

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        policy = self.model
        rgb = batch["observation.images.rgb"]
        if policy.training:
            rgb = random_shift(rgb, self.shift_pad)
        tokens = policy.tokenizer.encode(batch["action"]).flatten(1)  # (B, horizon * 7)
        logits = policy.token_logits(rgb, batch["observation.state"], list(batch["task"]), tokens)
        keep = (~batch["action_is_pad"]).repeat_interleave(policy.config.action_dim, dim=1).float()
        ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none")
        loss = (ce * keep.flatten()).sum() / keep.sum()
        accuracy = ((logits.argmax(-1) == tokens).float() * keep).sum() / keep.sum()
        return loss, {"losses/token_ce": float(loss.detach()), "train/token_accuracy": float(accuracy)}


class DiffusionBC(Method):
    """Denoising loss of the action expert: MSE between true and predicted noise (DDPM)."""

    def __init__(self, policy, shift_pad: int = 4) -> None:
        self.model = policy
        self.shift_pad = shift_pad
        self.scheduler = policy.decoder.scheduler("ddpm")

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        policy = self.model
        rgb = batch["observation.images.rgb"]
        if policy.training:
            rgb = random_shift(rgb, self.shift_pad)
        features = policy.encoder(rgb, batch["observation.state"])
        clean = policy.action_norm.normalize(batch["action"])
        noise = torch.randn_like(clean)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(clean),))
        noisy = self.scheduler.add_noise(clean, noise, t)
        predicted = policy.decoder(noisy, t, features)
        keep = (~batch["action_is_pad"]).unsqueeze(-1).float()
        mse = (((predicted - noise) ** 2) * keep).sum() / (keep.sum() * clean.shape[-1])
        return mse, {"losses/denoise_mse": float(mse.detach())}
