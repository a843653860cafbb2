"""Layer skipping in a transformers decoder (DySL-VLA, after DeeR-VLA): run only a chosen
set of decoder layers, with light adapters standing in for the bypassed ones; measure how much
each layer matters; count the trunk FLOPs a decode costs.

A transformers decoder (``LlamaModel``, ``GemmaModel``, ...) loops over ``self.layers``; swapping
that list for a plan (layers kept, adapters for the rest) reuses the library's own forward, masks,
rotary embeddings and KV cache.
A bypassed layer writes no cache entry; layer 0 must always run because the cache reads the
sequence length from it. Written by hand: no library ships per-step layer skipping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INFORMATIVE, INCREMENTAL = "informative", "incremental"


class Bypass(nn.Module):
    """A decoder layer removed outright: its input passes through unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class SkipAdapter(nn.Module):
    """Stands in for a bypassed decoder layer: ``h + up(gelu(down(norm(h))))``, a low-rank
    residual MLP over each position alone (no attention, so no cache). ``up`` starts at zero,
    so an untrained adapter is exactly plain skipping."""

    def __init__(self, hidden: int, rank: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(hidden, eps=1e-6)
        self.down = nn.Linear(hidden, rank, bias=False)
        self.up = nn.Linear(rank, hidden, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states + self.up(F.gelu(self.down(self.norm(hidden_states))))


@contextmanager
def run_layers(trunk: nn.Module, plan: Sequence[nn.Module]) -> Iterator[None]:
    """Within the block, ``trunk`` (a transformers decoder) runs ``plan`` instead of its layers."""
    original = trunk.layers
    if len(plan) != len(original):
        raise ValueError(f"a layer plan needs {len(original)} entries, got {len(plan)}")
    trunk.layers = nn.ModuleList(plan)
    try:
        yield
    finally:
        trunk.layers = original


def classify_layers(importance: Sequence[float], informative: int) -> list[str]:
    """Roles by importance: layer 0 and the ``informative - 1`` most important other layers are
    informative (always run); the rest are incremental (skippable)."""
    n = len(importance)
    if not 1 <= informative <= n:
        raise ValueError(f"informative layers must be between 1 and {n}, got {informative}")
    ranked = sorted(range(1, n), key=lambda i: -importance[i])
    keep = {0, *ranked[: informative - 1]}
    return [INFORMATIVE if i in keep else INCREMENTAL for i in range(n)]


def token_kl(
    reference_logits: torch.Tensor, logits: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean KL(reference || other) per token; logits ``(B, n, bins)``, optional ``keep`` ``(B, n)``."""
    reference = F.log_softmax(reference_logits, dim=-1)
    kl = (reference.exp() * (reference - F.log_softmax(logits, dim=-1))).sum(-1)
    if keep is None:
        return kl.mean()
    return (kl * keep).sum() / keep.sum().clamp(min=1)


@torch.no_grad()
def layer_importance(
    model, rgb: torch.Tensor, state: torch.Tensor, instructions: list[str], tokens: torch.Tensor
) -> np.ndarray:
    """Per decoder layer of a token policy: the mean KL between the model's action-token
    distributions with all layers and with that one layer bypassed (teacher-forced on ``tokens``)."""
    full = model.token_logits(rgb, state, instructions, tokens)
    layers = list(model.decoder_layers)
    scores = []
    for i in range(len(layers)):
        plan = [Bypass() if j == i else layer for j, layer in enumerate(layers)]
        with run_layers(model.layer_container, plan):
            scores.append(float(token_kl(full, model.token_logits(rgb, state, instructions, tokens))))
    return np.array(scores)


# ------------------------------------------------------------------ FLOPs
def layer_flops(hidden: int, intermediate: int, kv_hidden: int, new_tokens: int, context: int) -> int:
    """Multiply-adds x 2 of one Llama decoder layer over ``new_tokens`` positions attending to
    ``context`` positions (the new ones included): q/k/v/o projections, attention scores and
    weighted sum, the gated MLP. Norms, rotary and softmax are left out (elementwise)."""
    projections = 2 * new_tokens * hidden * (2 * hidden + 2 * kv_hidden)
    attention = 4 * new_tokens * context * hidden
    mlp = 6 * new_tokens * hidden * intermediate
    return projections + attention + mlp


def adapter_flops(hidden: int, rank: int, new_tokens: int) -> int:
    return 4 * new_tokens * hidden * rank


def forward_flops(config, roles_run: Sequence[str], adapter_rank: int, new_tokens: int, context: int) -> int:
    """Trunk FLOPs of one forward: ``roles_run[i]`` is ``"layer"``, ``"adapter"`` or ``"bypass"``."""
    # grouped-query attention (the SmolLM2 trunk) shrinks the key/value projections
    kv_hidden = config.hidden * config.key_value_heads // config.heads
    total = 0
    for role in roles_run:
        if role == "layer":
            total += layer_flops(config.hidden, config.intermediate, kv_hidden, new_tokens, context)
        elif role == "adapter":
            total += adapter_flops(config.hidden, adapter_rank, new_tokens)
    return total


def greedy_decode_flops(
    config, roles_run: Sequence[str], adapter_rank: int, prefix: int, first: int, count: int
) -> int:
    """Trunk FLOPs of greedy-decoding action tokens ``first .. first + count - 1`` with a KV
    cache: the prefill of the ``prefix`` (when ``first == 0``) and one single-token forward for
    each later token (token ``k`` is fed back to predict token ``k + 1``)."""
    total = 0
    for k in range(first, first + count):
        if k == 0:
            total += forward_flops(config, roles_run, adapter_rank, prefix, prefix)
        else:
            total += forward_flops(config, roles_run, adapter_rank, 1, prefix + k)
    return total
