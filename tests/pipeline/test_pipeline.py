"""`vla-kd pipeline` runs every stage for real at toy sizes and writes its results table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import requires_maniskill, run_cli

from vla_kd.policies.pretrained import read_config

pytestmark = [requires_maniskill, pytest.mark.maniskill, pytest.mark.slow]
SETTINGS = ("pipeline", "experiment=pipeline_debug", "demos.workers=1", "eval.workers=1")


def test_pipeline_debug_end_to_end(tmp_path):
    # demos and evaluations in the pipeline's own process: two toy episodes need no second core;
    # the trainings after the teacher's two at a time in worker processes, as by default
    proc = run_cli(*SETTINGS, "training_workers=2", f"hydra.run.dir={tmp_path}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["demos"]["attempts"] == 2 and doc["demos"]["recorded_success"] >= 1
    names = [row["name"] for row in doc["policies"]]
    rpd = ["rpd student", "rpd student (sampled actions)"]
    students = [*rpd, "ceed student", "dysl student", "align student", "opd student"]
    assert names == ["teacher", "action_expert", *students]
    for row in doc["policies"]:
        assert row["episodes"] == 2 and 0.0 <= row["success_rate"] <= 1.0
    # the RPD rows count env steps: the warm start's teacher episode (16) and RL's 64; OPD's its
    # trainer's samples: 2 steps on the demos, then 2 rounds of 2, batch 8
    assert [row["samples"] for row in doc["policies"]] == [32, 32, 80, 80, 16, 32, 32, 48]
    assert read_config(tmp_path / "teacher")["policy_type"] == "token_vla"
    assert read_config(tmp_path / "students" / "rpd")["policy_type"] == "gaussian_student"
    ceed = read_config(tmp_path / "students" / "ceed")
    assert ceed["policy_type"] == "token_vla" and ceed["config"]["decoding"] == "jacobi"
    dysl = read_config(tmp_path / "students" / "dysl")
    assert dysl["policy_type"] == "skip_vla"
    assert dysl["config"]["layer_roles"] == ["informative", "incremental"]
    assert read_config(tmp_path / "students" / "align")["policy_type"] == "aligned_vla"
    assert read_config(tmp_path / "action_expert")["policy_type"] == "diffusion_action_expert"
    opd = read_config(tmp_path / "students" / "opd")
    assert opd["policy_type"] == "chunked_bc" and opd["config"]["horizon"] == 8  # the teacher's chunks
    rounds = json.loads((tmp_path / "students_training" / "opd" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["aggregate_states"] > rounds[0]["aggregate_states"]
    assert "| teacher |" in (tmp_path / "results.md").read_text()
    assert "| eval_align |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "success_vs_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["protocol"]["eval_seeds_from"] >= 100000 and doc["protocol"]["demo_seeds"] == "0..1"
    # every stage timed once: the teacher's training, the trainings side by side (in the order
    # they finished), then the evaluations one after another, all within the whole run's time
    stages = doc["stage_seconds"]
    trainings = ["train_action_expert", "train_rpd", "train_ceed", "train_dysl", "train_align", "train_opd"]
    evaluations = ["eval_teacher", "eval_action_expert", "eval_rpd", "eval_rpd_sampled", "eval_ceed",
                   "eval_dysl", "eval_align", "eval_opd"]
    assert list(stages)[:2] == ["demos", "train_teacher"] and list(stages)[-8:] == evaluations
    assert sorted(list(stages)[2:-8]) == sorted(trainings)
    assert list(stages).index("train_align") > list(stages).index("train_action_expert")  # it needs it
    side_by_side = doc["side_by_side"]
    assert side_by_side["stages"] == trainings and side_by_side["workers"] == 2
    assert all(s > 0 for s in stages.values())
    alone = sum(seconds for stage, seconds in stages.items() if stage not in trainings)
    assert alone + side_by_side["wall_seconds"] <= doc["wall_seconds"]
    assert "ran side by side, 2 at a time" in (tmp_path / "results.md").read_text()

    check_resume(tmp_path, doc)
    check_opd_refines_the_aligned_vla(tmp_path)


def check_opd_refines_the_aligned_vla(run: Path) -> None:
    """`method=opd student=<aligned VLA>`: OPD refines a saved aligned VLA (labels from its own
    action expert) with its stage-2 objective: the VLM stays frozen, the mapper learns."""
    import torch

    from vla_kd.policies.loading import load_policy

    out = run / "aligned_opd"
    proc = run_cli(
        "train", "method=opd", f"student={run / 'students' / 'align'}", f"teacher={run / 'action_expert'}",
        "env=maniskill/PushCube-v1", "method.rounds=1", "method.episodes_per_round=1",
        "method.steps_per_round=2", "method.validation_episodes=1", "method.max_episode_steps=16",
        "method.workers=1", "trainer.batch_size=4", "trainer.progress=false", "eval.episodes=1",
        "eval.workers=1", "tracker=none", f"output={out}", f"hydra.run.dir={run / 'aligned_opd_run'}",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = load_policy(str(run / "students" / "align")), load_policy(str(out))
    assert after.policy_type == "aligned_vla"
    for name, value in before.vlm.state_dict().items():
        assert torch.equal(after.vlm.state_dict()[name], value), name
    mapper = after.mapper.state_dict()
    assert any(not torch.equal(mapper[k], v) for k, v in before.mapper.state_dict().items())


def test_pipeline_with_a_hugging_face_vlm_teacher(tmp_path):
    """`teacher=hf_vla`: a small SmolVLM-architecture model is built, fine-tuned and distilled
    by every method of the default pipeline."""
    proc = run_cli(*SETTINGS, "teacher=hf_vla", f"hydra.run.dir={tmp_path}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    students = [row["name"] for row in doc["policies"]][-4:]
    assert students == ["ceed student", "dysl student", "align student", "opd student"]
    assert list(doc["stage_seconds"])[:3] == ["demos", "make_vlm", "train_teacher"]
    assert (tmp_path / "vlm" / "config.json").is_file()
    teacher = read_config(tmp_path / "teacher")
    assert teacher["policy_type"] == "hf_vla"
    assert teacher["config"]["architecture"] == "Idefics3ForConditionalGeneration"
    ceed = read_config(tmp_path / "students" / "ceed")
    assert ceed["policy_type"] == "hf_vla" and ceed["config"]["decoding"] == "jacobi"
    assert read_config(tmp_path / "students" / "dysl")["policy_type"] == "skip_hf_vla"
    assert read_config(tmp_path / "students" / "align")["config"]["vlm_type"] == "hf_vla"


def check_resume(run_dir, first: dict) -> None:
    """`resume=true` on the finished run above: replays the recorded stages, refuses changed
    settings, and continues a training that was cut short from its checkpoint."""
    base = (*SETTINGS, f"hydra.run.dir={run_dir}")
    dataset_info = run_dir / "dataset" / "meta" / "info.json"
    dataset_mtime = dataset_info.stat().st_mtime_ns
    teacher_weights = (run_dir / "teacher" / "model.safetensors").read_bytes()
    # as if the run had died in the teacher's training, after its checkpoint at the last step
    state_path = run_dir / "pipeline_state.json"
    state = json.loads(state_path.read_text())
    for stage in ("train_teacher", "eval_teacher"):
        del state["stages"][stage]
    state_path.write_text(json.dumps(state))

    changed = run_cli(*base, "resume=true", "teacher_trainer.steps=5", timeout=300)
    assert changed.returncode != 0 and "other settings (teacher_trainer.steps)" in changed.stderr

    proc = run_cli(*base, "resume=true", "students=[ceed]", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["resumed"] and doc["demos"] == first["demos"]
    assert dataset_info.stat().st_mtime_ns == dataset_mtime  # the demos were not recorded again
    # the teacher resumed from its checkpoint at its last step: no step more, the same weights
    assert (run_dir / "teacher" / "model.safetensors").read_bytes() == teacher_weights
    teacher, expert, ceed = doc["policies"]
    first_rows = {row["name"]: row for row in first["policies"]}
    assert expert == first_rows["action_expert"] and ceed == first_rows["ceed student"]  # replayed
    assert (teacher["samples"], teacher["success_rate"]) == (first_rows["teacher"]["samples"],
                                                             first_rows["teacher"]["success_rate"])
    stages = doc["stage_seconds"]
    assert list(stages) == ["demos", "train_teacher", "train_action_expert", "train_ceed",
                            "eval_teacher", "eval_action_expert", "eval_ceed"]
    for stage in ("demos", "train_action_expert", "eval_action_expert", "train_ceed", "eval_ceed"):
        assert stages[stage] == first["stage_seconds"][stage]
