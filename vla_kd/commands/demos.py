"""``vla-kd demos``: generate successful demonstrations into a LeRobot v3 dataset."""
from __future__ import annotations

import json
from dataclasses import asdict

import hydra
from omegaconf import DictConfig

from vla_kd.cli_support import CONFIG_PATH, user_errors_exit
from vla_kd.envs import check_task
from vla_kd.errors import UserError

CONFIG_NAME = "demos"


@hydra.main(config_path=CONFIG_PATH, config_name=CONFIG_NAME, version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    task = check_task(cfg.env)
    if task.backend != "maniskill":
        raise UserError(
            "demonstrations are generated for ManiSkill tasks so far; LIBERO's expert is not built yet"
        )
    from vla_kd.data.demos import generate_maniskill_demos

    report = generate_maniskill_demos(
        task.name, int(cfg.n), cfg.output, image_size=int(cfg.image_size),
        overwrite=bool(cfg.overwrite), progress=bool(cfg.progress),
    )
    print(json.dumps({**asdict(report), "planner_success_rate": report.planner_success_rate}, indent=2))


if __name__ == "__main__":
    main()
