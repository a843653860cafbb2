"""Thin entry point: `python scripts/pipeline.py key=value ...` is `vla-kd pipeline key=value ...`."""
import sys

from vla_kd.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["pipeline", *sys.argv[1:]]))
