"""Per-action latency of policies, measured side by side on the same observation.

Calls alternate between the policies (round-robin) so machine noise hits all of them alike.
A chunked policy's call returns ``horizon`` actions that it then executes open-loop, so both
its per-call latency and the per-action cost (call / actions executed per call) are reported.
No call is dropped after the warm-up.
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import numpy as np
import torch

from vla_kd.policies.base import Policy


def _call(policy: Policy, obs: dict):
    if hasattr(policy, "predict_action_chunk") and getattr(policy, "config", None) is not None:
        return policy.predict_action_chunk(obs)
    return policy.act(obs)


def round_robin_seconds(calls_by_name: dict, calls: int = 50, warmup: int = 5) -> dict[str, list[float]]:
    """Seconds of each timed call of every ``name -> function()``, the functions taking turns
    call by call; ``warmup`` rounds first are run but not kept, none after them dropped."""
    times: dict[str, list[float]] = {name: [] for name in calls_by_name}
    for round_ in range(warmup + calls):
        for name, call in calls_by_name.items():
            started = time.perf_counter()
            call()
            elapsed = time.perf_counter() - started
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def spread_ms(seconds: list[float]) -> tuple[float, float, float]:
    """(median, 10th, 90th percentile) in milliseconds."""
    ms = [1000 * t for t in seconds]
    return statistics.median(ms), float(np.percentile(ms, 10)), float(np.percentile(ms, 90))


def measure_latency(
    policies: dict[str, Policy], obs: dict, calls: int = 50, warmup: int = 5
) -> dict[str, dict]:
    """``name -> {call_ms_median, call_ms_p10, call_ms_p90, actions_per_call, action_ms}``
    for a batch ``obs`` (contract layout, leading batch axis)."""

    with torch.no_grad():
        times = round_robin_seconds(
            {name: partial(_call, policy, obs) for name, policy in policies.items()}, calls, warmup
        )
    out = {}
    for name, policy in policies.items():
        median, p10, p90 = spread_ms(times[name])
        # A chunked policy executes this many of the actions one call predicts.
        per_call = int(getattr(policy, "actions_per_chunk", 1))
        out[name] = {
            "call_ms_median": median,
            "call_ms_p10": p10,
            "call_ms_p90": p90,
            "calls": len(times[name]),
            "actions_per_call": per_call,
            "action_ms": median / per_call,
        }
    return out
