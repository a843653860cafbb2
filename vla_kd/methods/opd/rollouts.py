"""One OPD round's episodes: the student acts (a β-mixture with the teacher's chunks, as
DAgger's early rounds), and every state where the student decided is kept with the teacher's
label for it.

* A saved teacher (a chunked model without memory) labels after the round, in batches, from the
  very frames the student read; a decision the teacher itself executed keeps the chunk it
  executed (the same prediction, not asked twice).
* A teacher with memory (the scripted experts: a phase per episode) cannot label a state out of
  its episode, so it runs alongside the student, seeing every step, and its action at each
  decision is the label; such a teacher predicts one action, so the student must act one at a time.

Episodes run in ``workers`` processes through :func:`vla_kd.parallel.map_blocks`, as the evaluator's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import gymnasium as gym
import numpy as np
import torch

from vla_kd.errors import UserError
from vla_kd.parallel import map_blocks
from vla_kd.policies.base import Policy, add_batch_dim
from vla_kd.policies.loading import scripted_policy_for
from vla_kd.policies.pretrained import PretrainedPolicy

CAMERAS = ("rgb", "wrist_rgb")  # contract observation keys a student may read, besides state


@dataclass
class EpisodeDecisions:
    """The decision states of one student episode and the teacher's chunk label for each
    (``None`` until the round is labelled)."""

    seed: int
    instruction: str
    images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    states: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray | None] = field(default_factory=list)
    #: the chunk the student chose at each decision (None where the teacher's ran)
    student_chunks: list[np.ndarray | None] = field(default_factory=list)
    success: bool = False
    env_steps: int = 0
    teacher_decisions: int = 0  # decisions that executed the teacher's chunk (β)
    #: the privileged object/goal poses at each decision where the env gives them: a training
    #: target of a student's auxiliary pose head, never its input
    env_states: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.states)


def labels_offline(teacher: Policy | str) -> bool:
    """True for a teacher that labels any state on its own (a saved model without memory)."""
    return isinstance(teacher, PretrainedPolicy)


def student_chunk(student: Policy) -> int:
    """How many actions the student executes per decision."""
    return int(getattr(student, "actions_per_chunk", 1))


def check_pair(student: Policy, teacher: Policy | str, horizon: int) -> None:
    """One line for a teacher that cannot label the student's ``horizon``-action chunks."""
    if labels_offline(teacher):
        teacher_horizon = getattr(teacher.config, "horizon", 1)
        if teacher_horizon < horizon:
            raise UserError(
                f"method=opd: the teacher predicts {teacher_horizon}-action chunks; the "
                f"student learns {horizon}-action chunks (use a student with model.horizon "
                f"<= {teacher_horizon})"
            )
    elif horizon != 1 or student_chunk(student) != 1:
        raise UserError(
            f"method=opd: teacher '{getattr(teacher, 'name', teacher)}' keeps per-episode "
            "memory, so it labels online one action at a time: the student needs model.horizon=1"
        )


def student_view(obs: dict) -> dict:
    """What a student may read of a contract observation: cameras, proprio and the instruction,
    never privileged state."""
    return {k: v for k, v in obs.items() if k in CAMERAS or k in ("state", "instruction")}


def roll_out_episode(
    env: gym.Env,
    student: Policy | None,
    teacher: Policy,
    seed: int,
    beta: float,
    horizon: int,
    max_steps: int,
) -> EpisodeDecisions:
    """One episode from ``seed``: at each decision the teacher's chunk runs with probability
    ``beta`` (drawn from the episode's seed), the student's otherwise (``student=None``: the
    teacher's always, ``horizon`` actions at a time)."""
    rng = np.random.default_rng([seed, 1])
    obs, info = env.reset(seed=seed)
    if student is None:
        beta = 1.0
    else:
        student.reset()
    executed = student_chunk(student) if student is not None else horizon
    teacher.reset()
    online = not labels_offline(teacher)
    record = EpisodeDecisions(seed=seed, instruction=info["instruction"], success=bool(info["success"]))
    queue: list[np.ndarray] = []
    for _ in range(max_steps):
        batch = add_batch_dim(obs)
        batch["instruction"] = [info["instruction"]]
        teacher_action = teacher.act(batch)[0] if online else None  # sees every step
        if not queue:
            view = student_view(batch)
            for key in CAMERAS:
                if key in view:
                    record.images.setdefault(key, []).append(np.asarray(obs[key]))
            record.states.append(np.asarray(obs["state"], np.float32))
            if "privileged" in obs:
                record.env_states.append(np.asarray(obs["privileged"], np.float32))
            label = None
            if online:
                label = teacher_action[None]
            if rng.random() < beta:
                if label is None:
                    label = np.asarray(teacher.predict_action_chunk(batch)[0], np.float32)[:horizon]
                chunk, chosen = label, None
                record.teacher_decisions += 1
            else:
                chunk = chosen = np.asarray(student.predict_action_chunk(view)[0], np.float32)
            record.labels.append(label)
            record.student_chunks.append(chosen)
            queue = list(chunk[:executed])
        obs, _, terminated, truncated, info = env.step(queue.pop(0))
        record.env_steps += 1
        record.success |= bool(info["success"])
        if terminated or truncated:
            break
    return record


def _roll_out_block(
    make_env: Callable[[], gym.Env],
    student,
    teacher,
    seeds: list[int],
    _block_index: int,
    *,
    beta: float,
    horizon: int,
    max_steps: int,
) -> list[EpisodeDecisions]:
    env = make_env()
    try:
        if teacher == "scripted":  # the task's expert reads this env's privileged layout
            teacher = scripted_policy_for(env)
        return [roll_out_episode(env, student, teacher, s, beta, horizon, max_steps) for s in seeds]
    finally:
        env.close()


def roll_out_round(
    make_env: Callable[[], gym.Env],
    student: Policy | None,
    teacher: Policy | str,
    seeds: list[int],
    beta: float,
    horizon: int,
    max_steps: int,
    workers: int = 1,
) -> list[EpisodeDecisions]:
    """The episodes of ``seeds`` (in ``workers`` processes; ``make_env`` must pickle).
    ``teacher="scripted"``: the task's scripted expert, built beside each env."""
    for policy in (student, teacher):
        if policy is not None and hasattr(policy, "eval"):
            policy.eval()
    work = partial(
        _roll_out_block, make_env, student, teacher, beta=beta, horizon=horizon, max_steps=max_steps
    )
    with torch.no_grad():
        return [record for part in map_blocks(work, [int(s) for s in seeds], workers) for record in part]


def label_round(teacher: Policy, episodes: list[EpisodeDecisions], horizon: int, batch_size: int) -> int:
    """Fill in the teacher's ``horizon``-action chunk at every unlabelled decision, in batches of
    ``batch_size`` states; returns how many states were sent to the teacher."""
    missing = [(e, i) for e in episodes for i, label in enumerate(e.labels) if label is None]
    if hasattr(teacher, "eval"):
        teacher.eval()
    with torch.no_grad():
        for start in range(0, len(missing), batch_size):
            part = missing[start : start + batch_size]
            batch = {
                "state": np.stack([e.states[i] for e, i in part]),
                "instruction": [e.instruction for e, _ in part],
            }
            for key in part[0][0].images:
                batch[key] = np.stack([e.images[key][i] for e, i in part])
            chunks = np.asarray(teacher.predict_action_chunk(batch), np.float32)[:, :horizon]
            for (episode, i), chunk in zip(part, chunks, strict=True):
                episode.labels[i] = chunk
    return len(missing)


def label_gap(episodes: list[EpisodeDecisions]) -> float | None:
    """Mean absolute difference between the student's chosen actions and the teacher's labels
    over the decisions the student made (actions in [-1, 1]); None if it made none."""
    gaps = [
        np.abs(chosen[: len(label)] - label[: len(chosen)]).mean()
        for e in episodes
        for chosen, label in zip(e.student_chunks, e.labels, strict=True)
        if chosen is not None and label is not None
    ]
    return float(np.mean(gaps)) if gaps else None
