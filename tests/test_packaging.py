"""A non-editable install must still find the Hydra configs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_every_config(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("vla_kd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(
        p.relative_to(ROOT / "vla_kd").as_posix() for p in (ROOT / "vla_kd" / "configs").rglob("*.yaml")
    )
    assert shipped, "no configs found in the source tree"
    for relative in shipped:
        assert f"vla_kd/{relative}" in names, f"{relative} missing from the wheel"
    assert "vla_kd/configs/__init__.py" in names
    # Hydra finds launchers only in the hydra_plugins namespace: the Ray launcher must ship there
    assert "hydra_plugins/vla_kd_ray_launcher/ray_launcher.py" in names
    assert "hydra_plugins/__init__.py" not in names  # a namespace package, shared with Hydra's plugins
