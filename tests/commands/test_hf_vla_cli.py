"""Bring your own VLA from the command line: `vla-kd make-vlm`, then `vla-kd train model=hf_vla`
(full fine-tuning and LoRA) on recorded PushCube demonstrations, evaluated in the simulator,
and `vla-kd eval policy=<folder>`; bad folders and cameras are one line."""
from __future__ import annotations

import json

import pytest
from helpers import HAS_MANISKILL, error_lines, run_cli

pytestmark = pytest.mark.skipif(not HAS_MANISKILL, reason="extra 'maniskill' not installed")
SMALL = ("image_size=64", "hidden=64", "vision_hidden=64", "heads=2", "kv_heads=1", "vision_heads=2")


@pytest.fixture(scope="module")
def small_vlm(tmp_path_factory):
    root = tmp_path_factory.mktemp("make_vlm")
    proc = run_cli("make-vlm", *SMALL, f"output={root / 'vlm'}", f"hydra.run.dir={root / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["architecture"] == "idefics3"
    return root / "vlm"


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_fine_tune_then_evaluate_in_the_simulator(small_vlm, pushcube_demos, tmp_path, lora_rank):
    proc = run_cli("train", "model=hf_vla", f"model.checkpoint={small_vlm}", f"model.lora_rank={lora_rank}",
                   f"dataset={pushcube_demos}", "trainer=debug", "trainer.progress=false", "tracker=none",
                   "eval.env=maniskill/PushCube-v1", "eval.episodes=2", f"hydra.run.dir={tmp_path / 'run'}",
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["model"] == "hf_vla" and summary["steps"] == 4 and summary["eval/episodes"] == 2
    policy = tmp_path / "run" / "policy"
    saved = json.loads((policy / "config.json").read_text())
    assert saved["policy_type"] == "hf_vla" and saved["config"]["lora_rank"] == 0  # adapters merged
    assert (policy / "vlm" / "config.json").is_file() and not (policy / "vlm_adapter").exists()
    if lora_rank:
        assert (tmp_path / "run" / "checkpoints" / "last" / "vlm_adapter").is_dir()
        return
    proc = run_cli("eval", f"policy={policy}", "env=maniskill/PushCube-v1", "episodes_per_task=1",
                   "tracker=none", f"hydra.run.dir={tmp_path / 'eval'}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["episodes"] == 1


@pytest.mark.parametrize(("overrides", "expected"), [
    ((), "model=hf_vla needs model.checkpoint="),
    (("model.checkpoint=/no/such/folder",), "checkpoint folder '/no/such/folder' does not exist"),
    (("model.checkpoint={vlm}", "model.cameras=[rgb,wrist_rgb]"), "model.cameras=['rgb', 'wrist_rgb']"),
])
def test_bad_inputs_are_one_line(small_vlm, tiny_datasets, tmp_path, overrides, expected):
    overrides = [o.format(vlm=small_vlm) for o in overrides]
    proc = run_cli("train", "model=hf_vla", *overrides, f"dataset={tiny_datasets(image_size=64)}",
                   "trainer=debug", "tracker=none", f"hydra.run.dir={tmp_path}")
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], lines
