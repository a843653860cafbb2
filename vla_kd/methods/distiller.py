"""A whole training method, as ``vla-kd train method=<name>`` and the pipeline's ``students=[...]``
run it: its config dataclass (the schema of ``configs/method/<name>.yaml``), what it needs (a
teacher, demonstrations, a simulator task) and ``fit(ctx) -> TrainResult``. Everything else
(building the context, saving the student, ``train_summary.json``, the held-out evaluation,
closing the tracker) is shared, in :mod:`vla_kd.methods.runner`.
"""
from __future__ import annotations

import abc
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.errors import UserError
from vla_kd.evaluator import EvalConfig
from vla_kd.policies.loading import load_policy
from vla_kd.policies.pretrained import PretrainedPolicy
from vla_kd.tracking import Tracker
from vla_kd.trainer import TrainerConfig


@dataclass
class RunContext:
    """What one training run of a method reads and where it writes.

    ``config`` is the method's own config (its dataclass); ``settings`` the whole composed config
    (the simulator nodes, tracked with the run). Inputs are given by name (folders, a task) and
    loaded through :meth:`load_teacher` / :meth:`load_dataset`, whose errors name the method."""

    method: str
    config: Any
    trainer: TrainerConfig
    settings: DictConfig
    eval: EvalConfig
    run_dir: Path
    output: Path
    tracker: Tracker
    teacher: str | None = None  # a saved policy folder (RPD also takes `scripted`)
    expert: str | None = None  # align: the action expert whose decoder the student reuses
    dataset: str | None = None  # a LeRobot v3 dataset folder (demonstrations)
    env: str | None = None  # on-policy methods: the task they train on
    student: str | None = None  # opd: a saved student folder to start from (else ``model`` builds one)
    model: Any = None  # bc: the model node (policies.factory)
    job: str = "train"

    def load_teacher(
        self, expected_type: str | tuple[str, ...] | None = None, role: str = "teacher"
    ) -> PretrainedPolicy:
        """The saved policy of ``role`` (``teacher`` or ``expert``), of ``expected_type`` (or one of them)."""
        return load_policy(getattr(self, role), expected_type, role, f"method={self.method}")

    def load_dataset(self, action_horizon: int = 1, what: str = "demonstrations") -> LeRobotDataset:
        """The run's dataset, its items carrying ``action_horizon``-action chunks."""
        if not self.dataset:
            raise UserError(f"method={self.method} needs dataset=<{what}>")
        return LeRobotDataset(self.dataset, action_horizon=action_horizon)


@dataclass
class TrainResult:
    """What a method's ``fit`` hands back: the trained ``student``, the run's ``summary``
    (``train_summary.json``, before evaluation), the ``samples`` it learnt from (the results
    table's column) and ``saved_with``, metadata saved beside the student's weights."""

    student: PretrainedPolicy
    summary: dict
    samples: int
    saved_with: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationVariant:
    """One way the pipeline evaluates a method's student: a results row ``key`` (``<method>``
    plus the suffix), its ``label`` suffix and whether the student samples its actions."""

    suffix: str = ""
    label: str = ""
    sample_actions: bool = False


class Distiller(abc.ABC):
    """A training method: subclasses set the class attributes and implement :meth:`fit`, and
    register with :func:`vla_kd.methods.registry.register`."""

    name: ClassVar[str]
    #: the schema (and the defaults) of ``configs/method/<name>.yaml``
    config_class: ClassVar[type]
    #: the inputs it reads from the context: any of teacher, expert, dataset, env, model, student
    inputs: ClassVar[tuple[str, ...]]
    #: how the pipeline evaluates its student: one row each
    evaluations: ClassVar[tuple[EvaluationVariant, ...]] = (EvaluationVariant(),)
    #: True where all its training is the shared trainer on a dataset, which
    #: ``trainer.distributed=true`` splits over torchrun's processes (not rollouts or RL)
    data_parallel: ClassVar[bool] = False

    @abc.abstractmethod
    def fit(self, ctx: RunContext) -> TrainResult:
        """Train a student as ``ctx`` says; the shared runner saves and evaluates it."""


def settings_for(target: Callable, config: Any) -> dict:
    """The fields of ``config`` that ``target`` (a loss class, a function) takes as keyword
    arguments of the same name: a method's config reaches its loss without being copied out
    field by field."""
    accepted = inspect.signature(target).parameters
    return {name: getattr(config, name) for name in accepted if hasattr(config, name)}
