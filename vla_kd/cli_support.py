"""Shared pieces of the command-line layer: config location, the typed schemas every config node
is checked against, override checks and one-line errors."""
from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from vla_kd.config_checks import ConfigValueError
from vla_kd.envs.from_config import LiberoConfig, ManiSkillConfig
from vla_kd.envs.suites import Suite
from vla_kd.errors import UserError, nearest, unknown_name
from vla_kd.methods import registry
from vla_kd.policies.model_configs import MODEL_SCHEMAS
from vla_kd.tracking import TrackerConfig
from vla_kd.trainer import TrainerConfig

#: configs/ ships inside the package as vla_kd.configs (see pyproject.toml).
CONFIG_MODULE = "vla_kd.configs"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


SCHEMA_SUFFIX = "_schema"
#: config group -> its schema, stored as ``<group>/<group>_schema`` (model: one per type)
GROUP_SCHEMAS = {
    "tracker": TrackerConfig,
    "trainer": TrainerConfig,
    "maniskill": ManiSkillConfig,
    "libero": LiberoConfig,
    "suite": Suite,
}


#: the commands whose configs compose the ``method`` group
METHOD_COMMANDS = ("train", "pipeline")


def register_schemas(config_name: str) -> None:
    """Store the config schemas ``config_name``'s composition reads in Hydra's ConfigStore
    (idempotent): the groups' above, the models', and for train and pipeline every method's (the
    method registry stores them as it finds the methods). Each command module stores its own
    config's schema as ``<command>_schema`` when imported."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"{group}{SCHEMA_SUFFIX}", node=schema)
    for model_type, schema in MODEL_SCHEMAS.items():
        store.store(group="model", name=f"{model_type}{SCHEMA_SUFFIX}", node=schema)
    if config_name in METHOD_COMMANDS:
        registry.load_all()


def validate_config(cfg: DictConfig, prefix: str = "") -> None:
    """Check every typed node of ``cfg`` for range (its dataclass's ``__post_init__``), deepest
    first so an error names the exact key; a one-line UserError for the first bad value."""
    for key, value in cfg.items_ex(resolve=False):
        if isinstance(value, DictConfig):
            validate_config(value, f"{prefix}{key}.")
    schema = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(schema):
        return
    try:
        OmegaConf.to_object(cfg)
    except ConfigValueError as err:
        raise UserError(f"{prefix}{err.key} {err.problem}") from None
    except MissingMandatoryValue as err:
        raise UserError(f"missing required value: {prefix}{err.key}") from None
    except (ValueError, OmegaConfBaseException) as err:
        raise UserError(f"{prefix.rstrip('.') or 'config'}: {str(err).strip().splitlines()[0]}") from None


def composition_error(err: Exception) -> UserError:
    """Hydra's or OmegaConf's multi-line composition error as one line, naming the key when an
    error in its chain does (``trainer.steps: Value 'abc' of type 'str' could not be converted
    to Integer``)."""
    cause: BaseException | None = err
    while cause is not None:
        key = getattr(cause, "full_key", None)
        if key:
            return UserError(f"{key}: {_first_line(cause)}")
        cause = cause.__cause__ or cause.__context__
    return UserError(_first_line(err))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
    """A Hydra entry point that checks the composed config's values, then calls
    ``run(cfg, run_dir)``, with one-line user errors."""

    @hydra.main(config_path=CONFIG_PATH, config_name=config_name, version_base="1.3")
    @user_errors_exit
    def task(cfg: DictConfig) -> None:
        validate_config(cfg)
        run(cfg, Path(HydraConfig.get().runtime.output_dir))

    def main() -> None:
        register_schemas(config_name)
        task()

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
    register_schemas(config_name)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise UserError(f"cannot parse overrides: {str(err).splitlines()[0]}") from None

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        sweep = any(o.is_sweep_override() for o in parsed)
        try:  # the usual case first: everything composes, nothing to explain
            composed = None if sweep else compose(config_name, overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException):
            composed = None
        if composed is None:
            composed = _compose_explaining(config_name, parsed)
        without_hydra(composed)
        missing = _missing_keys(composed)
        if missing:
            raise UserError(
                f"missing required value{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
                f"(e.g. vla-kd {config_name} {missing[0]}=...)"
            )
        if not sweep:  # a sweep's jobs are checked as they run
            validate_config(composed)
    GlobalHydra.instance().clear()


def _compose_explaining(config_name: str, parsed: list) -> DictConfig:
    """Compose the config with the first value of each override, one check at a time, so that
    what fails is named in one line with the nearest valid name (Hydra's own messages are
    multi-line and stop short of a suggestion)."""
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
        options = [o for o in loader.get_group_options(key) if not o.endswith(SCHEMA_SUFFIX)]
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
        raise composition_error(err) from None
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or is_group(key):
            continue
        if not override.is_add() and not override.is_delete() and key not in keys:
            hint = nearest(key, keys)
            suggestion = f"; did you mean '{hint}'?" if hint else ""
            raise UserError(f"unknown config key '{key}'{suggestion} (use +{key}=... to add a new key)")
        if not override.is_delete():
            values = _override_values(override)
            prefix = "+" if override.is_add() else ""
            single.append(f"{prefix}{key}={values[0]}" if values else override.input_line)
    try:
        return compose(config_name=config_name, overrides=single, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise composition_error(err) from None


def without_hydra(composed: DictConfig) -> None:
    """Take Hydra's own node out of a config composed with it, keeping it where ``${hydra:...}``
    interpolations read it, so the values can be resolved and checked before the run starts
    (the run folder shows as ``<run dir>``)."""
    with open_dict(composed):
        composed.hydra.runtime.output_dir = "<run dir>"
        composed.hydra.job.num = 0
        HydraConfig.instance().set_config(composed)
        del composed["hydra"]


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

