"""Fixtures shared across the tests, built once per session: the config schemas, tiny datasets,
and one PushCube demonstration set recorded with `vla-kd demos`."""
from __future__ import annotations

import functools
import importlib
import re

import pytest
from filelock import FileLock
from helpers import HAS_MANISKILL, random_dataset, run_cli

from vla_kd.cli import COMMANDS
from vla_kd.cli_support import register_schemas

PUSHCUBE_DEMOS = 30  # attempts; 64-pixel frames, the pipeline's size


@pytest.fixture(scope="session", autouse=True)
def config_schemas() -> None:
    """Every schema in Hydra's ConfigStore, as the command line stores them, for tests that
    compose configs themselves."""
    for module, _ in COMMANDS.values():
        importlib.import_module(module)
    register_schemas("train")


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory):
    """``tiny_datasets(**shape)``: a random LeRobot dataset of that shape (see
    ``helpers.random_dataset``), written once per session and shared by every test asking for it."""

    @functools.cache
    def build(**shape):
        name = "_".join(f"{k}{v}" for k, v in sorted(shape.items()))
        name = re.sub(r"[^A-Za-z0-9_.-]", "", name) or "default"  # a folder name Hydra can parse
        return random_dataset(tmp_path_factory.mktemp("datasets") / name, **shape)

    return build


@pytest.fixture(scope="session")
def pushcube_demos(tmp_path_factory, worker_id):
    """30 motion-planning demonstrations of PushCube-v1 at 64 px, recorded by `vla-kd demos`
    once for the whole run: under pytest-xdist the first worker to ask records them into the
    run's shared folder while the other waits on the lock."""
    if not HAS_MANISKILL:
        pytest.skip("extra 'maniskill' not installed")
    shared = tmp_path_factory.getbasetemp()
    root = (shared.parent if worker_id != "master" else shared) / "pushcube_demos"
    with FileLock(f"{root}.lock"):
        if not (root / "dataset" / "meta" / "info.json").is_file():
            proc = run_cli("demos", "env=maniskill/PushCube-v1", f"n={PUSHCUBE_DEMOS}", "image_size=64",
                           f"output={root / 'dataset'}", "progress=false", f"hydra.run.dir={root / 'run'}",
                           timeout=900)
            assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "dataset"
