"""The real-size benchmark's parts, run on the CPU at the suite's default size."""
import json

import pytest
import torch

from vla_kd.benchmarks.scale import (
    STATE_DIM,
    build_teacher,
    decoders,
    markdown,
    observation,
    time_student,
    time_teacher,
    with_horizon,
)


def test_every_decoder_returns_the_window_and_a_fixed_point_equals_greedy():
    model = build_teacher("default", horizon=2, device="cpu", dtype=torch.float32)
    rgb, state, instructions = observation(model, batch=3, device="cpu")
    fns = decoders(model, rgb, state, instructions)
    assert set(fns) == {"ar", "jacobi_1", "jacobi_2", "jacobi_4", "dysl_skip"}
    with torch.no_grad():
        tokens = {name: fn() for name, fn in fns.items()}
        from vla_kd.nn.jacobi import jacobi_decode

        fixed = jacobi_decode(model, rgb, state, instructions).tokens
    for got in tokens.values():
        assert got.shape == (3, 14) and got.device.type == "cpu"
    assert torch.equal(tokens["ar"], fixed)
    # a one-pass Jacobi window is exact only in its first token (it comes from the prompt)
    assert torch.equal(tokens["jacobi_1"][:, 0], tokens["ar"][:, 0])


def test_a_horizon_view_shares_the_weights_and_decodes_longer_windows():
    model = build_teacher("default", horizon=1, device="cpu", dtype=torch.float32)
    view = with_horizon(model, 8)
    assert view.n_action_tokens == 56 and model.n_action_tokens == 7
    assert view.trunk is model.trunk and view.config.hidden == model.config.hidden


def test_the_teacher_runs_in_bfloat16():
    model = build_teacher("default", horizon=1, device="cpu", dtype=torch.bfloat16)
    rgb, state, instructions = observation(model, batch=2, device="cpu")
    with torch.no_grad():
        tokens = model.generate_tokens(rgb, state.to(torch.bfloat16), instructions)
    assert tokens.shape == (2, 7) and int(tokens.max()) < model.config.n_bins


def test_time_teacher_rows_and_facts():
    rows, facts = time_teacher("default", [1, 2], [1], "cpu", torch.float32, calls=2, warmup=0)
    assert len(rows) == 2 * 5 and len(facts) == 2
    ar = [r for r in rows if r.decoder == "ar"]
    assert all(r.speedup_vs_ar == pytest.approx(1.0) for r in ar)
    assert all(r.calls == 2 and r.latency_ms_median > 0 for r in rows)
    two = next(r for r in ar if r.horizon == 2)
    assert two.ms_per_action == pytest.approx(two.latency_ms_median / 2)
    assert facts[0]["greedy_vs_jacobi_fixed_point_agreement"] == 1.0  # float32: exact
    assert 0.5 < facts[0]["skip_flops_ratio"] < 1.0
    assert facts[0]["prefix_tokens"] == 4 * 4 + 3


def test_student_row_and_table(tmp_path):
    student = time_student(calls=5, warmup=1)
    assert student.decoder == "mlp_cpu_1_thread" and student.latency_ms_median > 0
    rows, _ = time_teacher("default", [1], [1], "cpu", torch.float32, calls=1, warmup=0)
    table = markdown(rows, student)
    assert table.count("\n") == 1 + len(rows) + 1
    assert "| default | 1 | 1 | ar |" in table and "| rpd_student |" in table


def test_the_script_writes_its_files_and_replots(tmp_path):
    from importlib import util
    from pathlib import Path

    path = Path(__file__).parents[2] / "scripts" / "bench_scale.py"
    spec = util.spec_from_file_location("bench_scale", path)
    script = util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--device", "cpu", "--dtype", "float32", "--sizes", "default", "--horizons", "1",
            "--calls", "1", "--warmup", "0", "--out", str(tmp_path)]
    assert script.main(args) == 0
    saved = json.loads((tmp_path / "scale.json").read_text())
    assert {r["decoder"] for r in saved["rows"]} == {"ar", "jacobi_1", "jacobi_2", "jacobi_4", "dysl_skip"}
    assert saved["models"][0]["parameters"] > 0 and STATE_DIM == 25
    (tmp_path / "ms_per_action.png").unlink()
    assert script.main(["--replot", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "ms_per_action.png").stat().st_size > 0
