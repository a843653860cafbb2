"""Write datasets in LeRobot's v3.0 layout, so demonstrations move to and from LeRobot.

```
root/meta/info.json                    schema, fps, path templates
root/meta/stats.json                   per-feature min/max/mean/std/count
root/meta/tasks.parquet                task string (index) -> task_index
root/meta/episodes/chunk-000/file-000.parquet   one row per episode: length, offsets, video spans
root/data/chunk-000/file-000.parquet   one row per frame: state, action, indices, reward, success
root/videos/<camera key>/chunk-000/file-000.mp4  all episodes of a camera, back to back
```
LeRobot itself cannot be installed beside this project's torch, so the layout is written here
with pyarrow, pandas and imageio-ffmpeg. Everything goes to ``root.partial`` first and is renamed
into place by :meth:`LeRobotWriter.finalize`: a crash never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vla_kd.errors import UserError

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STATE, ACTION, ENV_STATE = "observation.state", "action", "observation.environment_state"
#: finger contact forces per frame (vla_kd.envs.tactile): a tactile teacher's input only
TACTILE = "observation.tactile"
#: a whole labelled action chunk per frame (H x 7, flat), for data whose label is not the next H
#: executed actions: a teacher's chunk at a state its student reached (on-policy distillation)
ACTION_CHUNK = "action.chunk"
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def camera_key(name: str) -> str:
    """'rgb' -> 'observation.images.rgb' (LeRobot's naming for camera streams)."""
    return f"observation.images.{name}"


def _vector_stats(values: np.ndarray) -> dict:
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [len(values)],
    }


class _RunningImageStats:
    """Per-channel stats of images scaled to [0, 1], in LeRobot's (3, 1, 1) shape."""

    def __init__(self) -> None:
        self.total = np.zeros(3)
        self.total_sq = np.zeros(3)
        self.low = np.full(3, np.inf)
        self.high = np.full(3, -np.inf)
        self.pixels = 0
        self.frames = 0

    def update(self, frames: np.ndarray) -> None:
        scaled = frames.reshape(-1, 3).astype(np.float64) / 255.0
        self.total += scaled.sum(0)
        self.total_sq += (scaled**2).sum(0)
        self.low = np.minimum(self.low, scaled.min(0))
        self.high = np.maximum(self.high, scaled.max(0))
        self.pixels += len(scaled)
        self.frames += len(frames)

    def as_dict(self) -> dict:
        mean = self.total / self.pixels
        std = np.sqrt(np.maximum(self.total_sq / self.pixels - mean**2, 0.0))
        shape = lambda v: [[[float(x)]] for x in v]  # noqa: E731 - (3,) -> (3, 1, 1)
        return {
            "min": shape(self.low),
            "max": shape(self.high),
            "mean": shape(mean),
            "std": shape(std),
            "count": [self.frames],
        }


class LeRobotWriter:
    """Accumulates episodes and writes one LeRobot v3.0 dataset."""

    def __init__(
        self,
        root: str | Path,
        fps: int,
        robot_type: str,
        cameras: dict[str, tuple[int, int]],
        state_dim: int,
        env_state_dim: int | None = None,
        action_dim: int = 7,
        overwrite: bool = False,
        video_crf: int = 18,
        chunk_horizon: int | None = None,
        tactile_names: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise UserError(f"dataset folder '{self.root}' already exists (pass overwrite to replace it)")
        self.partial = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.fps, self.robot_type, self.cameras = fps, robot_type, dict(cameras)
        self.state_dim, self.env_state_dim, self.action_dim = state_dim, env_state_dim, action_dim
        self.video_crf = video_crf
        self.chunk_horizon = chunk_horizon  # set: every frame carries an ACTION_CHUNK label
        self.tactile_names = tactile_names  # set: every frame carries a TACTILE vector
        self._frames: dict[str, list[np.ndarray]] = {
            k: [] for k in ("state", "action", "env_state", "reward", "success", "chunk", "tactile")
        }
        self._episodes: list[dict] = []
        self._tasks: dict[str, int] = {}
        self._image_stats = {name: _RunningImageStats() for name in self.cameras}
        self._video_writers: dict = {}
        self._video_frames = {name: 0 for name in self.cameras}

    def _video_writer(self, name: str):
        if name not in self._video_writers:

            path = self.partial / VIDEO_PATH.format(video_key=camera_key(name), chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._video_writers[name] = imageio.get_writer(
                path,
                fps=self.fps,
                codec="libx264",
                macro_block_size=1,
                pixelformat="yuv420p",
                ffmpeg_params=["-crf", str(self.video_crf), "-g", "1"],  # all key frames: exact seeks
                ffmpeg_log_level="error",
            )
        return self._video_writers[name]

    def add_episode(
        self,
        task: str,
        states: np.ndarray,
        actions: np.ndarray,
        images: dict[str, np.ndarray],
        env_states: np.ndarray | None = None,
        rewards: np.ndarray | None = None,
        successes: np.ndarray | None = None,
        action_chunks: np.ndarray | None = None,
        tactile: np.ndarray | None = None,
    ) -> int:
        """Append one episode of ``T`` frames; returns its episode index. ``action_chunks``
        ``(T, chunk_horizon, 7)``: each frame's labelled chunk (exactly when the dataset has
        ``chunk_horizon``); ``tactile`` ``(T, len(tactile_names))`` exactly when the dataset has
        ``tactile_names``."""
        length = len(actions)
        if length == 0 or len(states) != length:
            raise ValueError(
                f"episode needs equal, non-zero lengths (states {len(states)}, actions {length})"
            )
        if set(images) != set(self.cameras):
            raise ValueError(f"episode cameras {sorted(images)} != dataset cameras {sorted(self.cameras)}")
        if (env_states is None) != (self.env_state_dim is None):
            raise ValueError("env_states must be given exactly when the dataset has env_state_dim")
        if (tactile is None) != (self.tactile_names is None):
            raise ValueError("tactile must be given exactly when the dataset has tactile_names")
        if tactile is not None and np.shape(tactile) != (length, len(self.tactile_names)):
            raise ValueError(f"tactile {np.shape(tactile)} != ({length}, {len(self.tactile_names)})")
        if (action_chunks is None) != (self.chunk_horizon is None):
            raise ValueError("action_chunks must be given exactly when the dataset has chunk_horizon")
        if action_chunks is not None:
            action_chunks = np.asarray(action_chunks, np.float32)
            if action_chunks.shape != (length, self.chunk_horizon, self.action_dim):
                raise ValueError(f"action_chunks {action_chunks.shape} != "
                                 f"({length}, {self.chunk_horizon}, {self.action_dim})")
        index = len(self._episodes)
        start = sum(e["length"] for e in self._episodes)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        record = {
            "episode_index": index,
            "tasks": [task],
            "length": length,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": start,
            "dataset_to_index": start + length,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
            "task_index": task_index,
        }
        for name, frames in images.items():
            frames = np.asarray(frames, dtype=np.uint8)
            if frames.shape != (length, *self.cameras[name], 3):
                raise ValueError(
                    f"camera '{name}' frames {frames.shape} != ({length}, {self.cameras[name]}, 3)"
                )
            writer = self._video_writer(name)
            for frame in frames:
                writer.append_data(frame)
            first = self._video_frames[name]
            self._video_frames[name] += length
            self._image_stats[name].update(frames)
            key = camera_key(name)
            record.update(
                {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": first / self.fps,
                    f"videos/{key}/to_timestamp": (first + length) / self.fps,
                }
            )
        self._frames["state"].append(np.asarray(states, np.float32))
        self._frames["action"].append(np.asarray(actions, np.float32))
        if env_states is not None:
            self._frames["env_state"].append(np.asarray(env_states, np.float32))
        if action_chunks is not None:
            self._frames["chunk"].append(action_chunks.reshape(length, -1))
        if tactile is not None:
            self._frames["tactile"].append(np.asarray(tactile, np.float32))
        self._frames["reward"].append(
            np.zeros(length, np.float32) if rewards is None else np.asarray(rewards, np.float32)
        )
        self._frames["success"].append(
            np.zeros(length, bool) if successes is None else np.asarray(successes, bool)
        )
        self._episodes.append(record)
        return index

    def _features(self) -> dict:
        features = {
            camera_key(name): {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.fps": self.fps,
                    "video.codec": "h264",
                    "video.pix_fmt": "yuv420p",
                    "video.height": h,
                    "video.width": w,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
            for name, (h, w) in self.cameras.items()
        }
        features[STATE] = {"dtype": "float32", "shape": [self.state_dim], "names": None}
        if self.env_state_dim is not None:
            features[ENV_STATE] = {"dtype": "float32", "shape": [self.env_state_dim], "names": None}
        features[ACTION] = {
            "dtype": "float32",
            "shape": [self.action_dim],
            "names": ACTION_NAMES[: self.action_dim],
        }
        if self.tactile_names is not None:
            features[TACTILE] = {"dtype": "float32", "shape": [len(self.tactile_names)],
                                 "names": list(self.tactile_names)}
        if self.chunk_horizon is not None:
            features[ACTION_CHUNK] = {"dtype": "float32", "shape": [self.chunk_horizon * self.action_dim],
                                      "names": None}
        for name, dtype in (
            ("next.reward", "float32"),
            ("next.success", "bool"),
            ("timestamp", "float32"),
            ("frame_index", "int64"),
            ("episode_index", "int64"),
            ("index", "int64"),
            ("task_index", "int64"),
        ):
            features[name] = {"dtype": dtype, "shape": [1], "names": None}
        return features

    def finalize(self) -> Path:
        """Write tables, metadata and stats, close videos, and move the dataset into place."""
        if not self._episodes:
            raise ValueError("no episodes to write")
        for writer in self._video_writers.values():
            writer.close()
        lengths = [e["length"] for e in self._episodes]
        total = sum(lengths)
        frame_index = np.concatenate([np.arange(n) for n in lengths])
        episode_index = np.repeat(np.arange(len(lengths)), lengths)
        columns = {
            STATE: np.concatenate(self._frames["state"]),
            ACTION: np.concatenate(self._frames["action"]),
        }
        if self.env_state_dim is not None:
            columns[ENV_STATE] = np.concatenate(self._frames["env_state"])
        if self.chunk_horizon is not None:
            columns[ACTION_CHUNK] = np.concatenate(self._frames["chunk"])
        if self.tactile_names is not None:
            columns[TACTILE] = np.concatenate(self._frames["tactile"])
        table = pa.table(
            {
                **{k: pa.array(list(v), type=pa.list_(pa.float32(), v.shape[1])) for k, v in columns.items()},
                "next.reward": np.concatenate(self._frames["reward"]),
                "next.success": np.concatenate(self._frames["success"]),
                "timestamp": (frame_index / self.fps).astype(np.float32),
                "frame_index": frame_index.astype(np.int64),
                "episode_index": episode_index.astype(np.int64),
                "index": np.arange(total, dtype=np.int64),
                "task_index": np.repeat([e["task_index"] for e in self._episodes], lengths).astype(np.int64),
            }
        )
        self._write_parquet(table, DATA_PATH.format(chunk_index=0, file_index=0))
        self._write_parquet(
            pa.Table.from_pylist(self._episodes), EPISODES_PATH.format(chunk_index=0, file_index=0)
        )

        tasks = pd.DataFrame(
            {"task_index": list(self._tasks.values())}, index=pd.Index(list(self._tasks), name="task")
        )
        tasks.to_parquet(self.partial / "meta" / "tasks.parquet")
        stats = {k: _vector_stats(v) for k, v in columns.items()}
        stats.update({camera_key(n): s.as_dict() for n, s in self._image_stats.items()})
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": total,
            "total_tasks": len(self._tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.cameras else None,
            "features": self._features(),
        }
        (self.partial / "meta" / "info.json").write_text(json.dumps(info, indent=2))
        (self.partial / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
        if self.root.exists():
            shutil.rmtree(self.root)
        self.partial.rename(self.root)
        return self.root

    def _write_parquet(self, table: pa.Table, relative: str) -> None:
        path = self.partial / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
