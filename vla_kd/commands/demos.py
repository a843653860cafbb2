"""``vla-kd demos``: generate successful demonstrations into a LeRobot v3 dataset."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from vla_kd.cli_support import hydra_command
from vla_kd.config_checks import ConfigValueError, at_least, one_of
from vla_kd.data.demos import generate_maniskill_demos
from vla_kd.data.libero_demos import generate_libero_demos
from vla_kd.envs import check_task
from vla_kd.errors import UserError
from vla_kd.parallel import ENGINES

CONFIG_NAME = "demos"


@dataclass
class DemosCommandConfig:
    """``configs/demos.yaml``: motion-planning (ManiSkill) or scripted-expert (LIBERO)
    demonstrations recorded through the contract into a LeRobot v3 dataset."""

    env: str = "maniskill/PushCube-v1"
    n: int = 50  # attempts, episode seeds 0..n-1 (keep evaluation seeds elsewhere)
    image_size: int = 128
    wrist_camera: bool = False  # LIBERO: also record the eye-in-hand camera (observation.images.wrist_rgb)
    #: ManiSkill: also record the fingers' contact forces (observation.tactile, vla_kd.envs.tactile)
    tactile: bool = False
    #: ManiSkill: [low, high] scales each episode's closing gripper commands by one factor drawn
    #: from it, so demonstrations hold objects with different forces (vla_kd.data.demos.vary_grip;
    #: 1.0 is the planner's own grip); null: the planner's grip
    grip_range: list[float] | None = None
    output: str = "${hydra:runtime.output_dir}/dataset"
    overwrite: bool = False
    workers: int = 2  # processes for planning, conversion and recording (one per core)
    #: local: worker processes here; ray: the recording's episode blocks as Ray tasks (ManiSkill;
    #: its planner and converter stay local)
    engine: str = "local"
    #: host:port of a running Ray cluster (ray start --head); null: RAY_ADDRESS, else a local one
    ray_address: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        at_least(self, 1, "n", "workers")
        one_of(self, "engine", ENGINES)
        at_least(self, 8, "image_size")
        if self.grip_range is not None and not (
            len(self.grip_range) == 2 and 0 < self.grip_range[0] <= self.grip_range[1] <= 1
        ):
            raise ConfigValueError("grip_range", f"must be [low, high] with 0 < low <= high <= 1, "
                                   f"got {list(self.grip_range)}")


ConfigStore.instance().store(name=f"{CONFIG_NAME}_schema", node=DemosCommandConfig)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    task = check_task(cfg.env)
    options = dict(image_size=int(cfg.image_size), overwrite=bool(cfg.overwrite),
                   progress=bool(cfg.progress), workers=int(cfg.workers))
    if task.backend == "libero":
        if cfg.grip_range is not None:
            raise UserError("grip_range varies ManiSkill's planned grasps; LIBERO's expert is not varied")
        if cfg.tactile:
            raise UserError("tactile=true records ManiSkill's contact forces; LIBERO's are not wrapped yet")
        if cfg.engine != "local":
            raise UserError("engine=ray records ManiSkill demonstrations; LIBERO's run with engine=local")
        report = generate_libero_demos(str(task), int(cfg.n), cfg.output,
                                       wrist_camera=bool(cfg.wrist_camera), **options)
    else:
        if cfg.wrist_camera:
            raise UserError("wrist_camera=true is for LIBERO tasks; ManiSkill's tasks here have one camera")
        options["tactile"] = bool(cfg.tactile)
        options["grip_range"] = tuple(cfg.grip_range) if cfg.grip_range is not None else None
        report = generate_maniskill_demos(task.name, int(cfg.n), cfg.output, engine=str(cfg.engine),
                                          ray_address=cfg.ray_address, **options)
    doc = {**asdict(report), "planner_success_rate": report.planner_success_rate}
    print(json.dumps(doc, indent=2))
    return doc


main = hydra_command(CONFIG_NAME, run)

if __name__ == "__main__":
    main()
