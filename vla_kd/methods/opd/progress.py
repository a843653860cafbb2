"""Per-round progress of an OPD run: what the rounds have spent, the best round on validation,
``rounds.json`` and the success plot (vs round and vs teacher queries)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt

from vla_kd.reporting import write_json_atomic


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
    """``rounds.json`` and ``success_vs_round.png`` in ``folder``; the plot's path."""
    write_json_atomic(rows, folder / "rounds.json")
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), sharey=True)
    rounds = [r["round"] for r in rows]
    queries = [r["teacher_queries_total"] for r in rows]
    for ax, x, label in ((axes[0], rounds, "round"), (axes[1], queries, "teacher queries (cumulative)")):
        ax.plot(x, [r["rollout_success"] for r in rows], "o-", label="rollouts (with β)")
        ax.plot(x, [r["val_success"] for r in rows], "s-", label="validation (student alone)")
        ax.set_xlabel(label)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("success rate")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("on-policy distillation: success per round")
    fig.tight_layout()
    path = folder / "success_vs_round.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
