"""Per-round progress of an OPD run: what the rounds have spent, the best round on validation,
``rounds.json`` and the success plot (vs round and vs teacher queries)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt

from vla_kd.reporting import write_json_atomic

ENTROPY, TEACHER_ENTROPY = "train/student_token_entropy", "train/teacher_token_entropy"


@dataclasses.dataclass
class Progress:
    """What the rounds have spent so far and the best round on validation."""

    teacher_queries: int = 0
    env_steps: int = 0
    trainer_steps: int = 0
    rows: list = dataclasses.field(default_factory=list)
    best_row: dict | None = None
    best_weights: dict | None = None

    def keep_if_best(self, row: dict, student) -> None:
        if self.best_row is None or row["val_success"] >= self.best_row["val_success"]:  # ties: more data
            self.best_row, self.best_weights = row, copy.deepcopy(student.state_dict())


def save_rounds(rows: list[dict], folder: Path) -> Path:
    """``rounds.json`` and ``success_vs_round.png`` in ``folder`` (with a token student's entropy
    per round beside the teacher's, where the rounds logged them); the plot's path."""
    write_json_atomic(rows, folder / "rounds.json")
    entropy = all(ENTROPY in r for r in rows)
    fig, axes = plt.subplots(1, 3 if entropy else 2, figsize=(13.0 if entropy else 9.0, 3.6))
    rounds = [r["round"] for r in rows]
    queries = [r["teacher_queries_total"] for r in rows]
    for ax, x, label in ((axes[0], rounds, "round"), (axes[1], queries, "teacher queries (cumulative)")):
        ax.plot(x, [r["rollout_success"] for r in rows], "o-", label="rollouts (with β)")
        ax.plot(x, [r["val_success"] for r in rows], "s-", label="validation (student alone)")
        ax.set_xlabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("success rate")
    axes[0].legend(loc="lower right", fontsize=8)
    if entropy:
        axes[2].plot(rounds, [r[ENTROPY] for r in rows], "o-", label="student")
        axes[2].plot(rounds, [r.get(TEACHER_ENTROPY, float("nan")) for r in rows], "k--", label="teacher")
        axes[2].set_xlabel("round")
        axes[2].set_ylabel("token entropy (nats, last batch)")
        axes[2].legend(fontsize=8)
    fig.suptitle("on-policy distillation: success per round")
    fig.tight_layout()
    path = folder / "success_vs_round.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
