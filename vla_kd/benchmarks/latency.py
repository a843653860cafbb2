"""Per-action latency of policies, measured side by side on the same observation.

Calls alternate between the policies (round-robin) so machine noise hits all of them alike.
A chunked policy's call returns ``horizon`` actions that it then executes open-loop, so both
its per-call latency and the per-action cost (call / actions executed per call) are reported.
No call is dropped after the warm-up.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from vla_kd.policies.base import Policy


def actions_per_call(policy: Policy) -> int:
    """How many actions one ``predict_action_chunk`` call feeds to the env."""
    config = getattr(policy, "config", None)
    horizon = int(getattr(config, "horizon", 1) or 1)
    executed = getattr(policy, "n_action_steps", None)
    return min(int(executed), horizon) if executed else horizon


def _call(policy: Policy, obs: dict):
    if hasattr(policy, "predict_action_chunk") and getattr(policy, "config", None) is not None:
        return policy.predict_action_chunk(obs)
    return policy.act(obs)


def measure_latency(
    policies: dict[str, Policy], obs: dict, calls: int = 50, warmup: int = 5
) -> dict[str, dict]:
    """``name -> {call_ms_median, call_ms_p10, call_ms_p90, actions_per_call, action_ms}``
    for a batch ``obs`` (contract layout, leading batch axis)."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in policies}
    with torch.no_grad():
        for _ in range(warmup):
            for policy in policies.values():
                _call(policy, obs)
        for _ in range(calls):
            for name, policy in policies.items():
                started = time.perf_counter()
                _call(policy, obs)
                times[name].append(1000 * (time.perf_counter() - started))
    out = {}
    for name, policy in policies.items():
        samples = times[name]
        per_call = actions_per_call(policy)
        median = statistics.median(samples)
        out[name] = {
            "call_ms_median": median,
            "call_ms_p10": float(np.percentile(samples, 10)),
            "call_ms_p90": float(np.percentile(samples, 90)),
            "calls": len(samples),
            "actions_per_call": per_call,
            "action_ms": median / per_call,
        }
    return out
