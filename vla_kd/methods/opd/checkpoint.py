"""An OPD run's state after each finished round, so that ``trainer.resume=true`` continues after
the last one: that round's labelled episodes (one file per round, written once) and the run's
progress with the student's weights (replaced atomically after every round)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vla_kd.errors import UserError
from vla_kd.methods.opd.progress import Progress
from vla_kd.methods.opd.rollouts import EpisodeDecisions
from vla_kd.reporting import write_file_atomic

STATE = "state.pt"


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` without ever leaving half a file."""
    write_file_atomic(path, lambda handle: torch.save(obj, handle), binary=True)


class RoundCheckpoint:
    """``<folder>/episodes_<r>.pt`` for each finished round and ``<folder>/state.pt``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def save(self, round_index: int, episodes: list[EpisodeDecisions], progress: Progress, student) -> None:
        """Round ``round_index`` finished: its episodes, then the state that counts it."""
        save_atomic([dataclasses.asdict(e) for e in episodes], self.folder / f"episodes_{round_index}.pt")
        state = {
            "finished_rounds": round_index + 1,
            "progress": vars(progress),
            "student": student.state_dict(),
        }
        save_atomic(state, self.folder / STATE)

    def exists(self) -> bool:
        return (self.folder / STATE).is_file()

    def load(self) -> tuple[int, list[list[EpisodeDecisions]], Progress, dict]:
        """(rounds finished, each round's episodes, the progress, the student's weights)."""
        try:
            state = torch.load(self.folder / STATE, weights_only=False)
            rounds = [
                [
                    EpisodeDecisions(**e)
                    for e in torch.load(self.folder / f"episodes_{r}.pt", weights_only=False)
                ]
                for r in range(state["finished_rounds"])
            ]
        except Exception as error:  # a truncated or foreign file: say which run folder
            raise UserError(
                f"method=opd cannot resume from '{self.folder}': {type(error).__name__}: {error}; "
                "start the run again without trainer.resume=true"
            ) from error
        return state["finished_rounds"], rounds, Progress(**state["progress"]), state["student"]
