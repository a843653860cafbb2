"""Shared pieces of the command-line layer: config location, override checks, one-line errors."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from vla_kd.errors import UserError, nearest, unknown_name

#: configs/ ships inside the package as vla_kd.configs (see pyproject.toml).
CONFIG_MODULE = "vla_kd.configs"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def user_errors_exit(func: Callable) -> Callable:
    """Turn a UserError raised inside a Hydra task into one ``error:`` line and exit status 2.

    SystemExit passes through Hydra's own exception reporting, which would print a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def hydra_command(config_name: str, run: Callable) -> Callable[[], None]:
    """A Hydra entry point that calls ``run(cfg, run_dir)``, with one-line user errors."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(config_path=CONFIG_PATH, config_name=config_name, version_base="1.3")
    @user_errors_exit
    def main(cfg: DictConfig) -> None:
        from pathlib import Path

        run(cfg, Path(HydraConfig.get().runtime.output_dir))

    return main


def _all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key, value in cfg.items_ex(resolve=False):
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, DictConfig):
            keys.extend(_all_keys(value, path + "."))
    return keys


def _missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Paths of mandatory ``???`` values, without resolving interpolations (``${hydra:...}``
    only resolves inside a Hydra run)."""
    missing = []
    for key, value in cfg.items_ex(resolve=False):
        if isinstance(value, DictConfig):
            missing.extend(_missing_keys(value, f"{prefix}{key}."))
        elif value == "???":
            missing.append(f"{prefix}{key}")
    return missing


def _override_values(override) -> list[str]:
    """The values an override asks for (all of a sweep's), as strings."""
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [override.get_value_element_as_str()]


def check_overrides(config_name: str, overrides: list[str]) -> None:
    """Reject unknown config keys and group options with a one-line UserError.

    Hydra's own messages are multi-line and stop short of a suggestion; checking here first lets
    the CLI name the nearest valid key or option.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise UserError(f"cannot parse overrides: {str(err).splitlines()[0]}") from None

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        base = compose(config_name=config_name)
        groups = {g for g in config_groups(loader)}
        # A config group, unless this config uses the name for a plain value (eval's
        # `policy=<path>` is a string, not a choice of config file).
        is_group = lambda key: key in groups and not isinstance(  # noqa: E731
            OmegaConf.select(base, key, default=None), str | int | float)
        single: list[str] = []
        for override in parsed:
            key = override.key_or_group
            if key.startswith("hydra") or not is_group(key) or override.is_delete():
                continue  # Hydra validates its own node (launchers, run dirs)
            options = loader.get_group_options(key)
            values = _override_values(override)
            for value in values:
                if value not in options and value != "null":
                    raise unknown_name(key, value, options)
            single.append(f"{'+' if override.is_add() else ''}{key}={values[0]}")
        # Keys are checked against the config with the chosen groups: `model=token_vla
        # model.label_sigma=1` names a key the default model lacks.
        try:
            keys = _all_keys(compose(config_name=config_name, overrides=single))
        except (HydraException, OmegaConfBaseException) as err:
            raise UserError(str(err).strip().splitlines()[0]) from None
        for override in parsed:
            key = override.key_or_group
            if key.startswith("hydra") or is_group(key):
                continue
            if not override.is_add() and not override.is_delete() and key not in keys:
                hint = nearest(key, keys)
                suggestion = f"; did you mean '{hint}'?" if hint else ""
                raise UserError(
                    f"unknown config key '{key}'{suggestion} (use +{key}=... to add a new key)"
                )
            if not override.is_delete():
                values = _override_values(override)
                prefix = "+" if override.is_add() else ""
                single.append(f"{prefix}{key}={values[0]}" if values else override.input_line)
        try:
            composed = compose(config_name=config_name, overrides=single)
        except (HydraException, OmegaConfBaseException) as err:
            raise UserError(str(err).strip().splitlines()[0]) from None
        missing = _missing_keys(composed)
        if missing:
            raise UserError(
                f"missing required value{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
                f"(e.g. vla-kd {config_name} {missing[0]}=...)"
            )
    GlobalHydra.instance().clear()


def config_groups(loader, parent: str = "") -> list[str]:
    """Every config group (nested ones as ``a/b``) except Hydra's own."""
    found = []
    for name in loader.list_groups(parent):
        path = f"{parent}/{name}" if parent else name
        if path.startswith("hydra"):
            continue
        found.append(path)
        found.extend(config_groups(loader, path))
    return found

