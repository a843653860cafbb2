"""Validation during RL training: the student's success on validation seeds every N env steps,
and the best-validated weights kept.

An RL run from a behaviour clone can end below where it started (docs/experiments/rpd.md): PPO's updates
move a sharp Gaussian far. The usual remedy, as SB3's ``EvalCallback`` and ManiSkill's PPO
baselines do, is to evaluate periodically and keep the best weights. SB3's callback seeds its
evaluation env once and lets later resets draw their own seeds, so its episodes cannot be kept
apart from the held-out test seeds by construction; this one runs the suite's evaluator on an
explicit seed range that is checked to be disjoint from ``eval``'s."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from vla_kd.errors import UserError
from vla_kd.evaluator import EvalConfig, check_apart_from_held_out, evaluate_policy
from vla_kd.policies.gaussian_mlp import GaussianStudent
from vla_kd.reporting import write_json_atomic
from vla_kd.tracking import Tracker

log = logging.getLogger(__name__)
HISTORY_FILE = "validation.json"
BEST_WEIGHTS_FILE = "best_policy.pt"


@contextmanager
def untouched_global_rngs():
    """Restore the global random states on exit. Building and rolling out the validation student
    draws from torch's and numpy's global generators, which SB3's training also draws from
    (action sampling, minibatch order): without this, validating would change the run."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def check_validation_seeds(validation, eval_cfg) -> None:
    """Refuse validation seeds that overlap the held-out evaluation's: selecting weights on the
    test episodes would report a success rate the student was chosen for."""
    count = int(validation.episodes)
    if count <= 0:
        raise UserError(f"method.validation.episodes must be positive, got {count}")
    check_apart_from_held_out(int(validation.seed), count, eval_cfg, "method.validation",
                              "method.validation.seed")


def make_validation_scorer(sim, held_out: EvalConfig, validation, task: str,
                           student_config) -> Callable[[dict], dict]:
    """A function scoring actor-critic weights: the student they make, evaluated by the suite's
    evaluator on ``validation``'s seeds (mean action, one process, the held-out protocol's
    episode length); ``sim`` holds the simulator nodes."""
    settings = dataclasses.replace(held_out, episodes=validation.episodes, seed=validation.seed,
                                   progress=False, workers=1)

    def score(state_dict: dict) -> dict:
        student = GaussianStudent(student_config)
        student.actor_critic.load_state_dict(state_dict)
        student.eval()
        results = evaluate_policy(sim, settings, student, task, name="validation")
        return {"success_rate": results["success_rate"], "ci95": results["ci95"],
                "mean_return": results["mean_return"],
                # env steps spent on choosing weights, not on learning: reported apart
                "validation_env_steps": round(results["mean_length"] * results["episodes"])}

    return score


def make_validation(sim, held_out: EvalConfig, rl, task: str, student_config, env_steps: Callable[[], int],
                    tracker: Tracker, store: Path, resume: bool) -> ValidationCallback | None:
    """The validation callback ``rl.validation`` asks for (None when its ``every`` is 0). The
    caller checks the seeds first (``check_validation_seeds``), before anything slow is built."""
    validation = rl.validation
    if not validation.every:
        return None
    score = make_validation_scorer(sim, held_out, validation, task, student_config)
    return ValidationCallback(score, validation.every, env_steps, tracker, store, resume)


def validation_summary(callback: ValidationCallback | None, validation) -> dict | None:
    """What the run's validation chose, for ``train_summary.json``."""
    if callback is None:
        return None
    best = callback.best
    return {
        "seed": int(validation.seed),
        "episodes": int(validation.episodes),
        "kept": "best" if validation.keep_best else "last",
        "best_env_steps": best["env_steps"] if best else None,
        "best_success_rate": best["success_rate"] if best else None,
        "history": [(row["env_steps"], row["success_rate"]) for row in callback.history],
        "env_steps_spent": sum(row.get("validation_env_steps", 0) for row in callback.history),
    }


class ValidationCallback(BaseCallback):
    """Scores the policy when RL starts (after any warm start or ``init_policy``), after every
    ``every`` env steps (at the rollout boundary that passes them) and when training ends;
    keeps a copy of the best-scoring weights (ties keep the earlier). With ``store``, the
    history and the best weights are written atomically there; ``resume`` reads them back (a
    fresh run in the same folder starts a new history).

    ``env_steps`` reads the executed env-step count (the tracking callback's)."""

    def __init__(
        self,
        score: Callable[[dict], dict],
        every: int,
        env_steps: Callable[[], int],
        tracker: Tracker | None = None,
        store: Path | None = None,
        resume: bool = False,
    ) -> None:
        super().__init__()
        self.score, self.every, self.env_steps = score, every, env_steps
        self.tracker, self.store = tracker, store
        self.history: list[dict] = []
        self.best_state: dict | None = None
        if resume and store is not None and (store / HISTORY_FILE).is_file():
            self.history = json.loads((store / HISTORY_FILE).read_text())
            if self.history:
                self.best_state = torch.load(store / BEST_WEIGHTS_FILE, weights_only=True)

    @property
    def best(self) -> dict | None:
        """The history row of the kept weights (None before the first validation)."""
        return max(self.history, key=lambda row: row["success_rate"], default=None)

    def _last_validated(self) -> int:
        return self.history[-1]["env_steps"] if self.history else -1

    def _on_training_start(self) -> None:
        if self._last_validated() < self.env_steps():
            self.validate()

    def _on_rollout_start(self) -> None:
        if self.env_steps() - self._last_validated() >= self.every:
            self.validate()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self._last_validated() < self.env_steps():
            self.validate()

    def validate(self) -> dict:
        state = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}
        best = self.best
        with untouched_global_rngs():
            row = {"env_steps": self.env_steps(), **self.score(state)}
        self.history.append(row)
        log.info("validation at %d env steps: success %.1f%%", row["env_steps"], 100 * row["success_rate"])
        if best is None or row["success_rate"] > best["success_rate"]:
            self.best_state = state
            self._save_best_weights(state)
        if self.store is not None:
            write_json_atomic(self.history, self.store / HISTORY_FILE)
        if self.tracker is not None:
            self.tracker.log({"val/success_rate": row["success_rate"], "val/ci95_low": row["ci95"][0],
                              "val/ci95_high": row["ci95"][1]}, step=row["env_steps"])
        return row

    def _save_best_weights(self, state: dict) -> None:
        if self.store is None:
            return
        self.store.mkdir(parents=True, exist_ok=True)
        staged = self.store / f"{BEST_WEIGHTS_FILE}.tmp"
        torch.save(state, staged)
        staged.replace(self.store / BEST_WEIGHTS_FILE)
