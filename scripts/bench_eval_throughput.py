"""Thin entry point: raw ManiSkill env steps/s beside the evaluator's, and 1 vs 2 workers (see the module)."""
from vla_kd.benchmarks.eval_throughput import main

if __name__ == "__main__":
    main()
