"""Read LeRobot v3.0 datasets (ours or LeRobot's) as a torch Dataset with action chunks."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from vla_kd.data.lerobot_writer import ACTION, ACTION_CHUNK, ENV_STATE, STATE, TACTILE
from vla_kd.errors import UserError


def _stack(column) -> np.ndarray:
    """A parquet list column -> (rows, dim) float32."""
    return np.asarray(column.to_pylist(), dtype=np.float32)


class LeRobotDataset(torch.utils.data.Dataset):
    """Frames of a LeRobot v3.0 dataset; item ``i`` carries the chunk of the next ``action_horizon``
    actions of its episode (padded with the last action, ``action_is_pad`` marking the padding).

    Camera frames are decoded once into memory as uint8 (a 100-episode, 128 px dataset is a few
    hundred MB), which keeps training loops free of video decoding.
    """

    def __init__(self, root: str | Path, action_horizon: int = 1, load_images: bool = True) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise UserError(f"'{self.root}' is not a LeRobot dataset: meta/info.json is missing")
        try:
            self.info = json.loads(info_path.read_text())
            self.stats = json.loads((self.root / "meta" / "stats.json").read_text())
        except (json.JSONDecodeError, FileNotFoundError) as err:
            raise UserError(f"dataset metadata in '{self.root}/meta' is corrupt or missing: {err}") from None
        if not str(self.info.get("codebase_version", "")).startswith("v3"):
            raise UserError(f"'{self.root}' is LeRobot {self.info.get('codebase_version')}, not v3.x")
        self.fps = int(self.info["fps"])
        self.action_horizon = action_horizon
        self.episodes = self._read_table(sorted((self.root / "meta" / "episodes").rglob("*.parquet")))
        frames = self._read_table(self._data_files())
        self.states = _stack(frames[STATE])
        self.actions = _stack(frames[ACTION])
        self.env_states = _stack(frames[ENV_STATE]) if ENV_STATE in frames.column_names else None
        #: (N, k) finger contact forces (vla_kd.envs.tactile), where the demos recorded touch
        self.tactile = _stack(frames[TACTILE]) if TACTILE in frames.column_names else None
        #: (N, H, 7) labelled chunks, where each frame carries its own (an on-policy aggregate)
        self.chunk_labels = None
        if ACTION_CHUNK in frames.column_names:
            flat = _stack(frames[ACTION_CHUNK])
            self.chunk_labels = flat.reshape(len(self.actions), -1, self.actions.shape[1])
            if self.chunk_labels.shape[1] < action_horizon:
                raise UserError(f"'{self.root}' labels {self.chunk_labels.shape[1]}-action chunks; "
                                f"{action_horizon} were asked for")
        self.episode_index = frames["episode_index"].to_numpy()
        self.frame_index = frames["frame_index"].to_numpy()
        self.task_index = frames["task_index"].to_numpy()
        tasks = pd.read_parquet(self.root / "meta" / "tasks.parquet")
        self.tasks = {int(i): str(t) for t, i in zip(tasks.index, tasks["task_index"], strict=True)}
        # Episode bounds per frame, for chunking without crossing into the next episode.
        ends = dict(
            zip(
                self.episodes["episode_index"].to_pylist(),
                self.episodes["dataset_to_index"].to_pylist(),
                strict=True,
            )
        )
        self._episode_end = np.array([ends[e] for e in self.episode_index])
        self.camera_keys = [k for k, f in self.info["features"].items() if f["dtype"] == "video"]
        self.images = {k: self._decode_camera(k) for k in self.camera_keys} if load_images else {}

    def _read_table(self, files: list[Path]):
        if not files:
            raise UserError(f"dataset '{self.root}' has no parquet files where its metadata says")
        return pa.concat_tables([pq.read_table(f) for f in files])

    def _data_files(self) -> list[Path]:
        pairs = sorted(
            set(
                zip(
                    self.episodes["data/chunk_index"].to_pylist(),
                    self.episodes["data/file_index"].to_pylist(),
                    strict=True,
                )
            )
        )
        return [self.root / self.info["data_path"].format(chunk_index=c, file_index=f) for c, f in pairs]

    def _decode_camera(self, key: str) -> np.ndarray:
        """All frames of one camera in dataset order, (total_frames, H, W, 3) uint8."""
        out = np.empty((len(self.states), *self.info["features"][key]["shape"]), dtype=np.uint8)
        decoded: dict[Path, np.ndarray] = {}
        rows = self.episodes.to_pylist()
        for row in rows:
            path = self.root / self.info["video_path"].format(
                video_key=key,
                chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"],
            )
            if path not in decoded:
                if not path.is_file():
                    raise UserError(f"video '{path}' named by the dataset metadata is missing")
                with imageio.get_reader(path, format="ffmpeg") as reader:
                    # iter_data, not list(reader): the reader's length hint can be infinite.
                    decoded[path] = np.stack([frame for frame in reader.iter_data()])
            first = round(row[f"videos/{key}/from_timestamp"] * self.fps)
            start, stop = row["dataset_from_index"], row["dataset_to_index"]
            clip = decoded[path][first : first + (stop - start)]
            if len(clip) != stop - start:
                raise UserError(f"video '{path}' is shorter than episode {row['episode_index']} needs")
            out[start:stop] = clip
        return out

    def __len__(self) -> int:
        return len(self.states)

    def action_chunk(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Actions ``index .. index+H-1`` of the frame's episode and the padding mask (or the
        frame's own labelled chunk, where the dataset has them)."""
        if self.chunk_labels is not None:
            return self.chunk_labels[index, : self.action_horizon], np.zeros(self.action_horizon, bool)
        stop = min(index + self.action_horizon, int(self._episode_end[index]))
        chunk = self.actions[index:stop]
        pad = self.action_horizon - len(chunk)
        is_pad = np.zeros(self.action_horizon, bool)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            is_pad[-pad:] = True
        return chunk, is_pad

    def __getitem__(self, index: int) -> dict:
        chunk, is_pad = self.action_chunk(index)
        item = {
            STATE: torch.from_numpy(self.states[index]),
            ACTION: torch.from_numpy(chunk),
            "action_is_pad": torch.from_numpy(is_pad),
            "episode_index": int(self.episode_index[index]),
            "frame_index": int(self.frame_index[index]),
            "task": self.tasks[int(self.task_index[index])],
        }
        if self.env_states is not None:
            item[ENV_STATE] = torch.from_numpy(self.env_states[index])
        if self.tactile is not None:
            item[TACTILE] = torch.from_numpy(self.tactile[index])
        for key, frames in self.images.items():
            item[key] = torch.from_numpy(frames[index])
        return item

    def cameras(self, names, label: str = "model.cameras") -> tuple[tuple[str, ...], int]:
        """(``names`` (observation keys, e.g. ``rgb``, ``wrist_rgb``) checked against this
        dataset's cameras ``observation.images.<name>``, their one shared image size); errors
        name ``label``, the setting that asked for them."""
        names = tuple(str(n) for n in names)
        available = [k.removeprefix("observation.images.") for k in self.camera_keys]
        missing = [n for n in names if n not in available]
        if not names or missing:
            hint = (" (record LIBERO's wrist camera with `vla-kd demos ... wrist_camera=true`)"
                    if "wrist_rgb" in missing else "")
            raise UserError(f"{label}={list(names)}: the dataset has cameras {available}{hint}")
        sizes = {tuple(self.info["features"][f"observation.images.{n}"]["shape"][:2]) for n in names}
        if len(sizes) > 1:
            raise UserError(f"{label}={list(names)} have different sizes {sorted(sizes)}")
        return names, sizes.pop()[0]

    def feature_stats(self, key: str) -> dict[str, np.ndarray]:
        """min/max/mean/std of a feature as float32 arrays (for normalisation)."""
        if key not in self.stats:
            raise UserError(f"dataset has no stats for '{key}' (has {sorted(self.stats)})")
        return {k: np.asarray(v, np.float32) for k, v in self.stats[key].items() if k != "count"}
