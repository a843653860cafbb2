"""Side-by-side timing of a TokenVLA's decoders: greedy AR, training-free Jacobi, and a
consistency-distilled student with and without early exit.

Every call is the whole ``predict_action_chunk`` (vision, prefill, decode) on the same batch;
the decoders take turns call by call, so machine noise hits all of them alike. Nothing is
dropped after the warm-up. Tokens/s counts every action token of the batch; ``speedup_vs_ar``
is that rate over greedy AR's at the same chunk size and batch.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import partial

import numpy as np
import torch

from vla_kd.benchmarks.latency import round_robin_seconds, spread_ms


@dataclasses.dataclass
class DecoderResult:
    """One decoder's figures at one (chunk size, batch)."""

    decoder: str
    chunk: int
    batch: int
    calls: int
    latency_ms_median: float
    latency_ms_p10: float
    latency_ms_p90: float
    tokens_per_s: float
    iterations_mean: float
    iterations_max: int
    speedup_vs_ar: float = 1.0


def with_decoding(model, **settings):
    """A view of ``model`` (shared weights) that decodes with other config settings."""
    view = copy.copy(model)  # shallow: modules and weights are shared
    view.config = dataclasses.replace(model.config, **settings)
    return view


def decoders_for(teacher, student=None, early_exit: dict | None = None) -> dict:
    """name -> model view: ar, jacobi and jacobi_early_exit (the teacher, training-free), and
    with a student ceed and ceed_early_exit."""
    off = dict(exit_max_changed=None, exit_max_bin_change=None, exit_max_iterations=None)
    rule = {**off, **{f"exit_{k}": v for k, v in (early_exit or {}).items()}}
    out = {
        "ar": with_decoding(teacher, decoding="greedy"),
        "jacobi": with_decoding(teacher, decoding="jacobi", **off),
        "jacobi_early_exit": with_decoding(teacher, decoding="jacobi", **rule),
    }
    if student is not None:
        out["ceed"] = with_decoding(student, decoding="jacobi", **off)
        out["ceed_early_exit"] = with_decoding(student, decoding="jacobi", **rule)
    return out


@torch.no_grad()
def action_values(model) -> int:
    """Action values per chunk: a token VLA's action tokens, a continuous student's horizon x 7,
    so that rates compare per action whatever the decoder."""
    return int(getattr(model, "n_action_tokens", model.config.horizon * 7))


def time_decoders(decoders: dict, obs: list[dict], calls: int = 50, warmup: int = 5) -> list[DecoderResult]:
    """Round-robin timing of ``decoders`` (name -> TokenVLA view) on the batches ``obs`` in turn:
    round ``r`` decodes ``obs[r % len(obs)]`` with every decoder, so all of them see the same
    frames (a Jacobi decoder's passes depend on the frame: a resting arm's chunk converges in
    fewer passes than a moving one's)."""
    passes: dict[str, list[int]] = {name: [] for name in decoders}

    def call(name: str, model) -> None:
        model.predict_action_chunk(obs[len(passes[name]) % len(obs)])
        passes[name].append(getattr(model, "last_iterations", 1))  # a continuous student: one pass

    times = round_robin_seconds(
        {name: partial(call, name, model) for name, model in decoders.items()}, calls, warmup
    )
    batch = len(obs[0]["state"])
    results = []
    for name, model in decoders.items():
        median, p10, p90 = spread_ms(times[name])
        kept = passes[name][warmup:]  # the timed calls' passes
        results.append(
            DecoderResult(
                decoder=name,
                chunk=model.config.horizon,
                batch=batch,
                calls=len(times[name]),
                latency_ms_median=median,
                latency_ms_p10=p10,
                latency_ms_p90=p90,
                tokens_per_s=batch * action_values(model) / (median / 1000),
                iterations_mean=float(np.mean(kept)),
                iterations_max=int(max(kept)),
            )
        )
    ar = next(r for r in results if r.decoder == "ar")
    for r in results:
        r.speedup_vs_ar = r.tokens_per_s / ar.tokens_per_s
    return results
