"""``vla-kd demos``: generate successful demonstrations into a LeRobot v3 dataset."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from vla_kd.cli_support import hydra_command
from vla_kd.envs import check_task
from vla_kd.errors import UserError

CONFIG_NAME = "demos"


def run(cfg: DictConfig, run_dir: Path) -> dict:
    task = check_task(cfg.env)
    options = dict(image_size=int(cfg.image_size), overwrite=bool(cfg.overwrite),
                   progress=bool(cfg.progress), workers=int(cfg.workers))
    if task.backend == "libero":
        from vla_kd.data.libero_demos import generate_libero_demos

        report = generate_libero_demos(str(task), int(cfg.n), cfg.output,
                                       wrist_camera=bool(cfg.wrist_camera), **options)
    else:
        if cfg.wrist_camera:
            raise UserError("wrist_camera=true is for LIBERO tasks; ManiSkill's tasks here have one camera")
        from vla_kd.data.demos import generate_maniskill_demos

        report = generate_maniskill_demos(task.name, int(cfg.n), cfg.output, **options)
    doc = {**asdict(report), "planner_success_rate": report.planner_success_rate}
    print(json.dumps(doc, indent=2))
    return doc


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
