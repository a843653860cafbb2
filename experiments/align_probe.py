"""Where does an aligned VLA lose what its action expert's features know? Linear probes on
demonstration frames.

    python experiments/align_probe.py --dataset runs/data/pickcube_300 --expert <expert folder> \
        --aligned <aligned VLA folder> [<another> ...] --out runs/align_probe/pickcube

For sampled frames it computes the expert's features e (its encoder's output: what its decoder
reads), and for each aligned VLA the action token's hidden state h (the mapper's input) and the
mapped features m = mapper(h) (what it feeds the same decoder). It reports the L2 of m to e
(stage 1's loss, without augmentation) and its share of e's variance, and the R^2 of ridge
probes (scikit-learn) that read privileged quantities (columns of the dataset's
``observation.environment_state``) from e, h and m: fitted on the frames of the first
``--probe-train-episodes`` episodes, scored on the frames of the others. A quantity that e
carries and h does not was lost in the VLM; one that h carries and m does not, in the mapper.

The default targets are PickCube-v1's: its environment state is the cube's pose (7), the
gripper-to-cube vector (3) and the cube-to-goal vector (3).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import default_collate

from vla_kd.data.lerobot_dataset import ENV_STATE, STATE, LeRobotDataset
from vla_kd.methods.bc import camera_batch

PICKCUBE_TARGETS = ("cube position=0:3", "gripper to cube=7:10", "cube to goal=10:13")


def parse_target(spec: str) -> tuple[str, slice]:
    """``"name=start:stop"`` -> (name, slice of environment-state columns)."""
    name, columns = spec.rsplit("=", 1)
    start, stop = (int(x) for x in columns.split(":"))
    return name, slice(start, stop)


def probe_r2(x: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, alpha: float = 1.0) -> float:
    """Mean R^2 over ``y``'s columns of a standardised ridge probe ``x -> y`` fitted on
    ``fit_rows`` (boolean) and scored on the other rows."""
    probe = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[fit_rows], y[fit_rows])
    return float(r2_score(y[~fit_rows], probe.predict(x[~fit_rows])))


@torch.no_grad()
def probe_features(
    dataset: LeRobotDataset, expert, aligned: dict, rows: np.ndarray, batch_size: int = 100
) -> dict[str, np.ndarray]:
    """For dataset ``rows``: ``expert e``, ``<name>: h`` and ``<name>: m`` features (one row per
    frame), plus the frames' ``environment_state`` and ``episode``."""
    out: dict[str, list] = {"expert e": [], "environment_state": [], "episode": []}
    for start in range(0, len(rows), batch_size):
        batch = default_collate([dataset[int(i)] for i in rows[start:start + batch_size]])
        tasks = list(batch["task"])
        state = batch[STATE]
        images = camera_batch(batch, expert.config.cameras)
        out["expert e"].append(expert.encoder(images, state).numpy())
        for name, model in aligned.items():
            rgb = model.vlm.camera_input(camera_batch(batch, model.vlm.cameras))
            state_token = model.state_token(state)
            hidden = model.action_hidden(rgb, state, tasks, state_token)  # one trunk pass for h and m
            out.setdefault(f"{name}: h", []).append(hidden.numpy())
            mapped = model.mapper(model.with_state_skip(hidden, state_token))
            out.setdefault(f"{name}: m", []).append(mapped.numpy())
        out["environment_state"].append(batch[ENV_STATE].numpy())
        out["episode"].append(batch["episode_index"].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def probe_table(features: dict[str, np.ndarray], aligned: list[str], targets: list[str],
                probe_train_episodes: int) -> dict:
    """The L2 of each aligned VLA's m to e, and every probe's held-out R^2."""
    fit_rows = features["episode"] < probe_train_episodes
    if fit_rows.all() or not fit_rows.any():
        raise SystemExit(f"--probe-train-episodes {probe_train_episodes} leaves no frames on one side")
    e = features["expert e"]
    l2 = {}
    for name in aligned:
        mse = float(((features[f"{name}: m"] - e) ** 2).mean())
        l2[name] = {"l2": mse, "share_of_expert_variance": mse / float(e.var(0).mean())}
    sources = ["expert e", *(f"{name}: {part}" for name in aligned for part in ("h", "m"))]
    r2 = {
        source: {
            target: probe_r2(features[source], features["environment_state"][:, columns], fit_rows)
            for target, columns in map(parse_target, targets)
        }
        for source in sources
    }
    return {"frames": len(e), "probe_fit_frames": int(fit_rows.sum()), "l2": l2, "r2": r2}


def markdown(result: dict) -> str:
    names = list(next(iter(result["r2"].values())))
    lines = [f"{result['frames']} frames ({result['probe_fit_frames']} fit the probes, the rest score them)",
             "", "| features | " + " | ".join(f"R^2 {n}" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    lines += [f"| {source} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |"
              for source, row in result["r2"].items()]
    lines += ["", "| aligned VLA | L2(m, e) | share of e's variance |", "|---|---:|---:|"]
    lines += [f"| {name} | {v['l2']:.4f} | {v['share_of_expert_variance']:.3f} |"
              for name, v in result["l2"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    from vla_kd.policies.pretrained import PretrainedPolicy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--expert", required=True)
    parser.add_argument("--aligned", nargs="+", required=True, help="aligned VLA folders")
    parser.add_argument("--frames", type=int, default=4000, help="frames sampled from the dataset")
    parser.add_argument("--probe-train-episodes", type=int, default=240)
    parser.add_argument("--target", action="append", help="NAME=START:STOP of environment_state")
    parser.add_argument("--out", type=Path, default=Path("runs/align_probe"))
    args = parser.parse_args()

    torch.set_num_threads(2)
    dataset = LeRobotDataset(args.dataset)
    if dataset.env_states is None:
        raise SystemExit(f"'{args.dataset}' has no {ENV_STATE}: nothing to probe for")
    count = min(args.frames, len(dataset))
    rows = np.sort(np.random.default_rng(0).choice(len(dataset), count, replace=False))
    expert = PretrainedPolicy.from_pretrained(args.expert)
    if expert.policy_type != "diffusion_action_expert":
        raise SystemExit(f"--expert '{args.expert}' holds a {expert.policy_type}, not an action expert")
    aligned = {folder: PretrainedPolicy.from_pretrained(folder) for folder in args.aligned}
    for folder, model in aligned.items():
        if model.policy_type != "aligned_vla":
            raise SystemExit(f"--aligned '{folder}' holds a {model.policy_type}, not an aligned VLA")
    features = probe_features(dataset, expert, aligned, rows)
    targets = args.target or list(PICKCUBE_TARGETS)
    result = probe_table(features, list(aligned), targets, args.probe_train_episodes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.json").write_text(json.dumps(result, indent=2))
    (args.out / "probe.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
