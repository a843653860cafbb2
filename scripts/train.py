"""Thin entry point: `python scripts/train.py key=value ...` is `vla-kd train key=value ...`."""
import sys

from vla_kd.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
