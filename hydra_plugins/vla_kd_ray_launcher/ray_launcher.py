"""``hydra/launcher=ray``: each job of a Hydra sweep runs as one Ray task, on an existing
cluster (``address``) or on a local one started for the sweep.

The suite ships this launcher rather than Hydra's own ``hydra-ray-launcher``: that package pins
``cloudpickle<3``, which cannot be installed beside the LIBERO benchmark and joblib (both
require ``cloudpickle>=3``). It uses only Hydra's public launcher interface (the same calls the
joblib and submitit launchers make) and Ray's task API.

No ``from __future__ import annotations`` here: Hydra imports plugin modules without
registering them in ``sys.modules``, where dataclasses look string annotations up."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class RayLauncherConf:
    """What ``hydra.launcher`` holds for ``hydra/launcher=vla_kd_ray``."""

    _target_: str = "hydra_plugins.vla_kd_ray_launcher.ray_launcher.RayLauncher"
    #: host:port of a running cluster (``ray start --head``); null: RAY_ADDRESS, else a local one
    address: Any = None
    num_cpus: Any = None  # CPUs of a local cluster started for the sweep (null: all of this machine)
    cpus_per_job: float = 1.0  # CPUs Ray reserves for each job (a job's own workers included)


ConfigStore.instance().store(
    group="hydra/launcher", name="vla_kd_ray", node=RayLauncherConf, provider="vla_kd"
)


def _execute_job(
    index: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    """One job, inside a Ray worker: Hydra's globals restored, its sweep config composed, run."""
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{index}"
        sweep_config.hydra.job.num = index
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


class RayLauncher(Launcher):
    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, cpus_per_job: float = 1.0
    ) -> None:
        self.address, self.num_cpus, self.cpus_per_job = address, num_cpus, cpus_per_job
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        from vla_kd.ray_engine import connect

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        connect(self.address, self.num_cpus)
        log.info("Ray is launching %d jobs (sweep dir %s)", len(job_overrides), sweep_dir)
        for index, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + index, " ".join(filter_overrides(overrides)))
        job = ray.remote(num_cpus=self.cpus_per_job, max_retries=0)(_execute_job)
        state = Singleton.get_state()
        futures = [
            job.remote(initial_job_idx + index, list(overrides), self.hydra_context, self.config,
                       self.task_function, state)
            for index, overrides in enumerate(job_overrides)
        ]
        return ray.get(futures)
