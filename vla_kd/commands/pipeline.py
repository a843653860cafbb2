"""``vla-kd pipeline``: the main job (vla_kd.pipeline). Demonstrations, then the teacher and the
action expert trained on them, then the students distilled from the teacher (``students``), all
evaluated on held-out seeds, side by side in one results table."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from vla_kd.cli_support import hydra_command
from vla_kd.config_checks import ConfigValueError, at_least
from vla_kd.errors import unknown_name
from vla_kd.evaluator import EvalConfig
from vla_kd.methods import registry
from vla_kd.pipeline.job import run_pipeline
from vla_kd.policies.vlm_maker import VLMSpec

CONFIG_NAME = "pipeline"
#: nodes that take a model option by name: `teacher=hf_vla` (vla_kd.cli.expand_model_options)
MODEL_NODES = ("teacher", "action_expert")


@dataclass
class DemoSettings:
    n: int = 100  # planner attempts (seeds 0..n-1); failures are dropped and counted
    image_size: int = 64
    workers: int = 2  # processes for planning, conversion and recording

    def __post_init__(self) -> None:
        at_least(self, 1, "n", "workers")
        at_least(self, 8, "image_size")


@dataclass
class PipelineCommandConfig:
    """``configs/pipeline.yaml``. A student named in ``students`` that has no node here runs
    with its method's own YAML and the default trainer."""

    task: str = "maniskill/PushCube-v1"
    #: true: continue the run in hydra.run.dir (same settings; `students` may differ), skipping the
    #: stages its pipeline_state.json records as finished
    resume: bool = False
    demos: DemoSettings = field(default_factory=DemoSettings)
    #: after the teacher's training: the action expert's and the students' trainings run this many
    #: at a time, each in a process of its own with one torch thread; 1: one after another here
    training_workers: int = 2
    teacher: Any = MISSING  # the teacher's model node (trained with method=bc)
    #: teacher=hf_vla without teacher.checkpoint: the small VLM the pipeline builds to fine-tune
    vlm: VLMSpec = field(default_factory=VLMSpec)
    action_expert: Any = MISSING  # the action expert's model node
    teacher_trainer: Any = MISSING
    action_expert_trainer: Any = MISSING
    #: distilled from the teacher: any registered method. Their trainings start in this order as
    #: workers free up, so the longest come first (RPD, OPD) and the two workers finish together
    students: list[str] = field(default_factory=lambda: ["rpd", "opd", "ceed", "dysl", "align"])
    rpd: Any = None  # the students' method nodes and trainers, as pipeline.yaml tunes them
    ceed: Any = None
    ceed_trainer: Any = None
    dysl: Any = None
    dysl_trainer: Any = None
    align: Any = None
    align_trainer: Any = None
    opd: Any = None
    opd_trainer: Any = None
    opd_model: Any = None  # the OPD student's model node (a fresh student, trained on the demos first)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(episodes=50, progress=True))
    tracker: Any = MISSING
    maniskill: Any = MISSING
    libero: Any = MISSING

    def __post_init__(self) -> None:
        at_least(self, 1, "training_workers")
        for name in self.students:  # a typo costs a line now, not the stages before it
            if name not in registry.names():
                error = unknown_name("method", name, registry.names())
                raise ConfigValueError("students", f"names an {error}")


ConfigStore.instance().store(name=f"{CONFIG_NAME}_schema", node=PipelineCommandConfig)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    return run_pipeline(cfg, run_dir)


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
