"""The scale-out benchmark's table: each row's rate against its engine's one-process row, and
each evaluation row's against the local workers at the same count."""

from __future__ import annotations

from vla_kd.benchmarks.scale_out import Throughput, markdown


def test_rates_compare_against_the_one_process_row_and_the_local_workers():
    rows = [
        Throughput("evaluation", "local workers", 1, 10, 20.0),
        Throughput("evaluation", "local workers", 2, 10, 11.0),
        Throughput("evaluation", "Ray tasks", 1, 10, 22.0),
        Throughput("evaluation", "Ray tasks", 2, 10, 12.1),
        Throughput("training", "one process", 1, 1000, 10.0),
        Throughput("training", "torchrun", 2, 2000, 12.5),
    ]
    table = markdown(rows).splitlines()
    assert table[3].endswith("| 0.91 | 1.82x | 1.00x |")  # 10 episodes in 11 s against 10 in 20 s
    assert table[5].endswith("| 0.83 | 1.82x | 0.91x |")  # Ray against itself, then against local
    assert table[7].endswith("| 160.00 | 1.60x |  |")
