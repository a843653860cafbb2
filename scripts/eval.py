"""Thin entry point: `python scripts/eval.py key=value ...` is `vla-kd eval key=value ...`."""
import sys

from vla_kd.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["eval", *sys.argv[1:]]))
