"""Skip-aware two-stage distillation (DySL-VLA) of a SkipVLA student from its full TokenVLA.

For each dataset state the frozen teacher's greedy action tokens and their token distributions
are computed once and cached by frame (the frames are not augmented, so the cache stays
exact). Both stages teacher-force the student on the teacher's own tokens, as it will meet them
when decoding, and minimise KL(teacher || student) per action token:

* stage 1: only the adapters train (everything else frozen); the student runs the cheap path
  (informative layers + adapters), so the adapters learn to stand in for the skipped layers;
* stage 2: every weight trains at a lower rate; each row of a batch takes the cheap path with
  probability ``skip_probability`` and the full path otherwise, so the shared layers serve both
  paths as the guidance will mix them at inference.
"""

from __future__ import annotations

import torch

from vla_kd.methods.base import Method, frame_keys
from vla_kd.methods.bc import image_rows
from vla_kd.nn.layer_skip import token_kl


class SkipAwareDistillation(Method):
    """Stage ``1`` or ``2`` of the DySL objective for ``student`` (a SkipVLA) and ``teacher``."""

    def __init__(self, student, teacher, stage: int, skip_probability: float = 0.5) -> None:
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.model, self.teacher = student, teacher.eval().requires_grad_(False)
        self.stage, self.skip_probability = stage, skip_probability
        student.requires_grad_(stage == 2)
        student.adapters.requires_grad_(True)
        backbone = getattr(student.vision, "backbone", None)
        if backbone is not None:  # a pretrained image backbone stays frozen, as in the teacher
            backbone.requires_grad_(False)
        #: (episode, frame) -> (teacher's greedy tokens (n,), its logits on them (n, bins))
        self.labels: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def collect(self, batch: dict) -> list[tuple[int, int]]:
        """Decode with the teacher the batch's states not seen yet; the rows' keys."""
        keys = frame_keys(batch)
        todo = [i for i, key in enumerate(keys) if key not in self.labels]
        if not todo:
            return keys
        rgb = image_rows(self.teacher.camera_input(batch), todo)
        state, tasks = batch["observation.state"][todo], [batch["task"][i] for i in todo]
        with torch.no_grad():
            tokens = self.teacher.generate_tokens(rgb, state, tasks)
            logits = self.teacher.token_logits(rgb, state, tasks, tokens)
        for row, i in enumerate(todo):
            self.labels[keys[i]] = (tokens[row], logits[row])
        return keys

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        student = self.model
        keys = self.collect(batch)
        tokens = torch.stack([self.labels[k][0] for k in keys])
        teacher_logits = torch.stack([self.labels[k][1] for k in keys])
        rgb = student.camera_input(batch)
        state, tasks = batch["observation.state"], list(batch["task"])

        if self.stage == 1:
            skip = torch.ones(len(keys), dtype=torch.bool)
        else:
            skip = torch.rand(len(keys)) < self.skip_probability
        metrics: dict[str, float] = {"train/skip_share": float(skip.float().mean())}
        terms = []
        for name, rows, forward in (
            ("skip", skip, student.skip_logits),
            ("full", ~skip, student.token_logits),
        ):
            if not rows.any():
                continue
            idx = torch.nonzero(rows).flatten()
            logits = forward(image_rows(rgb, idx), state[idx], [tasks[i] for i in idx], tokens[idx])
            # every token the teacher decodes counts, padded chunk ends included: the student
            # must match the teacher's whole output, not the demonstration
            kl = token_kl(teacher_logits[idx], logits)
            metrics[f"losses/kl_{name}"] = float(kl.detach())
            terms.append(kl * len(idx))
        loss = torch.stack(terms).sum() / len(keys)
        metrics["losses/kl"] = float(loss.detach())
        return loss, metrics
