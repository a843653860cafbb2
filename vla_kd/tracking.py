"""Experiment tracking: Weights & Biases (offline by default) plus plain files in the run folder.

The run folder always gets ``metrics.jsonl`` (one JSON object per ``log`` call), ``results.csv``
(the last table logged) and ``summary.json``, so results are readable without wandb.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vla_kd.config_checks import one_of

BACKENDS = ("wandb", "none")
MODES = ("offline", "online", "disabled")


@dataclass
class TrackerConfig:
    """The ``tracker`` config group (``tracker=wandb|none``)."""
    backend: str = "wandb"  # wandb | none (no wandb run and no metrics.jsonl / results.csv / summary.json)
    mode: str = "offline"  # offline needs no account or network; `wandb sync` uploads later
    project: str = "vla_kd"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        one_of(self, "backend", BACKENDS)
        one_of(self, "mode", MODES)


class Tracker:
    """Logs metrics, tables and a summary to wandb and to files under ``run_dir``."""

    def __init__(
        self,
        run_dir: str | Path,
        config: dict | None = None,
        use_wandb: bool = True,
        mode: str = "offline",
        project: str = "vla_kd",
        entity: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        job_type: str | None = None,
        group: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        self._summary: dict[str, Any] = {}
        self._wandb_run = None
        if use_wandb:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb  # heavy: wandb (0.5 s), only with tracker=wandb

            self._wandb_run = wandb.init(
                mode=mode,
                project=project,
                entity=entity,
                name=name,
                tags=list(tags or []),
                job_type=job_type,
                group=group,
                dir=str(self.run_dir),
                config=config or {},
                reinit="finish_previous",
            )

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        record = dict(metrics) if step is None else {"step": step, **metrics}
        self._metrics.write(json.dumps(record, default=float) + "\n")
        self._metrics.flush()
        if self._wandb_run is not None:
            self._wandb_run.log(metrics, step=step)

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` to ``results.csv`` and to wandb as a table called ``name``."""
        if not rows:
            return
        columns = list(rows[0])
        with open(self.run_dir / "results.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        if self._wandb_run is not None:
            import wandb  # heavy: wandb (0.5 s), only with tracker=wandb

            table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
            self._wandb_run.log({name: table})

    def log_image(self, name: str, path: str | Path) -> None:
        if self._wandb_run is not None:
            import wandb  # heavy: wandb (0.5 s), only with tracker=wandb

            self._wandb_run.log({name: wandb.Image(str(path))})

    def summary(self, values: dict[str, Any]) -> None:
        self._summary.update(values)
        (self.run_dir / "summary.json").write_text(json.dumps(self._summary, indent=2, default=float))
        if self._wandb_run is not None:
            self._wandb_run.summary.update(values)

    def finish(self) -> None:
        self._metrics.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


class NullTracker(Tracker):
    """``tracker=none``: records nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        pass

    def log_image(self, name: str, path: str | Path) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


def make_tracker(
    cfg, run_dir: str | Path, config: dict | None = None, job_type: str | None = None,
    group: str | None = None,
) -> Tracker:
    """Build the tracker named by the ``tracker`` config node; ``group`` gathers the W&B runs of
    one experiment (a pipeline's stages) into one W&B group."""
    settings = cfg if isinstance(cfg, TrackerConfig) else TrackerConfig(**_plain(cfg))
    if settings.backend == "none":
        return NullTracker()
    return Tracker(
        run_dir,
        config=config,
        mode=settings.mode,
        project=settings.project,
        entity=settings.entity,
        tags=settings.tags,
        job_type=job_type,
        group=group,
    )


def _plain(cfg) -> dict:
    """A config node (DictConfig or dict) as a plain dict."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
