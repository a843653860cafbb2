"""Thin entry point: `python scripts/bench.py key=value ...` is `vla-kd bench key=value ...`."""
import sys

from vla_kd.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
