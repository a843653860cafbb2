"""Thin entry point: steps/s of the contract wrappers vs the raw simulators (see the module)."""
from vla_kd.benchmarks.env_overhead import main

if __name__ == "__main__":
    main()
