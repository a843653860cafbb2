"""Every option of every config group composes, and the eval config has what the evaluator reads."""
from __future__ import annotations

import importlib.util

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from vla_kd.cli_support import CONFIG_MODULE, SCHEMA_SUFFIX, config_groups, validate_config, without_hydra

LAUNCHER_PLUGINS = {
    "local": "hydra_plugins.hydra_joblib_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "ray": "hydra_plugins.vla_kd_ray_launcher",
}


@pytest.fixture()
def loader():
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield GlobalHydra.instance().config_loader()
    GlobalHydra.instance().clear()


COMMAND_CONFIGS = ("eval", "train", "demos", "pipeline")


def composed_and_checked(command: str, overrides: list[str]):
    """``command``'s config with ``overrides``, its values range-checked as the CLI checks them."""
    cfg = compose(config_name=command, overrides=overrides, return_hydra_config=True)
    without_hydra(cfg)
    validate_config(cfg)
    return cfg


def test_every_group_option_composes_in_a_command_that_uses_it(loader):
    groups = config_groups(loader)
    expected = {"suite", "tracker", "maniskill", "libero", "experiment", "trainer", "model", "method"}
    assert expected <= set(groups)
    composed = 0
    for group in groups:
        for option in loader.get_group_options(group):
            if option.endswith(SCHEMA_SUFFIX):  # a schema, named by the options' own YAML
                continue
            users = []
            for command in COMMAND_CONFIGS:
                try:
                    composed_and_checked(command, [f"{group}={option}"])
                    users.append(command)
                except Exception:  # a command that does not use this group
                    continue
            assert users, f"{group}={option} composes in no command config"
            composed += 1
    assert composed >= 14


def test_suites_name_matches_file_and_list_tasks(loader):
    for option in loader.get_group_options("suite"):
        if option.endswith(SCHEMA_SUFFIX):
            continue
        cfg = compose(config_name="eval", overrides=[f"suite={option}"])
        assert cfg.suite.name == option
        assert len(cfg.suite.tasks) >= 1


def test_debug_preset_is_small_and_untracked(loader):
    cfg = compose(config_name="eval", overrides=["experiment=debug"])
    assert cfg.env == "maniskill/PickCube-v1"
    assert cfg.episodes_per_task <= 2 and cfg.max_episode_steps <= 20
    assert cfg.tracker.backend == "none"


def test_tracker_defaults_to_offline_wandb(loader):
    cfg = compose(config_name="eval")
    assert cfg.tracker.backend == "wandb" and cfg.tracker.mode == "offline"


@pytest.mark.parametrize("launcher", sorted(LAUNCHER_PLUGINS))
def test_launcher_configs_compose_when_their_plugin_is_installed(loader, launcher):
    if importlib.util.find_spec(LAUNCHER_PLUGINS[launcher]) is None:
        pytest.skip(f"launcher plugin for '{launcher}' not installed")
    cfg = compose(
        config_name="eval", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True
    )
    assert "_target_" in cfg.hydra.launcher
