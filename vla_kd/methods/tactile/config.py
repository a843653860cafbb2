"""``method=tactile``: HapticVLA's tactile distillation in three stages of one method."""
from __future__ import annotations

from dataclasses import dataclass

from vla_kd.config_checks import at_least, one_of, positive
from vla_kd.methods.tactile.rewards import RewardSettings

STAGES = ("teacher", "student", "baseline")


@dataclass
class TactileConfig:
    """``stage=teacher``: `vla-kd train method=tactile method.stage=teacher
    model=tactile_flow_expert dataset=<demos recorded with tactile=true>` trains the teacher with
    reward-weighted flow matching for ``trainer.steps``.

    ``stage=student``: `... method.stage=student teacher=<that teacher> model=token_vla
    dataset=<the same demos>` builds a TokenVLA with one tactile token; stage 1 trains it to
    predict the teacher's tactile token from camera and proprio (``stage1_steps``), stage 2 trains
    its actions on the demonstrations with the token in the prompt (``trainer.steps``, plus
    ``token_weight`` times the token loss).

    ``stage=baseline``: the same TokenVLA without the token, trained on the demonstrations'
    actions for ``stage1_steps + trainer.steps`` (the student's step count), weighted as the
    student's stage 2 is."""

    name: str = "tactile"
    stage: str = "student"  # teacher | student | baseline
    # reward-weighted flow matching (vla_kd.methods.tactile.rewards has the formula)
    #: N of grasp force before the excess-force penalty starts (PickCube's cube is carried at 8 N;
    #: ManiSkill's planner grips it with about 27 N)
    force_limit: float = 15.0
    #: N of grasp-force change in one control step before the spike penalty starts
    spike_limit: float = 10.0
    contact_force: float = 0.5  # N: a finger touching the object (ManiSkill's grasp test's own figure)
    slip_weight: float = 1.0  # weight of touching without a grasp
    temperature: float = 0.5  # w = exp(r / temperature): lower is pickier
    min_weight: float = 0.05  # the floor that keeps every demonstration in the objective
    # the student
    stage1_steps: int = 1000  # the tactile token predicted from camera + proprio (L2 to the teacher's)
    stage1_lr: float = 1.0e-3
    token_weight: float = 1.0  # stage 2: the token loss beside the actions' cross-entropy
    #: the student's stage 2 and the baseline weigh each demonstration frame by the teacher's
    #: tactile reward weight (false: plain behaviour cloning of the demonstrations)
    weighted_actions: bool = True

    def __post_init__(self) -> None:
        one_of(self, "stage", STAGES)
        positive(self, "force_limit", "spike_limit", "temperature", "stage1_lr")
        at_least(self, 0.0, "contact_force", "slip_weight", "min_weight", "token_weight")
        at_least(self, 0, "stage1_steps")

    @property
    def rewards(self) -> RewardSettings:
        return RewardSettings(self.force_limit, self.spike_limit, self.contact_force, self.slip_weight,
                              self.temperature, self.min_weight)
