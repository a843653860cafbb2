"""The contract between the shared trainer and a training method's loss."""
from __future__ import annotations

import abc
from typing import Literal

import torch
from torch import nn


class Method(abc.ABC):
    """Turns batches into a scalar loss for ``self.model`` (the module the trainer optimises
    and checkpoints).

    ``data = "offline"`` methods read a dataset; ``"on_policy"`` methods collect their own
    rollouts. ``loss`` must draw any randomness from torch's global RNG, which the trainer
    seeds per step so a resumed run reproduces the same numbers.
    """

    data: Literal["offline", "on_policy"] = "offline"
    model: nn.Module

    @abc.abstractmethod
    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise and metrics to log (namespaced ``losses/...``, ``train/...``)."""

    def monitor(self) -> dict[str, float]:
        """Metrics the trainer logs beside the loss's at every log step: the method's own
        measurement of its model as it trains (CEED: the student's Jacobi passes); none by default."""
        return {}

    def parameters(self):
        """The trainable parameters (all of the model's by default)."""
        return (p for p in self.model.parameters() if p.requires_grad)


def frame_keys(batch: dict) -> list[tuple[int, int]]:
    """``(episode, frame)`` of each row: the key of caches of teacher outputs per dataset frame."""
    return list(zip(batch["episode_index"].tolist(), batch["frame_index"].tolist(), strict=True))
