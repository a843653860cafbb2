"""Per-token divergences between a student's and a teacher's action-bin distributions (VLA-OPD).

* ``reverse_kl``: KL(p_student || p_teacher), mode-seeking; VLA-OPD's choice, since it keeps the
  student's entropy from exploding on its own rollouts;
* ``forward_kl``: KL(p_teacher || p_student), mass-covering (the usual distillation loss);
* ``hard_ce``: -log p_student(argmax p_teacher), the teacher's greedy token as a one-hot label,
  which collapses the student's entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIVERGENCES = ("reverse_kl", "forward_kl", "hard_ce")


def masked_token_mean(values: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The mean of per-token ``values`` ``(B, n)`` over the tokens ``keep`` marks (all if None)."""
    if keep is None:
        return values.mean()
    keep = keep.to(values.dtype)
    return (values * keep).sum() / keep.sum().clamp(min=1)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "reverse_kl",
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean per-token ``kind`` divergence; logits ``(B, n, bins)``, ``keep`` ``(B, n)``."""
    student = F.log_softmax(student_logits.float(), dim=-1)
    teacher = F.log_softmax(teacher_logits.float(), dim=-1)
    if kind == "reverse_kl":
        per_token = (student.exp() * (student - teacher)).sum(-1)
    elif kind == "forward_kl":
        per_token = (teacher.exp() * (teacher - student)).sum(-1)
    elif kind == "hard_ce":
        per_token = -student.gather(-1, teacher.argmax(-1, keepdim=True)).squeeze(-1)
    else:
        raise ValueError(f"unknown divergence '{kind}' (one of {', '.join(DIVERGENCES)})")
    return masked_token_mean(per_token, keep)


def token_entropy(logits: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The mean entropy (nats) of the per-token distributions ``(B, n, bins)``."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return masked_token_mean(-(log_p.exp() * log_p).sum(-1), keep)
