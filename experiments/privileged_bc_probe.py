"""Is a task's failure perception or control? A diagnostic, not a student.

Trains chunked BC on a demo dataset's proprio **plus the privileged object/goal poses**
(``observation.environment_state``), no camera, for each action-chunk length given, and rolls
each policy out on held-out seeds. If even this policy fails, better vision cannot fix the
task; if it succeeds where the camera policy fails, perception is the bottleneck. The
per-episode task flags (``is_grasped``, ``is_obj_placed``, ...) say where each one fails.

    python experiments/privileged_bc_probe.py --dataset runs/data/pickcube_300 \
        --task maniskill/PickCube-v1 --horizons 1 4 8 16 32 --episodes 50 \
        --out runs/probe/pickcube_privileged.json

No policy trained here is ever reported as a student or teacher result: it reads the object
poses, which the suite's VLA teachers and their students never see.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.data.lerobot_writer import ACTION, ENV_STATE, STATE
from vla_kd.envs import make_env
from vla_kd.evaluator import evaluate_task, summarize
from vla_kd.methods.bc import ChunkedBC
from vla_kd.policies.base import Policy
from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy


class PrivilegedInput(Policy):
    """Feeds ``state ++ privileged`` to a proprio-only chunked BC policy."""

    uses_privileged = True

    def __init__(self, inner: ChunkedBCPolicy) -> None:
        self.inner = inner

    def reset(self) -> None:
        self.inner.reset()

    def act(self, obs: dict) -> np.ndarray:
        return self.inner.act({"state": np.concatenate([obs["state"], obs["privileged"]], axis=-1)})


def train(dataset: LeRobotDataset, horizon: int, steps: int, batch_size: int, seed: int) -> ChunkedBCPolicy:
    """Chunked BC on ``state ++ environment_state``; the library's own ChunkedBC loss."""
    torch.manual_seed(seed)
    inputs = np.concatenate([dataset.states, dataset.env_states], axis=1).astype(np.float32)
    dataset.action_horizon = horizon
    chunks = [dataset.action_chunk(i) for i in range(len(dataset))]
    actions = torch.as_tensor(np.stack([c for c, _ in chunks]))
    is_pad = torch.as_tensor(np.stack([p for _, p in chunks]))
    policy = ChunkedBCPolicy(ChunkedBCConfig(state_dim=inputs.shape[1], horizon=horizon, use_image=False,
                                             hidden=512))
    # the dataset's own per-feature stats, the two input vectors' side by side
    state_stats, env_stats = (dataset.feature_stats(k) for k in (STATE, ENV_STATE))
    input_stats = {k: np.concatenate([state_stats[k], env_stats[k]]) for k in state_stats}
    policy.set_normalization(input_stats, dataset.feature_stats(ACTION))
    method = ChunkedBC(policy)
    optimiser = torch.optim.AdamW(policy.parameters(), lr=3e-4)
    states = torch.as_tensor(inputs)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        rows = torch.randint(0, len(states), (batch_size,), generator=generator)
        batch = {"observation.state": states[rows], "action": actions[rows], "action_is_pad": is_pad[rows]}
        loss, _ = method.loss(batch, step)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return policy.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--task", required=True, help="e.g. maniskill/PickCube-v1")
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100000, help="first evaluation seed (held out)")
    parser.add_argument("--max-episode-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    dataset = LeRobotDataset(args.dataset, load_images=False)
    if dataset.env_states is None:
        raise SystemExit(f"{args.dataset} has no observation.environment_state to probe with")
    rows = []
    for horizon in args.horizons:
        started = time.perf_counter()
        policy = train(dataset, horizon, args.steps, args.batch_size, seed=0)
        train_s = time.perf_counter() - started
        results, _ = evaluate_task(
            args.task,
            lambda: make_env(args.task, obs_mode="state", include_privileged=True,
                             max_episode_steps=args.max_episode_steps),
            lambda env, policy=policy: PrivilegedInput(policy),
            args.episodes, args.seed, progress=False,
        )
        summary = summarize(results)
        row = {"horizon": horizon, "train_seconds": round(train_s, 1),
               **{k: summary[k] for k in ("success_rate", "ci95", "milestone_rates") if k in summary}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": args.dataset, "task": args.task, "steps": args.steps,
                                    "episodes": args.episodes, "seed": args.seed, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
