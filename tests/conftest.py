"""Shared fixtures; simulator tests skip cleanly when their optional extra is not installed."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HAS_MANISKILL = importlib.util.find_spec("mani_skill") is not None
HAS_LIBERO = importlib.util.find_spec("libero") is not None

requires_maniskill = pytest.mark.skipif(not HAS_MANISKILL, reason="extra 'maniskill' not installed")
requires_libero = pytest.mark.skipif(not HAS_LIBERO, reason="extra 'libero' not installed")


def load_script(name: str):
    """``scripts/<name>.py`` imported as a module, so tests can call its functions."""
    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The package the tests import; the CLI subprocesses must run the same code.
PACKAGE_ROOT = str(Path(importlib.util.find_spec("vla_kd").origin).parent.parent)
_CLI_WORKDIR = tempfile.TemporaryDirectory(prefix="vla_kd_cli_")


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``vla-kd`` in a subprocess with no stdin (an input() prompt would fail, not hang).

    It runs in a scratch folder, so a command without ``hydra.run.dir`` (the error tests) writes
    its default ``runs/...`` folder there, not into the checkout."""
    pythonpath = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONPATH=pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "vla_kd.cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=env,
        cwd=_CLI_WORKDIR.name,
    )


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The stderr lines that are not simulator noise."""
    lines = proc.stderr.splitlines()
    return [line for line in lines if line.strip() and not line.startswith("WARNING: Location")]
