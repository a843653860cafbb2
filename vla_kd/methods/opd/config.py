"""``method=opd``: the schema and defaults of ``configs/method/opd.yaml``."""

from __future__ import annotations

from dataclasses import dataclass

from vla_kd.config_checks import ConfigValueError, at_least, fraction, one_of

#: a token student's loss: VLA-OPD's divergences to the teacher's bin distributions along its own
#: sampled tokens, or ``labels`` (cross-entropy on the teacher's decoded chunks, as any student)
TOKEN_OBJECTIVES = ("reverse_kl", "forward_kl", "hard_ce", "labels")


@dataclass
class OPDConfig:
    """``vla-kd train method=opd teacher=<folder> env=maniskill/<Task> [student=<folder>]
    [dataset=<demos>]``: DAgger rounds of (roll the student out, a β-mixture with the teacher's
    actions) -> (the teacher labels every state where the student decided) -> (the labelled
    states join the aggregate) -> (the student trains on the whole aggregate).

    A fresh student is the ``model`` node (chunked_bc by default) built on the first data; a
    saved one (``student=<folder>``) starts from its weights. Without either a starting student
    or demonstrations, round 0 is the teacher's alone (β = 1), as DAgger's first iteration."""

    name: str = "opd"
    rounds: int = 4  # rollout-label-train rounds
    episodes_per_round: int = 20  # student episodes rolled out per round (training seeds)
    #: probability that a decision executes the teacher's chunk instead of the student's in
    #: round r: beta_start * beta_decay ** r (DAgger's β_i = p^i); 0: the student always acts
    beta_start: float = 0.5
    beta_decay: float = 0.5
    max_episode_steps: int = 100
    seed: int = 0  # training episodes use seeds seed, seed + 1, ... (one block per round)
    #: train on dataset=<demos> too (the teacher's demonstrations, in every round's aggregate)
    start_from_demos: bool = True
    #: a fresh student first learns the demonstrations for this many steps (behaviour cloning), so
    #: that round 0 rolls out a policy rather than random weights; 0: round 0 as it is
    demo_steps: int = 1000
    #: with demonstrations: the share of training frames the aggregate makes (it is repeated to
    #: reach it); 0: each frame once, as DAgger aggregates
    aggregate_share: float = 0.0
    steps_per_round: int = 500  # shared-trainer steps on the aggregate after each round
    label_batch: int = 32  # teacher queries per batch when labelling a round
    workers: int = 2  # rollout processes (one per core)
    validation_episodes: int = 20  # the student after each round, on its own seeds; the best round is kept
    validation_seed: int = 50000  # must not overlap eval's held-out seeds (checked) nor the training ones
    #: token students (token_vla, hf_vla) of a token teacher: reverse_kl | forward_kl | hard_ce | labels
    token_objective: str = "reverse_kl"
    sample_temperature: float = 1.0  # the student's token sampling for the token objectives (0: greedy)

    def __post_init__(self) -> None:
        at_least(
            self,
            1,
            "rounds",
            "episodes_per_round",
            "max_episode_steps",
            "label_batch",
            "workers",
            "validation_episodes",
        )
        at_least(self, 0, "seed", "steps_per_round", "demo_steps", "validation_seed")
        fraction(self, "beta_start", "beta_decay")
        fraction(self, "aggregate_share", below_one=True)
        at_least(self, 0.0, "sample_temperature")
        one_of(self, "token_objective", TOKEN_OBJECTIVES)
        training_end = self.seed + self.rounds * self.episodes_per_round
        if (
            self.seed < self.validation_seed + self.validation_episodes
            and self.validation_seed < training_end
        ):
            raise ConfigValueError(
                "validation_seed",
                f"{self.validation_seed}.. overlaps the training seeds {self.seed}..{training_end - 1}",
            )

    def beta(self, round_index: int) -> float:
        """The β of round ``round_index`` (0-based)."""
        return self.beta_start * self.beta_decay**round_index
