"""Skip-aware two-stage distillation (DySL-VLA) of a layer-skipping student from its full teacher
(a TokenVLA or a Hugging Face VLM, :mod:`vla_kd.policies.skip_vla`).

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

import dataclasses
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from vla_kd.config_checks import ConfigValueError, at_least, fraction, one_of
from vla_kd.errors import UserError
from vla_kd.methods.base import Method, frame_keys
from vla_kd.methods.bc import image_rows
from vla_kd.methods.distiller import Distiller, RunContext, TrainResult
from vla_kd.methods.registry import register
from vla_kd.nn.layer_skip import classify_layers, token_kl
from vla_kd.policies.registry import TOKEN_POLICY_TYPES
from vla_kd.policies.skip_calibration import cheap_path_jumps, demo_episodes, importance_of_layers
from vla_kd.policies.skip_cost import fit_post_threshold, guidance_statistics, path_times, shares
from vla_kd.policies.skip_guidance import calibrate
from vla_kd.policies.skip_vla import SKIPPING, skip_student
from vla_kd.trainer import run_stages, seed_initial_weights


@dataclass
class DySLConfig:
    """``method=dysl teacher=<token_vla or hf_vla folder> dataset=<its demonstrations>``: a
    layer-skipping student that bypasses its teacher's incremental layers on unimportant steps."""

    name: str = "dysl"
    informative_layers: int = 2  # trunk layers always run (layer 0 and the most important others)
    importance_frames: int = 256  # dataset states on which each layer's importance is measured
    adapter_rank: int = 32  # low-rank residual MLP standing in for each skipped layer
    history: int = 4  # executed actions the prior guidance reads
    #: demos' motion-change quantile above which a step is critical (null: off)
    prior_quantile: float | None = 0.8
    #: demos' action-jump quantile above which the cheap action is rejected (null: off)
    post_quantile: float | None = 0.8
    #: demos: the demos' own action jumps; student: the trained cheap path's first actions vs the
    #: demos' previous actions (what the post test sees)
    post_calibration: str = "demos"
    calibration_frames: int = 512  # chunk boundaries of the demos read by post_calibration=student
    skipping: str = "guided"  # how the saved student runs: guided | always | off
    stage1_steps: int = 400  # adapters only, cheap path vs the full teacher
    stage1_lr: float = 1.0e-3
    stage2_steps: int = 400  # every weight, skipping sampled per row
    stage2_lr: float = 1.0e-4
    skip_probability: float = 0.7  # stage 2: share of rows on the cheap path
    #: the guided student's expected cost per call on the demos, as a share of a full decode, at
    #: most this: the post threshold is raised until it is, else the student runs at full depth
    #: (skipping=off) since its guidance would cost more than the teacher (null: no check). Below
    #: 1 because on its own rollouts the student's post test rejects more than on the demos.
    max_cost_ratio: float | None = 0.85

    def __post_init__(self) -> None:
        at_least(self, 1, "informative_layers", "importance_frames", "adapter_rank", "history",
                 "calibration_frames")
        at_least(self, 0, "stage1_steps", "stage2_steps")
        if self.stage1_steps + self.stage2_steps == 0:
            raise ConfigValueError("stage1_steps", "and stage2_steps are both 0: nothing would train")
        fraction(self, "prior_quantile", "post_quantile", "skip_probability")
        at_least(self, 0.0, "stage1_lr", "stage2_lr", "max_cost_ratio")
        one_of(self, "post_calibration", ("demos", "student"))
        one_of(self, "skipping", SKIPPING)


class SkipAwareDistillation(Method):
    """Stage ``1`` or ``2`` of the DySL objective for ``student`` (a layer-skipping policy) and
    ``teacher``."""

    def __init__(self, student, teacher, stage: int, skip_probability: float = 0.5) -> None:
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.model, self.teacher = student, teacher.eval().requires_grad_(False)
        self.stage, self.skip_probability = stage, skip_probability
        student.requires_grad_(stage == 2)
        student.adapters.requires_grad_(True)
        backbone = getattr(getattr(student, "vision", None), "backbone", None)
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


@register
class DySL(Distiller):
    """From the training demonstrations: (1) rank the teacher's layers by how much bypassing
    each one changes its action-token distributions and keep the most important as informative;
    (2) calibrate the prior and post guidance thresholds as quantiles of the demos' motion
    statistics; (3) stage 1, adapters only; (4) stage 2, everything, skipping sampled; (5) with
    ``post_calibration=student``, re-derive the post threshold from the trained student's
    cheap-path actions on the same demos; (6) with ``max_cost_ratio``, check that the guidance
    pays on the demos (:mod:`vla_kd.policies.skip_cost`) and raise the post threshold or turn
    skipping off where it does not."""

    name = "dysl"
    data_parallel = True
    config_class = DySLConfig
    inputs = ("teacher", "dataset")

    def fit(self, ctx: RunContext) -> TrainResult:
        d: DySLConfig = ctx.config
        teacher = ctx.load_teacher(TOKEN_POLICY_TYPES)
        layers = teacher.trunk_shape.layers
        if not d.informative_layers < layers:  # at least one layer to skip
            raise UserError(
                f"dysl informative_layers must be below the teacher's {layers} layers "
                f"(the rest are the ones skipped), got {d.informative_layers}"
            )
        dataset = ctx.load_dataset(teacher.config.horizon, "the teacher's demonstrations")
        dataset.cameras(teacher.cameras, "the teacher's cameras")  # the demos must have them
        seed = ctx.trainer.seed
        importance = importance_of_layers(teacher, dataset, d.importance_frames, seed)
        roles = classify_layers(importance.tolist(), d.informative_layers)
        try:
            thresholds = calibrate(
                demo_episodes(dataset), teacher.config.horizon, d.history, d.prior_quantile, d.post_quantile
            )
        except ValueError as err:
            raise UserError(str(err)) from None
        seed_initial_weights(seed)  # the adapters are new weights
        student = skip_student(
            teacher, layer_roles=roles, adapter_rank=d.adapter_rank, skipping=d.skipping,
            history=d.history, prior_threshold=thresholds.prior, post_threshold=thresholds.post,
        ).train()
        stages = [
            (f"stage{stage}", partial(SkipAwareDistillation, student, teacher, stage, d.skip_probability),
             steps, lr)
            for stage, steps, lr in ((1, d.stage1_steps, d.stage1_lr), (2, d.stage2_steps, d.stage2_lr))
        ]
        done = run_stages(stages, dataset, ctx.trainer, ctx.run_dir, ctx.tracker)
        student.eval().requires_grad_(False)
        if d.post_calibration == "student" and d.post_quantile is not None:
            jumps = cheap_path_jumps(student, dataset, d.calibration_frames, seed)
            if len(jumps) == 0:
                raise UserError("no chunk boundary without a gripper flip in the demos: cannot calibrate")
            thresholds = dataclasses.replace(thresholds, post=float(np.quantile(jumps, d.post_quantile)))
            student.config = dataclasses.replace(student.config, post_threshold=thresholds.post)
        cost = None
        if d.max_cost_ratio is not None and d.skipping == "guided":
            cost = check_cost(student, dataset, d, thresholds, seed)
            thresholds = dataclasses.replace(thresholds, post=cost["post_threshold"])
        saved_with = {
            "teacher": str(ctx.teacher),
            "dataset": str(ctx.dataset),
            "steps": done.steps,
            "layer_importance": importance.tolist(),
            "thresholds": {**dataclasses.asdict(thresholds), "post_calibration": d.post_calibration},
            "guidance_cost": cost,
        }
        summary = {"model": student.policy_type, "steps": done.steps, "samples": done.samples,
                   "layer_roles": roles, **saved_with, **done.metrics}
        return TrainResult(student, summary, done.samples, saved_with)


def check_cost(student, dataset, d: DySLConfig, thresholds, seed: int) -> dict:
    """Fit the post threshold to ``d.max_cost_ratio`` on the demos (or turn skipping off) in the
    student's config; what was measured and decided."""
    stats = guidance_statistics(student, dataset, d.calibration_frames, seed)
    times = path_times(student, dataset, seed=seed)
    post, ratio, pays = fit_post_threshold(stats, times, thresholds.post, d.max_cost_ratio)
    if pays:
        student.config = dataclasses.replace(student.config, post_threshold=post)
    else:
        student.config = dataclasses.replace(student.config, skipping="off")
    p_full, p_skip, p_rejected = shares(stats, post)
    return {
        "limit": d.max_cost_ratio, "expected_ratio": ratio, "guidance_pays": pays,
        "skipping": student.config.skipping, "post_threshold": post,
        "calibrated_post_threshold": thresholds.post,
        "ms": {name: 1000 * value for name, value in dataclasses.asdict(times).items()},
        "shares": {"full": p_full, "skip": p_skip, "skip+full": p_rejected},
    }
