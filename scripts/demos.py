"""Thin entry point: `python scripts/demos.py key=value ...` is `vla-kd demos key=value ...`."""
import sys

from vla_kd.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["demos", *sys.argv[1:]]))
