"""Action-expert alignment (VITA-VLA) in two stages, for an AlignedVLA student.

Stage 1, alignment: the VLM is frozen; only the action token, the state encoder and the mapper
train, so that the mapped action-token state matches the action expert's own encoder features
on the same observation (L2, as the paper's code does). The expert's decoder then already knows
what to do with them. Optionally (``output_weight > 0``, not in the paper) stage 1 also matches
what the frozen decoder predicts from the mapped features to what it predicts from the expert's,
on the same noised demonstration chunk: the L2 on features weighs every feature direction
alike, while this term weighs them by how much the decoder's output moves with them.

Stage 2, selective fine-tuning: the chosen parts unfreeze (mapper, state encoder, action token,
the reused decoder, optionally the VLM's image encoder and the top trunk layers) and train on
actions through the diffusion decoder: its denoising loss, plus smooth-L1 on the arm and binary
cross-entropy on the gripper applied to the one-step estimate of the clean chunk
(``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)`` for a noise-predicting decoder, its own output
for a sample-predicting one), over the whole chunk (the short future window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vla_kd.config_checks import at_least, one_of, positive
from vla_kd.errors import UserError, unknown_name
from vla_kd.methods.base import Method
from vla_kd.methods.bc import camera_batch, denoise_step, masked_mean, masked_mse, vla_camera_input
from vla_kd.methods.distiller import Distiller, RunContext, TrainResult
from vla_kd.methods.registry import register
from vla_kd.policies.aligned_vla import AlignedVLA
from vla_kd.policies.loading import load_policy
from vla_kd.policies.registry import TOKEN_POLICY_TYPES
from vla_kd.trainer import run_stages, seed_initial_weights

ARM, GRIPPER = slice(0, 6), 6
STAGE2_PARTS = ("mapper", "state", "action_token", "decoder", "vision")
STAGES = ("1", "2", "both", "scratch")


@dataclass
class AlignConfig:
    """``method=align teacher=<token_vla folder> expert=<action expert folder> dataset=...``.

    ``stage``: 1 builds an AlignedVLA from the teacher (the VLM) and the expert and aligns it; 2
    fine-tunes ``init`` (a stage-1 output folder); both runs one after the other; scratch is the
    baseline, the same architecture from random weights (the VLM's config and the data's
    normalisation only) trained end to end on the stage-2 loss for both stages' steps."""

    name: str = "align"
    stage: str = "both"  # 1 | 2 | both | scratch
    init: str | None = None  # stage=2: the stage-1 output folder
    #: sizes of the proprio parts, one linear map each (null: one part); Panda: [7, 2, 16]
    state_parts: list[int] | None = None
    mapper_hidden: int = 512
    state_skip: bool = False  # the mapper also reads the state token (not in the paper)
    #: learnable action tokens; the mapper reads all their hidden states (> 1: not in the paper)
    action_tokens: int = 1
    stage1_steps: int = 1000  # VLM frozen: action token, state encoder, mapper vs the expert's features (L2)
    stage1_lr: float = 1.0e-3
    #: > 0: stage 1 also matches the frozen decoder's output from mapped vs expert features
    stage1_output_weight: float = 0.0
    stage2_steps: int = 1000  # the parts below unfrozen, trained on actions through the reused decoder
    stage2_lr: float = 1.0e-4
    #: also: vision
    stage2_parts: list[str] = field(default_factory=lambda: ["mapper", "state", "action_token", "decoder"])
    top_layers: int = 0  # also unfreeze this many top trunk layers in stage 2
    scratch_lr: float = 3.0e-4  # stage=scratch: the baseline trained end to end for stage1 + stage2 steps

    def __post_init__(self) -> None:
        self.stage = str(self.stage)  # `stage=1` arrives as a number
        one_of(self, "stage", STAGES)
        at_least(self, 1, "mapper_hidden", "action_tokens", "state_parts")
        at_least(self, 0, "stage1_steps", "stage2_steps", "top_layers", "stage1_output_weight")
        positive(self, "stage1_lr", "stage2_lr", "scratch_lr")
        for part in self.stage2_parts:
            if part not in STAGE2_PARTS:
                raise unknown_name("align part", part, STAGE2_PARTS)


def set_trainable(student, parts: tuple[str, ...], top_layers: int = 0) -> None:
    """Freeze ``student`` except ``parts`` (of ``STAGE2_PARTS``) and its top trunk layers."""
    student.requires_grad_(False)
    unknown = set(parts) - set(STAGE2_PARTS)
    if unknown:
        raise unknown_name("align part", sorted(unknown)[0], STAGE2_PARTS)
    modules = {
        "mapper": [student.mapper],
        "state": [student.state_encoders, student.state_fuse],
        "decoder": [student.decoder],
        "action_token": [],
        # the VLM's image encoder and the projections that carry its features into the prompt
        "vision": student.vlm.vision_modules,
    }
    for part in parts:
        for module in modules[part]:
            module.requires_grad_(True)
    student.action_token.requires_grad_("action_token" in parts)
    layers = student.vlm.decoder_layers
    for layer in list(layers)[len(layers) - top_layers :] if top_layers else []:
        layer.requires_grad_(True)
    if top_layers:
        student.vlm.layer_container.norm.requires_grad_(True)


class FeatureAlignment(Method):
    """Stage 1: L2 between the mapped VLM features and the frozen expert's features, plus
    ``output_weight`` times the MSE between the frozen decoder's predictions from each."""

    def __init__(self, student, expert, shift_pad: int = 4, output_weight: float = 0.0) -> None:
        if output_weight < 0:
            raise UserError(f"stage1_output_weight must be >= 0, got {output_weight}")
        self.model, self.expert = student, expert.eval().requires_grad_(False)
        self.shift_pad, self.output_weight = shift_pad, float(output_weight)
        self.scheduler = student.decoder.scheduler("ddpm")
        set_trainable(student, ("mapper", "state", "action_token"))

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        state = batch["observation.state"]
        # The same augmented frames for both; the VLM and the expert may read different cameras.
        vlm = self.model.vlm
        images = camera_batch(batch, (*vlm.cameras, *self.expert.config.cameras),
                              self.shift_pad if self.model.training else 0)
        with torch.no_grad():
            target = self.expert.encoder({k: images[k] for k in self.expert.config.cameras}, state)
        mapped = self.model.features(vlm.camera_input(images), state, list(batch["task"]))
        l2 = F.mse_loss(mapped, target)
        logs = {"losses/align_l2": float(l2.detach())}
        if not self.output_weight:
            return l2, logs
        output = self.output_mismatch(mapped, target, batch)
        logs["losses/align_output_mse"] = float(output.detach())
        return l2 + self.output_weight * output, logs

    def output_mismatch(self, mapped: torch.Tensor, target: torch.Tensor, batch: dict) -> torch.Tensor:
        """MSE, over unpadded actions, between the frozen decoder's predictions from ``mapped``
        and from the expert's ``target`` features on one noised demonstration chunk."""
        decoder = self.model.decoder  # the expert's decoder, frozen in this stage
        clean = self.model.action_norm.normalize(batch["action"])
        step = denoise_step(self.scheduler, decoder, mapped, clean, batch["action_is_pad"])
        with torch.no_grad():
            expert_prediction = decoder(step.noisy, step.t, target)
        return masked_mse(step.predicted, expert_prediction, step.keep)


class ActionFineTuning(Method):
    """Stage 2 (and the from-scratch baseline with every part trainable): actions through
    the diffusion decoder."""

    def __init__(
        self,
        student,
        parts: tuple[str, ...] = STAGE2_PARTS,
        top_layers: int = 0,
        train_everything: bool = False,
        arm_weight: float = 1.0,
        gripper_weight: float = 0.1,
        shift_pad: int = 4,
    ) -> None:
        self.model = student
        self.arm_weight, self.gripper_weight, self.shift_pad = arm_weight, gripper_weight, shift_pad
        if train_everything:
            student.requires_grad_(True)
        else:
            set_trainable(student, parts, top_layers)
        self.scheduler = student.decoder.scheduler("ddpm")

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        student = self.model
        state = batch["observation.state"]
        rgb = vla_camera_input(student.vlm, batch, self.shift_pad)
        features = student.features(rgb, state, list(batch["task"]))
        clean = student.action_norm.normalize(batch["action"])
        step = denoise_step(self.scheduler, student.decoder, features, clean, batch["action_is_pad"])
        denoise, keep = step.mse, step.keep

        x0 = step.clean_estimate
        arm = masked_mean(F.smooth_l1_loss(x0[..., ARM], clean[..., ARM], reduction="none"), keep)
        closed = (batch["action"][..., GRIPPER] < 0).float()  # the contract: -1 closes
        raw_gripper = student.action_norm.unnormalize(x0)[..., GRIPPER]  # back to the contract's [-1, 1]
        open_prob = ((raw_gripper + 1) / 2).clamp(1e-4, 1 - 1e-4)
        gripper = (
            F.binary_cross_entropy(open_prob, 1 - closed, reduction="none") * keep[..., 0]
        ).sum() / keep.sum()
        loss = denoise + self.arm_weight * arm + self.gripper_weight * gripper
        return loss, {
            "losses/denoise_mse": float(denoise.detach()),
            "losses/arm_smooth_l1": float(arm.detach()),
            "losses/gripper_bce": float(gripper.detach()),
        }


def initial_student(
    a: AlignConfig, teacher: str | None, expert: str | None, dataset
) -> tuple[AlignedVLA, object]:
    """The AlignedVLA a run starts from (from the ``teacher`` VLM and the ``expert`` folders, or
    ``a.init`` for stage 2), and the expert stage 1 aligns to (None for stage 2)."""
    if a.stage == "2":
        return load_policy(a.init, "aligned_vla", "init", "method=align stage=2"), None
    action_expert = load_policy(expert, "diffusion_action_expert", "expert", "method=align")
    vlm = load_policy(teacher, TOKEN_POLICY_TYPES, "teacher", "method=align")
    try:
        student = AlignedVLA.from_parts(vlm, action_expert, a.state_parts or None, a.mapper_hidden,
                                        a.state_skip, a.action_tokens)
    except ValueError as err:  # e.g. state_parts that do not add up to the teacher's state
        raise UserError(f"method=align: {err}") from None
    if a.stage == "scratch" and student.config.vlm_type == "token_vla":
        # the architecture and the data's normalisation, no learned weights
        student = AlignedVLA(student.config)
        # A teacher trained with the auxiliary pose head passes that head on; align never trains
        # it, so its target normaliser stays at identity.
        student.vlm.set_normalization(dataset.feature_stats("observation.state"), dataset.actions)
        student.action_norm.fit(dataset.feature_stats("action"))
    elif a.stage == "scratch":  # a Hugging Face VLM re-initialised (it keeps its bins)
        student = AlignedVLA(student.config, vlm.fresh_copy())
        student.action_norm.fit(dataset.feature_stats("action"))
    return student, action_expert


@register
class Align(Distiller):
    """Run ``config.stage`` (see :class:`AlignConfig`)."""

    name = "align"
    data_parallel = True
    config_class = AlignConfig
    inputs = ("teacher", "expert", "dataset")

    def fit(self, ctx: RunContext) -> TrainResult:
        a: AlignConfig = ctx.config
        dataset = ctx.load_dataset(1)
        seed_initial_weights(ctx.trainer.seed)
        student, action_expert = initial_student(a, ctx.teacher, ctx.expert, dataset)
        dataset.action_horizon = student.config.horizon  # chunks as long as the decoder's
        student.train()

        # Built when their stage starts: each one sets which parts train.
        def stage1() -> Method:
            return FeatureAlignment(student, action_expert, output_weight=a.stage1_output_weight)

        def stage2() -> Method:
            return ActionFineTuning(student, tuple(a.stage2_parts), a.top_layers)

        def scratch() -> Method:
            return ActionFineTuning(student, train_everything=True)

        first = ("stage1", stage1, a.stage1_steps, a.stage1_lr)
        second = ("stage2", stage2, a.stage2_steps, a.stage2_lr)
        plan = {
            "1": [first],
            "2": [second],
            "both": [first, second],
            "scratch": [("scratch", scratch, a.stage1_steps + a.stage2_steps, a.scratch_lr)],
        }[a.stage]
        done = run_stages(plan, dataset, ctx.trainer, ctx.run_dir, ctx.tracker)
        student.eval().requires_grad_(False)
        saved_with = {"stage": a.stage, "teacher": str(ctx.teacher), "expert": str(ctx.expert),
                      "init": str(a.init), "dataset": str(ctx.dataset), "steps": done.steps}
        summary = {"model": "aligned_vla", "steps": done.steps, "samples": done.samples,
                   "stage_wall_seconds": done.wall_seconds, **saved_with, **done.metrics}
        return TrainResult(student, summary, done.samples, saved_with)
