"""What the tests share besides fixtures (those are in conftest.py): simulator markers that skip
cleanly when an extra is not installed, the CLI in a subprocess, and builders of tiny models and
datasets."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

HAS_MANISKILL = importlib.util.find_spec("mani_skill") is not None
HAS_LIBERO = importlib.util.find_spec("libero") is not None

requires_maniskill = pytest.mark.skipif(not HAS_MANISKILL, reason="extra 'maniskill' not installed")
requires_libero = pytest.mark.skipif(not HAS_LIBERO, reason="extra 'libero' not installed")


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


def random_dataset(
    root: Path, episodes: int = 3, frames: int = 6, state_dim: int = 5, image_size: int = 64,
    cameras: tuple[str, ...] = ("rgb",), action_scale: float = 0.9, task: str = "push the cube",
    env_state_dim: int = 0, seed: int = 0, robot_type: str = "test", tactile: bool = False,
) -> Path:
    """A LeRobot v3 dataset of random frames: per episode, normal states, uniform actions in
    +-``action_scale``, random images for each of ``cameras`` (and normal privileged states, and
    with ``tactile`` random finger forces of 0-40 N with their changes and a grasp flag)."""
    from vla_kd.data.lerobot_writer import LeRobotWriter
    from vla_kd.envs.tactile import FIELDS

    rng = np.random.default_rng(seed)
    writer = LeRobotWriter(root, fps=20, robot_type=robot_type,
                           cameras={c: (image_size, image_size) for c in cameras},
                           state_dim=state_dim, env_state_dim=env_state_dim or None,
                           tactile_names=list(FIELDS) if tactile else None)
    for _ in range(episodes):
        writer.add_episode(
            task,
            rng.normal(size=(frames, state_dim)).astype(np.float32),
            rng.uniform(-action_scale, action_scale, size=(frames, 7)).astype(np.float32),
            {c: rng.integers(0, 255, size=(frames, image_size, image_size, 3), dtype=np.uint8)
             for c in cameras},
            **({"env_states": rng.normal(size=(frames, env_state_dim)).astype(np.float32)}
               if env_state_dim else {}),
            **({"tactile": random_touch(rng, frames)} if tactile else {}),
        )
    return writer.finalize()


def random_touch(rng: np.random.Generator, frames: int) -> np.ndarray:
    """``(frames, 5)`` tactile vectors: finger forces, their changes, a grasp flag."""
    forces = rng.uniform(0.0, 40.0, size=(frames, 2))
    changes = np.diff(forces, axis=0, prepend=np.zeros((1, 2)))
    grasped = (forces.min(1, keepdims=True) > 0.5).astype(float) * (rng.random((frames, 1)) < 0.7)
    return np.concatenate([forces, changes, grasped], axis=1).astype(np.float32)


def tiny_token_vla(seed: int = 0, sharpen: bool = True, fit_tokenizer: bool = True, **sizes):
    """A TokenVLA small enough to build in milliseconds: 64-pixel images, 5-d state, 2-action
    chunks, a 2-layer trunk of width 64 unless ``sizes`` say otherwise. ``sharpen`` scales the
    head so that, as in a trained model, the decoded tokens depend on the tokens before them
    (a random trunk's argmax barely does)."""
    from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

    config = dict(state_dim=5, horizon=2, image_size=64, hidden=64, layers=2, heads=2, intermediate=128)
    torch.manual_seed(seed)
    model = TokenVLA(TokenVLAConfig(**{**config, **sizes}))
    if sharpen:
        with torch.no_grad():
            model.head.weight.mul_(20.0)
    if fit_tokenizer:
        model.tokenizer.fit(torch.rand(50, 7) * 2 - 1)
    return model.eval()


def tiny_align_parts(dataset, seed: int = 0):
    """(a tiny TokenVLA, a tiny diffusion action expert), normalised on ``dataset``: the two parts
    an AlignedVLA is built from."""
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert

    vlm = tiny_token_vla(seed, sharpen=False, fit_tokenizer=False, hidden=32, intermediate=64)
    vlm.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
    expert = DiffusionActionExpert(ActionExpertConfig(state_dim=5, horizon=2, image_size=64, features=16,
                                                      hidden=32, train_timesteps=20, inference_steps=4))
    expert.set_normalization(dataset.feature_stats("observation.state"), dataset.feature_stats("action"))
    return vlm.eval(), expert.eval()


def load_experiment(name: str):
    """``experiments/<name>.py`` (a probe) imported as a module, so tests can call its functions."""
    path = Path(__file__).parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
