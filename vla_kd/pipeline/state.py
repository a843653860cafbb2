"""What a `vla-kd pipeline` run has finished, so that ``resume=true`` continues it.

The main job takes about an hour on 2 cores; a crash (or a closed laptop) in its last stage
should not cost the demonstrations and the teacher again. After every stage the pipeline
records the stage's result (the demos report, a training summary, an evaluation row) and its
wall time in ``<run>/pipeline_state.json``, written atomically. A resumed run replays the
recorded stages from that file and runs only the rest; a training stage that was cut short
continues from its last checkpoint where its trainer can (the teacher and the action expert).

A resumed run must be the same run: its settings are compared with the recorded ones, except
those that cannot change a result (``IGNORED``). ``students`` may differ, so a finished run can
gain a student later.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vla_kd.errors import UserError
from vla_kd.reporting import write_json_atomic

log = logging.getLogger(__name__)

STATE_FILE = "pipeline_state.json"
#: settings a resumed run may change: they select stages, or change only how progress is shown
#: or how many trainings share the cores (a training at one torch thread instead of two differs
#: at most by float rounding: docs/experiments/speed.md)
IGNORED = ("resume", "students", "training_workers", "tracker", "eval.progress")


def comparable_settings(cfg: DictConfig) -> dict:
    """The resolved config without the ``IGNORED`` keys."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for dotted in IGNORED:
        *parents, leaf = dotted.split(".")
        node = settings
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)
    return settings


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


class PipelineState:
    """The finished stages of one pipeline run, persisted in ``<run_dir>/pipeline_state.json``,
    and the wall time of each stage of this invocation (``stage_seconds``, in the order they ran;
    a replayed stage keeps the time it took when it ran).

    ``resume=False`` starts afresh (any earlier record in the folder is replaced);
    ``resume=True`` requires the record and the same settings."""

    def __init__(self, run_dir: Path, cfg: DictConfig, resume: bool) -> None:
        self.path = Path(run_dir) / STATE_FILE
        self.resuming = resume
        self.started = time.perf_counter()
        settings = comparable_settings(cfg)
        self.record = {"settings": settings, "stages": {}, "wall_seconds": 0.0}
        if resume:
            self.record = self._load(settings)
        self.earlier_seconds = float(self.record["wall_seconds"])
        self.stage_seconds: dict[str, float] = {}

    def _load(self, settings: dict) -> dict:
        if not self.path.is_file():
            raise UserError(
                f"resume=true: {self.path.parent} holds no {STATE_FILE}; pass the folder of the run to "
                "continue as hydra.run.dir=runs/pipeline/<time>"
            )
        try:
            record = json.loads(self.path.read_text())
            recorded = record["settings"]
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"resume=true: {self.path} is unreadable ({error}); start a new run") from None
        changed = differences(recorded, settings)
        if changed:
            shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise UserError(
                f"resume=true: this run was started with other settings ({shown}); resume it with "
                "its own settings or start a new run"
            )
        return record

    def finished(self, stage: str) -> bool:
        """Whether an earlier invocation of this run finished ``stage`` (a fresh run: none)."""
        return stage in self.record["stages"]

    def replay(self, stage: str) -> Any:
        """The recorded result of a finished ``stage``; its recorded time joins ``stage_seconds``."""
        entry = self.record["stages"][stage]
        self.stage_seconds[stage] = float(entry["seconds"])
        log.info("stage %s: finished by the earlier run, not repeated", stage)
        return entry["result"]

    def keep(self, stage: str, result: Any, seconds: float) -> None:
        """Record that ``stage`` finished with ``result`` in ``seconds`` (atomically, so a crash
        leaves the previous record)."""
        self.stage_seconds[stage] = seconds
        log.info("stage %s: %.0f s", stage, seconds)
        self.record["stages"][stage] = {"result": result, "seconds": seconds}
        self.record["wall_seconds"] = self.wall_seconds()
        write_json_atomic(self.record, self.path)

    def run_stage(self, stage: str, work: Callable[..., Any], *args) -> Any:
        """``work(*args)``, timed as ``stage`` and recorded; when resuming a run that finished
        ``stage``, its recorded result."""
        if self.finished(stage):
            return self.replay(stage)
        started = time.perf_counter()
        result = work(*args)
        self.keep(stage, result, time.perf_counter() - started)
        return result

    def wall_seconds(self) -> float:
        """This invocation's time plus the earlier invocations' finished stages (time spent in a
        stage that crashed is not counted)."""
        return self.earlier_seconds + time.perf_counter() - self.started
