"""The scale-out benchmark's table: each job's rate against its one-process row."""

from __future__ import annotations

from vla_kd.benchmarks.scale_out import Throughput, markdown


def test_rates_compare_against_the_one_process_row_of_the_same_job():
    rows = [
        Throughput("evaluation", "local workers", 1, 10, 20.0),
        Throughput("evaluation", "local workers", 2, 10, 11.0),
        Throughput("training", "one process", 1, 1000, 10.0),
        Throughput("training", "torchrun", 2, 2000, 12.5),
    ]
    table = markdown(rows).splitlines()
    assert table[3].endswith("| 0.91 | 1.82x |")  # 10 episodes in 11 s against 10 in 20 s
    assert table[5].endswith("| 160.00 | 1.60x |")
