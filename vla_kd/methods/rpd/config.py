"""``method=rpd|ppo``: what an on-policy RL student is trained with (the schema and defaults of
``configs/method/{rpd,ppo,rpd_from_clone,ppo_from_clone}.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from vla_kd.config_checks import at_least, fraction, one_of, positive
from vla_kd.methods.rpd.algorithm import SCHEDULES, TEACHER_LOSSES
from vla_kd.policies.student_observations import OBSERVATIONS


@dataclass
class PPOSettings:
    """stable-baselines3's PPO arguments. RPD's code uses gamma 0.8 dense / 0.99 sparse, GAE 0.9."""

    n_steps: int = 64  # per env per rollout
    batch_size: int = 128
    n_epochs: int = 8
    learning_rate: float = 3.0e-4
    gamma: float = 0.8
    gae_lambda: float = 0.9
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = 0.1

    def __post_init__(self) -> None:
        at_least(self, 1, "n_steps", "n_epochs")
        at_least(self, 2, "batch_size")  # SB3 normalises advantages over the minibatch
        positive(self, "learning_rate", "clip_range", "max_grad_norm", "target_kl")
        fraction(self, "gamma", "gae_lambda")
        at_least(self, 0.0, "ent_coef", "vf_coef")


@dataclass
class WarmStartSettings:
    """Behaviour cloning before RL (RPD or PPO): the teacher acts in the training envs and the
    student's actor mean is fit to its actions (its chunks) by MSE; needs a teacher."""

    episodes: int = 0  # teacher episodes to record (0: no warm start)
    fit_steps: int = 2000  # Adam steps on the actor
    batch_size: int = 256
    learning_rate: float = 1.0e-3

    def __post_init__(self) -> None:
        at_least(self, 0, "episodes", "fit_steps")
        at_least(self, 1, "batch_size")
        positive(self, "learning_rate")


@dataclass
class ValidationSettings:
    """The student (mean action) on its own seeds every ``every`` env steps, from the RL start (a
    warm start's clone counts), and the best-validated weights saved."""

    every: int = 0  # env steps between validations (0: none; the last weights are saved)
    episodes: int = 50
    seed: int = 50000  # must not overlap eval's held-out seeds (checked); demos use 0..n-1
    keep_best: bool = True  # false: validate (logged as val/*) but save the last weights

    def __post_init__(self) -> None:
        at_least(self, 0, "every", "seed")
        at_least(self, 1, "episodes")


@dataclass
class RLConfig:
    """An RL student on a ManiSkill task, pulled toward a teacher (``rpd``) or not (``ppo``).

    RPD's loss is PPO's plus ``teacher_weight * L_teacher`` (vla_kd.methods.rpd.algorithm)."""

    name: str = "rpd"
    student: str = "state"  # state (proprio + object/goal poses, MLP) | rgb (camera + proprio, NatureCNN)
    total_timesteps: int = 100000  # env steps
    num_envs: int = 4  # CPU: subprocess workers; maniskill=gpu uses maniskill.num_envs instead
    reward_mode: str = "normalized_dense"  # sparse | dense | normalized_dense
    max_episode_steps: int = 50
    seed: int = 0
    # The teacher term (rpd): loss = PPO loss + teacher_weight * L_teacher
    #: mse | l1 | bc (-log pi(a_teacher)) | kl (Gaussian KL x clamped ratio); bc's pull grows as
    #: 1/std^2, as fast as PPO's: use it for small stds
    teacher_loss: str = "mse"
    teacher_weight: float = 1.0  # lambda (the cosine schedule's peak)
    teacher_schedule: str = "constant"  # constant | cosine: 0.5 cos(pi t / T) + 0.5 until T, then 0
    anneal_steps: int | None = None  # T for the cosine schedule (env steps)
    teacher_std: float = 0.1  # the teacher's Gaussian width for the kl loss (action units)
    #: chunked teachers: actions of a chunk executed before re-predicting (null: the whole chunk;
    #: 1: label each state with a fresh prediction)
    teacher_action_steps: int | None = None
    #: actions per student decision, executed open-loop (k > 1: the envs execute k-action chunks
    #: and RPD's labels are the teacher's chunks)
    action_chunk: int = 1
    warm_start: WarmStartSettings = field(default_factory=WarmStartSettings)
    #: start from a saved RL student of the same shape (e.g. a BC-only warm start:
    #: total_timesteps=0): its actor and critic weights; the log-std is log_std_init's
    init_policy: str | None = None
    #: env steps whose updates train the critic only (actor and log-std fixed): a student starting
    #: from a clone then meets its first policy-gradient step with a critic fitted to its returns
    critic_warmup_steps: int = 0
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    # The student network
    net_arch: list[int] = field(default_factory=lambda: [256, 256, 256])
    activation: str = "tanh"  # tanh | relu
    cnn_features: int = 256
    log_std_init: float = -0.5
    ppo: PPOSettings = field(default_factory=PPOSettings)
    checkpoint_every: int = 20000  # env steps between atomic checkpoints (SB3 zip, for resume)
    resume: bool = False  # continue from <run dir>/checkpoints/last_sb3.zip
    progress: bool = True

    def __post_init__(self) -> None:
        one_of(self, "name", ("rpd", "ppo"))
        one_of(self, "student", OBSERVATIONS)
        one_of(self, "reward_mode", ("sparse", "dense", "normalized_dense"))
        one_of(self, "teacher_loss", TEACHER_LOSSES)
        one_of(self, "teacher_schedule", SCHEDULES)
        one_of(self, "activation", ("tanh", "relu"))
        at_least(self, 0, "total_timesteps", "seed", "teacher_weight", "critic_warmup_steps")
        at_least(self, 1, "num_envs", "max_episode_steps", "anneal_steps", "teacher_action_steps",
                 "action_chunk", "net_arch", "cnn_features", "checkpoint_every")
        positive(self, "teacher_std")
