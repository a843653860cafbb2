"""Process-wide settings the simulators read at import time.

Both simulators are configured through environment variables that must be set before their
modules are imported; doing it in one place keeps every entry point (CLI, tests, vector-env
workers) consistent.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: Where scripts/setup.sh unpacks a Mesa >= 25 lavapipe driver on Debian 12.
BUNDLED_VULKAN_ICD = Path(sys.prefix) / "share" / "vla_kd" / "vulkan" / "lvp_icd.json"


def configure_maniskill() -> None:
    """Offline, prompt-free ManiSkill with a software Vulkan driver if one was bundled."""
    if "VK_ICD_FILENAMES" not in os.environ and BUNDLED_VULKAN_ICD.is_file():
        os.environ["VK_ICD_FILENAMES"] = str(BUNDLED_VULKAN_ICD)
    # Never block on an input() prompt asking to download assets.
    os.environ.setdefault("MS_SKIP_ASSET_DOWNLOAD_PROMPT", "1")
    os.environ.setdefault("MS_ASSET_DIR", str(Path.home() / ".maniskill"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def configure_mujoco() -> None:
    """Headless MuJoCo rendering through EGL (Mesa llvmpipe on CPU-only machines)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
