"""Save and load trainable policies as folders: ``config.json`` + ``model.safetensors``.

The same layout as Hugging Face models, so a folder is self-describing: ``config.json`` names
the ``policy_type`` (which class to build) and the constructor arguments; the weights round-trip
exactly. Writes go to a temporary sibling folder that is renamed into place.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vla_kd.envs.base import ACTION_DIM
from vla_kd.errors import UserError
from vla_kd.policies.base import Policy
from vla_kd.policies.registry import policy_class

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def replace_dir_atomically(staged: Path, target: Path) -> None:
    """Move a fully written ``staged`` folder to ``target``; an old ``target`` is kept until then."""
    backup = target.with_name(target.name + ".old")
    shutil.rmtree(backup, ignore_errors=True)
    if target.exists():
        os.replace(target, backup)
    os.replace(staged, target)
    shutil.rmtree(backup, ignore_errors=True)


class PretrainedPolicy(nn.Module, Policy):
    """A torch policy with a dataclass config and exact save/load.

    Subclasses set ``policy_type`` and ``config_class`` and take the config as their only
    constructor argument.
    """

    policy_type: ClassVar[str] = ""
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        nn.Module.__init__(self)
        self.config = config

    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write config and weights (and optional JSON-able ``extra`` metadata) to ``folder``."""
        folder = Path(folder)
        staged = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        config = {"policy_type": self.policy_type, "config": dataclasses.asdict(self.config)}
        if extra:
            config["extra"] = extra
        (staged / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        self.write_weights(staged)
        replace_dir_atomically(staged, folder)
        return folder

    def write_weights(self, folder: Path) -> None:
        """The weights into the (staged) ``folder``: ``model.safetensors``, and each part saved apart
        in its own subfolder."""
        apart = self.parts_saved_apart()
        # contiguous copies: safetensors refuses views and tied storage
        tensors = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()
                   if not _in_parts(k, apart)}
        save_file(tensors, str(folder / WEIGHTS_NAME))
        for name, part in apart.items():
            part.save_pretrained(folder / name)

    def parts_saved_apart(self) -> dict[str, PretrainedPolicy]:
        """Sub-policies saved in their own subfolder of that name, in their own format (e.g. a
        Hugging Face VLM inside a student), not among this policy's weights. None by default."""
        return {}

    @classmethod
    def from_config(cls, config: Any, folder: Path) -> PretrainedPolicy:
        """The (unloaded) policy ``config`` describes; ``folder`` holds any parts saved apart."""
        return cls(config)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PretrainedPolicy:
        """Build the policy a folder describes and load its weights (strictly)."""
        folder = Path(folder)
        config = read_config(folder)
        if not cls.policy_type:  # the base class: the folder's own type loads it, its own way
            return policy_class(config["policy_type"], str(folder / CONFIG_NAME)).from_pretrained(folder)
        if config["policy_type"] != cls.policy_type:
            raise UserError(f"'{folder}' holds a '{config['policy_type']}' policy, not '{cls.policy_type}'")
        target = cls
        try:
            model = target.from_config(target.config_class(**config["config"]), folder)
        except TypeError as err:
            raise UserError(f"'{folder / CONFIG_NAME}' does not fit {target.__name__}: {err}") from None
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise UserError(f"'{folder}' has no {WEIGHTS_NAME}")
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as err:
            raise UserError(f"'{weights}' is corrupt: {err}") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not _in_parts(k, model.parts_saved_apart())]
        if missing or unexpected:
            raise UserError(
                f"'{weights}' does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        model.eval()
        return model


class ChunkedPolicy(PretrainedPolicy):
    """A policy that predicts ``config.horizon`` actions at a time and executes the first
    ``n_action_steps`` of them (the whole chunk by default) open-loop before predicting again
    (action chunking, as in ACT and diffusion policy; LeRobot's ``n_action_steps``)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._queue = None  # (batch, horizon, 7): each env's current chunk
        self._cursor = None  # (batch,): the next action of the chunk to execute, per env
        self.n_action_steps: int | None = None  # None: the whole chunk

    @property
    def actions_per_chunk(self) -> int:
        return min(self.n_action_steps or self.config.horizon, self.config.horizon)

    def reset(self) -> None:
        self._queue, self._cursor = None, None

    def reset_envs(self, indices) -> None:
        """Make the batch elements ``indices`` (whose episodes restarted) predict afresh."""
        if self._cursor is not None:
            self._cursor[np.asarray(indices, dtype=int)] = self.actions_per_chunk

    def rows_to_predict(self, batch: int) -> np.ndarray:
        """Which batch elements the next ``act`` call predicts a new chunk for."""
        if self._queue is None or len(self._queue) != batch:
            return np.arange(batch)
        return np.flatnonzero(self._cursor >= self.actions_per_chunk)

    def act(self, obs: dict):
        batch = len(obs["state"])
        stale = self.rows_to_predict(batch)
        if self._queue is None or len(self._queue) != batch:
            self._queue = np.zeros((batch, self.config.horizon, ACTION_DIM), np.float32)
            self._cursor = np.full(batch, self.actions_per_chunk)
        if len(stale):  # only the envs whose chunk ran out predict (all of them in lockstep runs)
            self._queue[stale] = self.predict_action_chunk(select_rows(obs, stale))
            self._cursor[stale] = 0
        action = self._queue[np.arange(batch), self._cursor]
        self._cursor += 1
        return action.astype("float32")


def _in_parts(key: str, parts: dict) -> bool:
    return any(key.startswith(name + ".") for name in parts)


def select_rows(obs: dict, rows: np.ndarray) -> dict:
    """The batch elements ``rows`` of a contract observation (lists of strings included)."""
    out = {}
    for key, value in obs.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [value[i] for i in rows]
        else:
            out[key] = np.asarray(value)[rows]
    return out


def read_config(folder: Path) -> dict:
    """``config.json`` of a saved policy, with one-line errors for every way it can be wrong."""
    if not folder.is_dir():
        raise UserError(f"policy folder '{folder}' does not exist")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise UserError(f"'{folder}' is not a saved policy: it has no {CONFIG_NAME}")
    try:
        config = json.loads(path.read_text())
        missing = {"policy_type", "config"} - set(config)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"'{path}' is corrupt or has no 'policy_type' ({err})") from None
    return config
