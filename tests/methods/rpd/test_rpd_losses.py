"""RPD's teacher term without a simulator: each L_teacher variant against a hand computation,
and the lambda schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vla_kd.errors import UserError

pytest.importorskip("stable_baselines3")

from vla_kd.methods.rpd.algorithm import teacher_loss, teacher_weight

MEAN = torch.tensor([[0.2, -0.1, 0.0, 0.3, 0.0, 0.0, 1.0], [0.0, 0.5, -0.5, 0.0, 0.1, 0.0, -1.0]])
STD = torch.full((2, 7), 0.5)
TEACHER = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [0.1, 0.4, -0.5, 0.2, 0.1, 0.0, 1.0]])


def test_mse_and_l1_are_the_mean_over_all_elements():
    diff = (MEAN - TEACHER).numpy()
    assert teacher_loss("mse", MEAN, STD, None, TEACHER).item() == pytest.approx((diff**2).mean(), rel=1e-6)
    assert teacher_loss("l1", MEAN, STD, None, TEACHER).item() == pytest.approx(np.abs(diff).mean(), rel=1e-6)


def test_bc_is_the_negative_log_density_of_the_teacher_action():
    log_prob = torch.distributions.Normal(MEAN, STD).log_prob(TEACHER).sum(-1)

    def nll(m, t, s=0.5):
        return 0.5 * ((t - m) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)

    by_hand = [
        sum(nll(m, t) for m, t in zip(mr, tr, strict=True))
        for mr, tr in zip(MEAN.tolist(), TEACHER.tolist(), strict=True)
    ]
    value = teacher_loss("bc", MEAN, STD, log_prob, TEACHER)
    assert value.item() == pytest.approx(np.mean(by_hand), rel=1e-6)


def test_kl_is_gaussian_kl_weighted_by_the_clamped_ratio():
    ratio = torch.tensor([0.5, 1.3])  # the first is clamped up to 1 - clip = 0.8
    teacher_std = 0.2
    kl = [
        sum(
            math.log(teacher_std / 0.5) + (0.5**2 + (m - t) ** 2) / (2 * teacher_std**2) - 0.5
            for m, t in zip(mr, tr, strict=True)
        )
        for mr, tr in zip(MEAN.tolist(), TEACHER.tolist(), strict=True)
    ]
    expected = (kl[0] * 0.8 + kl[1] * 1.3) / 2
    value = teacher_loss("kl", MEAN, STD, None, TEACHER, ratio=ratio, clip_range=0.2, teacher_std=teacher_std)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(UserError, match="teacher loss"):
        teacher_loss("huber", MEAN, STD, None, TEACHER)


def test_lambda_schedules():
    assert teacher_weight(0, 1.0, "constant", None) == 1.0
    assert teacher_weight(10**9, 0.3, "constant", 100) == 0.3
    assert teacher_weight(0, 1.0, "cosine", 1000) == pytest.approx(1.0)
    assert teacher_weight(500, 1.0, "cosine", 1000) == pytest.approx(0.5)
    assert teacher_weight(250, 2.0, "cosine", 1000) == pytest.approx(
        2.0 * (0.5 * math.cos(math.pi / 4) + 0.5)
    )
    assert teacher_weight(1000, 1.0, "cosine", 1000) == 0.0
    assert teacher_weight(5000, 1.0, "cosine", 1000) == 0.0
    with pytest.raises(UserError, match="schedule"):
        teacher_weight(0, 1.0, "linear", 1000)
