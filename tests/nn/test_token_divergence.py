"""VLA-OPD's token divergences against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from vla_kd.nn.token_divergence import token_divergence, token_entropy


def test_divergences_match_hand_computed_values():
    # One token over two bins: student (0.8, 0.2), teacher (0.5, 0.5).
    student = torch.log(torch.tensor([[[0.8, 0.2]]]))
    teacher = torch.log(torch.tensor([[[0.5, 0.5]]]))
    reverse = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    forward = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert token_divergence(student, teacher, "reverse_kl").item() == pytest.approx(reverse, rel=1e-5)
    assert token_divergence(student, teacher, "forward_kl").item() == pytest.approx(forward, rel=1e-5)
    # Teacher (0.3, 0.7): its greedy bin is 1, where the student puts 0.2.
    teacher = torch.log(torch.tensor([[[0.3, 0.7]]]))
    assert token_divergence(student, teacher, "hard_ce").item() == pytest.approx(-math.log(0.2), rel=1e-5)
    assert token_entropy(student).item() == pytest.approx(
        -(0.8 * math.log(0.8) + 0.2 * math.log(0.2)), rel=1e-5
    )


def test_both_kls_vanish_when_the_student_is_the_teacher_and_padding_is_ignored():
    logits = torch.randn(3, 5, 256, generator=torch.Generator().manual_seed(0))
    for kind in ("reverse_kl", "forward_kl"):
        assert token_divergence(logits, logits.clone(), kind).abs().item() < 1e-6
    other = torch.randn(3, 5, 256, generator=torch.Generator().manual_seed(1))
    keep = torch.ones(3, 5, dtype=torch.bool)
    keep[:, 3:] = False
    masked = token_divergence(other, logits, "reverse_kl", keep)
    assert masked.item() == pytest.approx(
        token_divergence(other[:, :3], logits[:, :3], "reverse_kl").item(), rel=1e-5
    )
    with pytest.raises(ValueError, match="unknown divergence"):
        token_divergence(other, logits, "js")
