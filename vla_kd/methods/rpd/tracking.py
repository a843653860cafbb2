"""Per-rollout tracking of an RL run: what SB3 logs, counted in executed env steps."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from vla_kd.envs.rl import executed_steps
from vla_kd.reporting import write_json_atomic
from vla_kd.tracking import Tracker

log = logging.getLogger(__name__)


def env_steps_file(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".env_steps.json")


def save_env_steps(checkpoint: Path, env_steps: int, decisions: int) -> None:
    """Record, beside an SB3 checkpoint just written, the env steps executed so far and SB3's
    own step count then (atomically: a crash leaves the previous record whole)."""
    write_json_atomic({"env_steps": int(env_steps), "decisions": int(decisions)}, env_steps_file(checkpoint))


def saved_env_steps(checkpoint: Path, decisions: int) -> int | None:
    """The executed env steps recorded with ``checkpoint``, if that record belongs to it (same
    SB3 step count); None, with a warning, for a missing, unreadable or stale record."""
    target = env_steps_file(checkpoint)
    try:
        record = json.loads(target.read_text())
        if int(record["decisions"]) == int(decisions):
            return int(record["env_steps"])
        reason = f"it was saved at {record['decisions']} decisions, the checkpoint at {decisions}"
    except FileNotFoundError:
        reason = "there is none"
    except (ValueError, KeyError, TypeError) as error:
        reason = f"it is unreadable ({error})"
    log.warning("no executed env-step count for %s (%s): counting decisions x chunk", checkpoint, reason)
    return None


class TrackingCallback(BaseCallback):
    """Per rollout: training success rate (episodes that ended in it), return, speed and the
    last update's losses to the tracker; a progress bar; atomic periodic checkpoints.

    Counts env steps, not SB3's steps: a chunk-acting student's step executes up to
    ``action_chunk`` env steps (``info["executed_steps"]``). A resumed run continues from
    ``start_env_steps``, the count saved beside its checkpoint (None: decisions x chunk, which
    overcounts every chunk an episode's end cut short)."""

    def __init__(
        self, tracker: Tracker, total: int, save, every: int, progress: bool, action_chunk: int = 1,
        start_env_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.tracker, self.total, self.save, self.every = tracker, total, save, every
        self.progress, self.action_chunk = progress, action_chunk
        self.start_env_steps = start_env_steps
        self.env_steps = 0
        self.curve: list[dict] = []
        self._ended = self._succeeded = 0
        self._returns: list[float] = []
        self._last_save = 0

    def _on_training_start(self) -> None:
        if self.start_env_steps is not None:
            self.env_steps = self.start_env_steps
        else:
            self.env_steps = self.num_timesteps * self.action_chunk
        self.bar = tqdm(total=self.total, initial=self.env_steps, desc="rl", disable=not self.progress)
        self._last_save = self.env_steps
        self._started, self._start_steps = time.perf_counter(), self.env_steps

    def _on_step(self) -> bool:
        executed = executed_steps(self.locals["infos"])
        self.env_steps += executed
        self.bar.update(executed)
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                self._ended += 1
                self._succeeded += bool(info.get("is_success", False))
                if "episode" in info:
                    self._returns.append(float(info["episode"]["r"]))
        return True

    def _on_rollout_start(self) -> None:  # after the previous update: its losses are recorded
        if self.env_steps == self._start_steps:
            return
        self._flush()
        if self.env_steps - self._last_save >= self.every:
            self.save()
            self._last_save = self.env_steps

    def _flush(self) -> None:
        elapsed = time.perf_counter() - self._started
        row = {
            "env_steps": self.env_steps,
            "train/episodes": self._ended,
            "time/env_steps_per_s": (self.env_steps - self._start_steps) / max(elapsed, 1e-9),
            "time/seconds": elapsed,
        }
        if self._ended:
            row["train/success_rate"] = self._succeeded / self._ended
            row["train/episode_return"] = float(np.mean(self._returns)) if self._returns else float("nan")
        row.update(
            {
                k: float(v)
                for k, v in self.model.logger.name_to_value.items()
                if k.startswith(("train/", "time/teacher"))
            }
        )
        self.tracker.log(row, step=self.env_steps)
        self.curve.append(row)
        self.bar.set_postfix(success=f"{row.get('train/success_rate', float('nan')):.2f}")
        self._ended = self._succeeded = 0
        self._returns = []

    def _on_training_end(self) -> None:
        self._flush()
        self.bar.close()
