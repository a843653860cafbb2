"""Steps/s of the contract wrappers vs the raw simulators, measured side by side.

Both are timed on the *same* simulator instance, in alternating blocks, so machine noise hits
both equally: ``raw`` steps the simulator object the wrapper holds (ManiSkill's CPUGymWrapper,
LIBERO's OffScreenRenderEnv) and ``wrapped`` steps the contract env around it. Overhead is
``raw_rate / wrapped_rate - 1`` on the median block rates.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from vla_kd.envs import make_env


@dataclass
class OverheadResult:
    """One configuration's side-by-side rates."""

    name: str
    raw_steps_per_s: float
    wrapped_steps_per_s: float
    overhead: float
    blocks: int
    steps_per_block: int


def _raw_step(env, action: np.ndarray):
    """Step the simulator the contract env wraps, in that simulator's own terms."""
    if hasattr(env, "_sim_action_dim"):  # ManiSkill
        return env._sim.step(action[: env._sim_action_dim])
    raw_action = action.astype(np.float64)
    raw_action[6] = -raw_action[6]
    return env._sim.step(raw_action)


def measure(name: str, task: str, blocks: int, steps: int, **env_kwargs) -> OverheadResult:
    env = make_env(task, **env_kwargs)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, 7)).astype(np.float32) * 0.3
    rates: dict[str, list[float]] = {"raw": [], "wrapped": []}
    try:
        env.reset(seed=0)
        for _ in range(3):  # warm-up: shader caches, first renders
            env.step(actions[0])
        for block in range(blocks):
            # Alternate which side goes first so drift in machine load cancels out.
            order = ("raw", "wrapped") if block % 2 == 0 else ("wrapped", "raw")
            for side in order:
                env.reset(seed=block)
                start = time.perf_counter()
                for action in actions:
                    if side == "raw":
                        _raw_step(env, action)
                    else:
                        env.step(action)
                rates[side].append(steps / (time.perf_counter() - start))
    finally:
        env.close()
    raw, wrapped = statistics.median(rates["raw"]), statistics.median(rates["wrapped"])
    return OverheadResult(name, raw, wrapped, raw / wrapped - 1.0, blocks, steps)


CONFIGS = {
    "maniskill_pickcube_state": dict(task="maniskill/PickCube-v1", obs_mode="state", steps=200),
    "maniskill_pickcube_rgb": dict(task="maniskill/PickCube-v1", obs_mode="rgb", steps=40),
    "libero_spatial_0_rgb": dict(task="libero/libero_spatial/0", obs_mode="rgb", steps=20),
}


def main(argv: list[str] | None = None) -> list[OverheadResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="configurations to run")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks per side")
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args(argv)
    results = []
    for name in args.only or list(CONFIGS):
        spec = dict(CONFIGS[name])
        task, steps = spec.pop("task"), spec.pop("steps")
        result = measure(name, task, args.blocks, steps, **spec)
        results.append(result)
        print(
            f"{name:<28} raw {result.raw_steps_per_s:8.1f} steps/s   wrapped "
            f"{result.wrapped_steps_per_s:8.1f} steps/s   overhead {100 * result.overhead:+6.2f}%",
            flush=True,
        )
    if args.output_json:
        with open(args.output_json, "w") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)
    return results


if __name__ == "__main__":
    main()
