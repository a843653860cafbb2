"""The ``vla-kd`` console command: ``vla-kd <command> [hydra overrides...]``."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from vla_kd.cli_support import check_overrides
from vla_kd.errors import UserError, unknown_name

CONFIG_DIR = Path(__file__).parent / "configs"
#: command -> module with CONFIG_NAME and a Hydra ``main``.
COMMANDS = {
    "eval": ("vla_kd.commands.eval", "evaluate a policy on a suite or task"),
    "demos": ("vla_kd.commands.demos", "generate demonstrations into a LeRobot v3 dataset"),
    "train": ("vla_kd.commands.train", "train a student with a method (method=bc|rpd|ppo|ceed|dysl|align)"),
    "pipeline": ("vla_kd.commands.pipeline", "the main job: demos, teacher, expert, students, evaluation"),
    "bench": ("vla_kd.commands.bench", "decoder latency and tokens/s, side by side"),
    "deploy": ("vla_kd.commands.deploy", "drive a robot with a saved policy through rosbridge"),
    "make-vlm": ("vla_kd.commands.make_vlm", "a small Hugging Face VLM (Idefics3/PaliGemma) to fine-tune"),
}
#: commands that take plain arguments rather than Hydra overrides
PLAIN_COMMANDS = {
    "report": ("vla_kd.commands.report", "the tables and plots of an experiment's run folders"),
}

HYDRA_FLAGS_WITH_VALUE = (
    "--cfg", "-c", "--package", "-p", "--info", "--config-name", "-cn",
    "--config-dir", "-cd", "--config-path", "-cp",
)

USAGE = """usage: vla-kd <command> [key=value ...] [-m]

commands:
{commands}

Arguments are Hydra overrides, e.g. `vla-kd eval suite=maniskill_small policy=scripted`.
`vla-kd <command> --cfg job` prints the composed config; `-m` runs a sweep.
`vla-kd report <folder>` takes the folder of an experiment's runs.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        every = {**COMMANDS, **PLAIN_COMMANDS}
        listing = "\n".join(f"  {name:<10} {text}" for name, (_, text) in every.items())
        print(USAGE.format(commands=listing))
        return 0
    command, overrides = argv[0], argv[1:]
    if command in PLAIN_COMMANDS:
        return importlib.import_module(PLAIN_COMMANDS[command][0]).main(overrides)
    try:
        if command not in COMMANDS:
            raise unknown_name("command", command, {**COMMANDS, **PLAIN_COMMANDS})
        module = importlib.import_module(COMMANDS[command][0])

        overrides = expand_model_options(overrides, getattr(module, "MODEL_NODES", ()))
        hydra_flags = [a for a in overrides if a.startswith("-")]
        plain = [a for a in overrides if not a.startswith("-") and not _is_flag_value(a, overrides)]
        if "--help" not in hydra_flags and "-h" not in hydra_flags:
            check_overrides(module.CONFIG_NAME, plain)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.argv = [f"vla-kd {command}", *overrides]
    module.main()
    return 0


def expand_model_options(overrides: list[str], nodes: tuple[str, ...]) -> list[str]:
    """``teacher=hf_vla`` for ``model@teacher=hf_vla``: a node of ``nodes`` given the name of a
    ``model`` option picks that option (its whole config), as ``model=...`` does for train."""
    out = []
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key in nodes and (CONFIG_DIR / "model" / f"{value}.yaml").is_file():
            arg = f"model@{key}={value}"
        out.append(arg)
    return out


def _is_flag_value(arg: str, args: list[str]) -> bool:
    """True for the value that follows a Hydra flag taking one (``--cfg job``)."""
    index = args.index(arg)
    return index > 0 and args[index - 1] in HYDRA_FLAGS_WITH_VALUE


if __name__ == "__main__":
    raise SystemExit(main())
