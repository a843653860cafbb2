"""The ``vla-kd`` console command: ``vla-kd <command> [hydra overrides...]``."""
from __future__ import annotations

import importlib
import sys

from vla_kd.errors import UserError, unknown_name

#: command -> module with CONFIG_NAME and a Hydra ``main``.
COMMANDS = {
    "eval": ("vla_kd.commands.eval", "evaluate a policy on a suite or task"),
    "demos": ("vla_kd.commands.demos", "generate demonstrations into a LeRobot v3 dataset"),
    "train": ("vla_kd.commands.train", "train a policy on a dataset with the shared trainer"),
    "pipeline": ("vla_kd.commands.pipeline", "demos -> teacher + action expert -> evaluation"),
    "bench": ("vla_kd.commands.bench", "decoder latency and tokens/s, side by side"),
    "deploy": ("vla_kd.commands.deploy", "drive a robot with a saved policy through rosbridge"),
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
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        listing = "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items())
        print(USAGE.format(commands=listing))
        return 0
    command, overrides = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            raise unknown_name("command", command, COMMANDS)
        module = importlib.import_module(COMMANDS[command][0])
        from vla_kd.cli_support import check_overrides

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


def _is_flag_value(arg: str, args: list[str]) -> bool:
    """True for the value that follows a Hydra flag taking one (``--cfg job``)."""
    index = args.index(arg)
    return index > 0 and args[index - 1] in HYDRA_FLAGS_WITH_VALUE


if __name__ == "__main__":
    raise SystemExit(main())
