"""``vla-kd bench``: decoder latency, action tokens/s and Jacobi passes, side by side, per chunk
size and batch; optionally each decoder's success, for a success-vs-latency plot
(vla_kd.benchmarks.side_by_side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from vla_kd.benchmarks.side_by_side import run_bench
from vla_kd.cli_support import hydra_command
from vla_kd.config_checks import ConfigValueError, at_least

CONFIG_NAME = "bench"


@dataclass
class EarlyExitSettings:
    """The rule for the ceed_early_exit row (null: that test is off)."""

    max_changed: int | None = None
    max_bin_change: int | None = 2
    max_iterations: int | None = None

    def __post_init__(self) -> None:
        at_least(self, 0, "max_changed", "max_bin_change")
        at_least(self, 1, "max_iterations")


@dataclass
class BenchCommandConfig:
    """``configs/bench.yaml``: a TokenVLA's decoders side by side (greedy AR, training-free
    Jacobi, and with a consistency-distilled student: Jacobi, Jacobi + early exit). One entry
    per chunk size."""

    maniskill: Any = MISSING
    libero: Any = MISSING
    teachers: list[str] = MISSING  # token_vla or hf_vla folders, e.g. [runs/a/teacher] (one per chunk size)
    #: matching CEED student folders (or null entries)
    students: list[str | None] = field(default_factory=list)
    #: matching DySL (skip_vla) folders; needs dataset=
    dysl_students: list[str | None] = field(default_factory=list)
    #: matching aligned_vla folders, timed beside AR
    aligned_students: list[str | None] = field(default_factory=list)
    #: matching saved students that predict continuous chunks from camera + proprio (chunked BC,
    #: a diffusion expert; e.g. an OPD student), timed beside AR per action
    action_students: list[str | None] = field(default_factory=list)
    replay_calls: int = 200  # DySL: demonstration frames replayed in order (each contestant, batch 1)
    #: DySL threshold sweep: guidance re-calibrated on the demos at each quantile (with episodes > 0:
    #: a table of success, speed-up and trunk FLOPs per setting, and pareto.png)
    dysl_quantiles: list[float] = field(default_factory=list)
    #: demos: the post threshold from the demos' own jumps; student: from the student's cheap path
    dysl_calibrations: list[str] = field(default_factory=lambda: ["demos"])
    early_exit: EarlyExitSettings = field(default_factory=EarlyExitSettings)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    calls: int = 50  # timed calls per decoder (after warm-up), none dropped
    warmup: int = 5
    #: observations the timed calls cycle through (each round, every decoder decodes the same one):
    #: dataset frames spread over the demos, or env resets at consecutive seeds
    frames: int = 20
    dataset: str | None = None  # observations from this LeRobot dataset (else env resets)
    env: str = "maniskill/PushCube-v1"  # observation source (resets at held-out seeds) and evaluation task
    episodes: int = 0  # > 0: also evaluate each decoder on env (held-out seeds) for the plot
    seed: int = 100000
    max_episode_steps: int = 100
    workers: int = 2
    threads: int = 1  # torch threads while timing (1 = one core, as on a robot's computer)
    output_json: str = "${hydra:runtime.output_dir}/bench.json"

    def __post_init__(self) -> None:
        at_least(self, 1, "replay_calls", "batch_sizes", "calls", "max_episode_steps", "workers", "threads",
                 "frames")
        at_least(self, 0, "warmup", "episodes", "seed")
        for q in self.dysl_quantiles:
            if not 0 <= q <= 1:
                raise ConfigValueError("dysl_quantiles",
                                       f"must lie in [0, 1], got {list(self.dysl_quantiles)}")
        for calibration in self.dysl_calibrations:
            if calibration not in ("demos", "student"):
                raise ConfigValueError("dysl_calibrations", f"must be demos or student, got {calibration!r}")


ConfigStore.instance().store(name=f"{CONFIG_NAME}_schema", node=BenchCommandConfig)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    return run_bench(cfg)


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
