"""The labelled states of every OPD round so far, as one LeRobot v3 dataset.

Each frame is a state where the student decided (camera frames, proprio, instruction) and its
label is the teacher's whole chunk for it (``action.chunk``; ``action`` is the chunk's first
action), since consecutive frames are a chunk apart and the next frames' actions are not the
chunk. The dataset is rewritten after each round (staged, then renamed into place), so it
grows round by round and is readable by LeRobot and by the shared trainer as any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.data.lerobot_writer import LeRobotWriter
from vla_kd.methods.opd.rollouts import EpisodeDecisions


class Aggregate:
    """Labelled decision states of all rounds, per episode, with the round each came from."""

    def __init__(self, folder: str | Path, fps: int = 20) -> None:
        self.folder = Path(folder)
        self.fps = fps
        self.episodes: list[EpisodeDecisions] = []
        self.rounds: list[int] = []

    def add(self, episodes: list[EpisodeDecisions], round_index: int) -> None:
        """Append a labelled round (every label filled in)."""
        if any(label is None for e in episodes for label in e.labels):
            raise ValueError("every decision must be labelled before it joins the aggregate")
        kept = [e for e in episodes if len(e)]
        self.episodes += kept
        self.rounds += [round_index] * len(kept)

    @property
    def states(self) -> int:
        return sum(len(e) for e in self.episodes)

    def write(self, horizon: int) -> Path:
        """The aggregate as a LeRobot dataset at ``folder`` (replacing the previous round's)."""
        if not self.episodes:
            raise ValueError("the aggregate is empty")
        first = self.episodes[0]
        # the poses (training targets only) where every decision has them, as the demos do
        poses = all(len(e.env_states) == len(e) for e in self.episodes)
        cameras = {name: frames[0].shape[:2] for name, frames in first.images.items()}
        writer = LeRobotWriter(
            self.folder,
            fps=self.fps,
            robot_type="panda",
            cameras=cameras,
            state_dim=len(first.states[0]),
            overwrite=True,
            chunk_horizon=horizon,
            env_state_dim=len(first.env_states[0]) if poses else None,
        )
        for episode in self.episodes:
            chunks = np.stack(episode.labels)[:, :horizon]
            writer.add_episode(
                episode.instruction,
                states=np.stack(episode.states),
                actions=chunks[:, 0],
                images={name: np.stack(frames) for name, frames in episode.images.items()},
                action_chunks=chunks,
                env_states=np.stack(episode.env_states) if poses else None,
            )
        return writer.finalize()

    def dataset(self, horizon: int) -> LeRobotDataset:
        """The written aggregate, read back with ``horizon``-action chunks."""
        return LeRobotDataset(self.folder, action_horizon=horizon)
