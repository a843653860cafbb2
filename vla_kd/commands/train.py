"""``vla-kd train method=<name> ...``: train a student with one of the registered methods
(``bc``, ``rpd``, ``ppo``, ``ceed``, ``dysl``, ``align``, ``opd``, ``tactile``), save it,
evaluate it on held-out seeds."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from vla_kd.cli_support import hydra_command
from vla_kd.evaluator import EvalConfig
from vla_kd.methods import runner

CONFIG_NAME = "train"


@dataclass
class TrainCommandConfig:
    """``configs/train.yaml``: the groups it composes, and the run's inputs."""

    method: Any = MISSING  # the method's node: configs/method/<name>.yaml
    trainer: Any = MISSING  # the shared trainer (offline methods)
    model: Any = MISSING  # method=bc: what is trained (configs/model/<type>.yaml)
    tracker: Any = MISSING
    maniskill: Any = MISSING
    libero: Any = MISSING
    dataset: str | None = None  # a LeRobot v3 dataset folder (from `vla-kd demos`): bc, ceed, dysl, align
    env: str | None = None  # rpd, ppo: the ManiSkill task trained on, e.g. maniskill/PushCube-v1
    #: rpd: a saved policy folder or `scripted`; ceed, dysl, align: a token_vla folder
    teacher: str | None = None
    expert: str | None = None  # align: the diffusion action expert folder whose decoder is reused
    student: str | None = None  # opd: a saved student folder to refine (null: a fresh `model`)
    seed: int | None = None  # set: the run's seed everywhere (trainer.seed, and the RL method's seed)
    output: str = "${hydra:runtime.output_dir}/policy"  # where the trained policy is saved
    eval: EvalConfig = field(default_factory=EvalConfig)  # held-out evaluation after training


ConfigStore.instance().store(name=f"{CONFIG_NAME}_schema", node=TrainCommandConfig)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    if cfg.seed is not None:
        with open_dict(cfg):
            cfg.trainer.seed = cfg.seed
            if "seed" in cfg.method:
                cfg.method.seed = cfg.seed
    ctx = runner.make_context(
        cfg, cfg.method, cfg.trainer, run_dir, Path(cfg.output), job="train",
        teacher=cfg.teacher, expert=cfg.expert, dataset=cfg.dataset, env=cfg.env, student=cfg.student,
        model=OmegaConf.to_object(cfg.model),
    )
    summary, _ = runner.train(ctx)
    if summary:  # rank 0's (the other ranks of a data-parallel run write nothing)
        print(json.dumps(summary, indent=2, default=float))
    return summary


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
