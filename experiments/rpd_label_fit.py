"""Can a Markovian state student fit a chunked teacher's actions? A check for RPD.

    python experiments/rpd_label_fit.py --teacher <TokenVLA folder> --task maniskill/PushCube-v1

A chunked teacher executes its predicted chunk open-loop, so its action at a state also depends
on how far into the chunk it is (the phase, episode step mod chunk length). RPD's state student
sees no phase. This script rolls the teacher out on its own (seeds from 200000, used by no
training or evaluation run), records what the RPD state student would read (``state`` +
``privileged``), the phase and the teacher's action, and fits the same MLP twice, without and
with a one-hot phase input, on three quarters of the episodes. It prints the held-out MSE of
each fit (and of predicting the mean action) and writes them to ``--out``. If the phase cuts the
error a lot, the teacher's labels are partly unlearnable for the student RPD trains.

``--action-noise 0 0.3 0.6`` repeats all of it with Gaussian noise of that width added to the
*executed* action while the label stays the teacher's own, noise-free action, and the teacher
goes on with its chunk as if it had not been disturbed. That is the situation inside RPD: the
student executes samples of its Gaussian (std ``exp(log_std_init)`` = 0.61 at the start), and
``label_rollout`` replays the teacher's chunks over the states those samples reach. If the
held-out error grows with the noise, the chunked teacher's labels stop being a function of the
student's state once the student leaves the teacher's own path. ``--teacher-action-steps 1``
makes the teacher re-predict at every step (RPD's ``rl.teacher_action_steps=1``), so each label
is a fresh prediction from the state it labels: the control for that explanation.

``--student <folder>`` rolls out a chunk-acting RL student instead (``rl.action_chunk=k``,
sampling its Gaussian as in training) and labels each of its decisions with the first k
actions of the teacher's chunk from that state: RPD's chunk labels on the student's own path.
A fit far below RPD's final ``train/teacher_loss`` means the labels are learnable and the
optimisation inside PPO's update is what holds the student back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.torch_layers import create_mlp
from tqdm import tqdm

from vla_kd.envs import make_env
from vla_kd.evaluator import run_episode
from vla_kd.policies.base import Policy
from vla_kd.policies.loading import build_policy, policy_image_size


def student_inputs(obs: dict) -> np.ndarray:
    """What the RPD state student reads from a batch-of-one contract observation."""
    return np.concatenate([obs["state"][0], obs["privileged"][0]]).astype(np.float32)


class RecordingPolicy(Policy):
    """Acts as ``teacher`` and records, per step, what the RPD state student would read, the
    chunk phase (steps since the episode's reset, mod the chunk length) and the action."""

    def __init__(self, teacher: Policy, action_noise: float = 0.0, seed: int = 0) -> None:
        self.teacher, self.chunk = teacher, int(getattr(teacher, "actions_per_chunk", 1))
        self.action_noise, self.rng = action_noise, np.random.default_rng(seed)
        self.rows: dict[str, list] = {"inputs": [], "phase": [], "action": [], "episode": []}
        self.episode, self._t = -1, 0

    def reset(self) -> None:
        self.teacher.reset()
        self.episode, self._t = self.episode + 1, 0

    def act(self, obs: dict) -> np.ndarray:
        actions = np.asarray(self.teacher.act(obs), np.float32)
        self.rows["inputs"].append(student_inputs(obs))
        self.rows["phase"].append(self._t % self.chunk)
        self.rows["action"].append(actions[0])
        self.rows["episode"].append(self.episode)
        self._t += 1
        if self.action_noise > 0:  # executed, not recorded: the label stays the teacher's action
            actions = np.clip(actions + self.rng.normal(0, self.action_noise, actions.shape), -1, 1)
        return actions.astype(np.float32)


class ChunkLabelRecorder(Policy):
    """Acts as ``actor`` (a chunk-acting student) and records, at each of its decisions, what it
    reads and the teacher's first ``k`` actions predicted from that state, flattened."""

    def __init__(self, actor: Policy, teacher: Policy) -> None:
        self.actor, self.teacher, self.chunk = actor, teacher, int(actor.actions_per_chunk)
        self.rows: dict[str, list] = {"inputs": [], "phase": [], "action": [], "episode": []}
        self.episode = -1

    def reset(self) -> None:
        self.actor.reset()
        self.episode += 1

    def act(self, obs: dict) -> np.ndarray:
        if len(self.actor.rows_to_predict(1)):  # a decision point: the student predicts a chunk
            chunk = np.asarray(self.teacher.predict_action_chunk(obs), np.float32)[0, : self.chunk]
            self.rows["inputs"].append(student_inputs(obs))
            self.rows["phase"].append(0)
            self.rows["action"].append(chunk.reshape(-1))
            self.rows["episode"].append(self.episode)
        return self.actor.act(obs)


def rollouts(task: str, teacher_folder: str, episodes: int, max_steps: int,
             action_noise: float = 0.0, action_steps: int | None = None,
             student: str | None = None) -> dict[str, np.ndarray]:
    """The teacher's episodes (the evaluator's episode loop), with ``action_noise`` added to the
    executed actions: student inputs, chunk phase, teacher action and episode index per step,
    the chunk length and the successes."""
    env = make_env(
        task, obs_mode="rgb", include_privileged=True, max_episode_steps=max_steps,
        image_size=policy_image_size(teacher_folder) or 128,
    )
    try:
        teacher = build_policy(teacher_folder, env, action_steps=action_steps)
        if student:
            recorder = ChunkLabelRecorder(build_policy(student, env, seed=0, sample_actions=True), teacher)
        else:
            recorder = RecordingPolicy(teacher, action_noise)
        successes = sum(
            run_episode(env, recorder, 200000 + episode, max_steps)[0]["success_once"]
            for episode in tqdm(range(episodes), desc="student rollouts" if student else
                                f"teacher rollouts, action noise {action_noise}")
        )
    finally:
        env.close()
    out = {k: np.stack(v) if k in ("inputs", "action") else np.asarray(v) for k, v in recorder.rows.items()}
    out["chunk"], out["successes"] = np.asarray(recorder.chunk), np.asarray(successes)
    return out


def fit_mse(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
            steps: int, seed: int) -> float:
    """Held-out MSE of the RPD student's MLP shape (rl's default: [256] * 3, tanh) fit by Adam."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x, xt = (torch.as_tensor((a - mean) / std) for a in (train_x, test_x))
    y, yt = torch.as_tensor(train_y), torch.as_tensor(test_y)
    model = torch.nn.Sequential(*create_mlp(x.shape[1], y.shape[1], [256, 256, 256], torch.nn.Tanh))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(len(x), (256,), generator=generator)
        loss = torch.nn.functional.mse_loss(model(x[index]), y[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(xt), yt))


def fit_labels(args: argparse.Namespace, action_noise: float) -> dict:
    """Roll out at one noise level; held-out MSE of the mean, state and state + phase fits."""
    data = rollouts(
        args.task, args.teacher, args.episodes, args.max_steps, action_noise, args.teacher_action_steps,
        args.student,
    )
    chunk = int(data["chunk"])
    phase = np.eye(chunk, dtype=np.float32)[data["phase"]]
    train = data["episode"] < int(0.75 * args.episodes)
    test = ~train
    y = data["action"]
    results = {
        "action_noise": action_noise,
        "chunk": chunk,
        "teacher_successes": int(data["successes"]),
        "frames": {"train": int(train.sum()), "test": int(test.sum())},
        "mse_predicting_the_mean": float(((y[test] - y[train].mean(0)) ** 2).mean()),
    }
    with_phase = np.concatenate([data["inputs"], phase], 1)
    for name, x in (("state", data["inputs"]), ("state_and_phase", with_phase)):
        results[f"mse_{name}"] = fit_mse(x[train], y[train], x[test], y[test], args.fit_steps, seed=0)
    print(json.dumps(results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--task", default="maniskill/PushCube-v1")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--max-steps", type=int, default=50, help="episode limit (RPD trains at 50)")
    parser.add_argument("--fit-steps", type=int, default=3000)
    parser.add_argument("--action-noise", type=float, nargs="+", default=[0.0],
                        help="std of the noise added to executed actions; one fit per value")
    parser.add_argument("--teacher-action-steps", type=int, default=None,
                        help="actions of a chunk executed before re-predicting (default: all)")
    parser.add_argument("--student", default=None,
                        help="a chunk-acting RL student folder whose own rollouts are labelled")
    parser.add_argument("--out", type=Path, default=Path("runs/rpd_label_fit.json"))
    args = parser.parse_args()

    results = {
        "task": args.task,
        "teacher": args.teacher,
        "episodes": args.episodes,
        "max_steps": args.max_steps,
        "teacher_action_steps": args.teacher_action_steps,
        "student": args.student,
        "by_action_noise": [fit_labels(args, noise) for noise in args.action_noise],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
