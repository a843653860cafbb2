"""VLA-OPD's objective for a token student (a smaller TokenVLA or ``hf_vla`` than its teacher):
on each aggregated state the student samples its own action tokens, both models are
teacher-forced along those tokens, and the per-token divergence of the student's bin
distribution from the teacher's is minimised (reverse KL by default; forward KL and hard
cross-entropy as options, vla_kd.nn.token_divergence). The supervision is on-policy twice
over: on states the student reached and along token prefixes it would itself write."""

from __future__ import annotations

import torch

from vla_kd.errors import UserError
from vla_kd.methods.base import Method
from vla_kd.methods.bc import camera_batch, vla_camera_input
from vla_kd.nn.token_divergence import DIVERGENCES, token_divergence, token_entropy


@torch.no_grad()
def sample_tokens(
    policy, rgb, state: torch.Tensor, instructions: list[str], temperature: float = 1.0
) -> torch.Tensor:
    """``(B, n_action_tokens)`` bins sampled autoregressively from ``policy``'s own distributions
    (greedy at ``temperature=0``), over its KV cache; draws come from torch's global RNG."""
    session, logits = policy.start_decoding(rgb, state, instructions)
    tokens = []
    for i in range(policy.n_action_tokens):
        if i:
            logits = session.step(tokens[-1][:, None])[:, -1]
        if temperature > 0:
            tokens.append(torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1)[:, 0])
        else:
            tokens.append(logits.argmax(-1))
    return torch.stack(tokens, dim=1)


def check_shared_bins(student, teacher) -> None:
    """A bin must mean the same action to both: same bin count and edges, and the student's
    chunk no longer than the teacher's (a prefix of its tokens)."""
    same = (
        student.config.n_bins == teacher.config.n_bins
        and torch.allclose(student.tokenizer.low, teacher.tokenizer.low)
        and torch.allclose(student.tokenizer.high, teacher.tokenizer.high)
    )
    if not same:
        raise UserError(
            "method=opd: a token student must share its teacher's action bins "
            "(a fresh student copies them; this saved one has its own)"
        )
    if student.n_action_tokens > teacher.n_action_tokens:
        raise UserError(
            f"method=opd: the student writes {student.n_action_tokens} action tokens, "
            f"more than its teacher's {teacher.n_action_tokens}"
        )


class TokenOnPolicyDistillation(Method):
    """The per-token ``divergence`` to ``teacher`` along the student's own sampled tokens."""

    def __init__(
        self, student, teacher, divergence: str = "reverse_kl", temperature: float = 1.0, shift_pad: int = 0
    ) -> None:
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence '{divergence}' (one of {', '.join(DIVERGENCES)})")
        check_shared_bins(student, teacher)
        self.model, self.teacher = student, teacher.eval()
        self.divergence, self.temperature, self.shift_pad = divergence, temperature, shift_pad

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        student, teacher = self.model, self.teacher
        rgb = vla_camera_input(student, batch, self.shift_pad)
        state, texts = batch["observation.state"], list(batch["task"])
        tokens = sample_tokens(student, rgb, state, texts, self.temperature)
        with torch.no_grad():
            teacher_rgb = teacher.camera_input(camera_batch(batch, teacher.cameras))
            teacher_logits = teacher.token_logits(teacher_rgb, state, texts, tokens)
        logits = student.token_logits(rgb, state, texts, tokens)
        loss = token_divergence(logits, teacher_logits, self.divergence)
        agreement = (logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean()
        return loss, {
            f"losses/token_{self.divergence}": float(loss.detach()),
            "train/student_token_entropy": float(token_entropy(logits.detach())),
            "train/teacher_token_entropy": float(token_entropy(teacher_logits)),
            "train/greedy_agreement": float(agreement),
        }
