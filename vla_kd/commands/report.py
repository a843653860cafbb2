"""``vla-kd report <folder>``: the tables and plots of an experiment, from the run folders its
sweeps wrote (vla_kd.reports): the RL experiment (runs named ``rpd_seed<N>``, ...), action-expert
alignment against its baselines (``method=align`` runs) or tactile distillation against its
baseline (``method=tactile`` runs)."""
from __future__ import annotations

import sys
from pathlib import Path

from vla_kd.errors import UserError
from vla_kd.methods.runner import SUMMARY_FILE
from vla_kd.reports import align, rl, tactile

USAGE = "usage: vla-kd report <folder of an experiment's runs>"


def kind_of(folder: Path) -> str:
    """Which experiment ``folder`` holds: ``rl``, ``align`` or ``tactile``."""
    if not folder.is_dir():
        raise UserError(f"report: '{folder}' is not a folder")
    if rl.runs_in(folder):
        return "rl"
    if align.align_runs(folder):
        return "align"
    if tactile.tactile_runs(folder):
        return "tactile"
    raise UserError(f"report: no finished experiment runs (folders with {SUMMARY_FILE}) in '{folder}'")


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if args[:1] not in (["-h"], ["--help"]) else sys.stdout)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    folder = Path(args[0].removeprefix("dir="))
    try:
        table = {"rl": rl, "align": align, "tactile": tactile}[kind_of(folder)].write(folder)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    print(f"results: {folder / 'results.md'}")
    return 0
