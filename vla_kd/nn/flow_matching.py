"""Flow matching for action chunks (rectified flow: Lipman et al. 2023, Liu et al. 2023), the
objective of π0's action expert and of HapticVLA's tactile teacher.

A chunk ``x0`` and Gaussian noise ``eps`` are joined by the straight path
``x_sigma = (1 - sigma) x0 + sigma eps``, sigma in [0, 1]; the network learns the path's constant
velocity ``eps - x0`` at random points of it. Sampling integrates the velocity from pure noise
(sigma = 1) to sigma = 0 with Euler steps: diffusers' ``FlowMatchEulerDiscreteScheduler`` holds
the step sizes, and the network sees ``sigma * time_scale`` as its timestep, as that scheduler's
timesteps are.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler


@dataclass
class FlowPoint:
    """One training draw: the point on each row's path, its sigma, timestep and velocity target."""

    noisy: torch.Tensor
    sigma: torch.Tensor
    timestep: torch.Tensor
    velocity: torch.Tensor


def flow_point(clean: torch.Tensor, time_scale: int, noise: torch.Tensor | None = None,
               sigma: torch.Tensor | None = None) -> FlowPoint:
    """A random point on each row's noise-to-chunk path (uniform sigma unless given)."""
    noise = torch.randn_like(clean) if noise is None else noise
    sigma = torch.rand(len(clean), device=clean.device) if sigma is None else sigma
    s = sigma.view(-1, *([1] * (clean.dim() - 1)))
    return FlowPoint((1 - s) * clean + s * noise, sigma, sigma * time_scale, noise - clean)


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...],
    steps: int, time_scale: int, generator: torch.Generator | None = None, device=None,
) -> torch.Tensor:
    """Integrate ``velocity(x, timesteps)`` from noise of ``shape`` to a sample in ``steps``
    Euler steps."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=time_scale)
    scheduler.set_timesteps(steps, device=device)
    x = torch.randn(shape, generator=generator, device=device)
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t.expand(shape[0])), t, x).prev_sample
    return x
