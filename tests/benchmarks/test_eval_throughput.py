"""The evaluator-throughput benchmark: raw ManiSkill and the evaluator step the same episodes,
and the table compares each row with raw ManiSkill and with the one-worker evaluator."""

from __future__ import annotations

import json

import pytest

from vla_kd.benchmarks.eval_throughput import Rate, main, markdown


def test_table_compares_with_raw_maniskill_and_one_worker():
    rows = [
        Rate("raw ManiSkill", "state", 1, 4, 400, 2.0),
        Rate("vla-kd eval", "state", 1, 4, 400, 2.5),
        Rate("vla-kd eval", "state", 2, 4, 400, 1.25),
    ]
    table = markdown(rows).splitlines()
    assert table[2].endswith("| 200 | 1.00x | 2.00 |  |")
    assert table[3].endswith("| 160 | 0.80x | 1.60 | 1.00x |")
    assert table[4].endswith("| 320 | 1.60x | 3.20 | 2.00x |")


def test_a_short_run_steps_the_same_episodes_on_every_side(tmp_path):
    pytest.importorskip("mani_skill")
    main(["--obs-modes", "state", "--episodes", "2", "--steps", "5", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    expected = [("raw ManiSkill", 1), ("vla-kd eval", 1), ("vla-kd eval", 2)]
    assert [(r["loop"], r["workers"]) for r in rows] == expected
    assert {r["steps"] for r in rows} == {10} and all(r["seconds"] > 0 for r in rows)
    assert "env steps/s" in (tmp_path / "results.md").read_text()
