"""The ``model`` config group's schemas, one per ``model=<type>`` option: the values and what they
mean are written once, in these classes; ``configs/model/<type>.yaml`` only names its schema (or,
like ``token_vla_smollm2``, overrides some values). Fields that say how a model is *trained*
(augmentation, label smoothing) ride along in the same node and are read by ``methods.bc``.
Apart from the models themselves (``policies.factory`` builds them) so the command line reads
them without importing any model code."""
from __future__ import annotations

from dataclasses import dataclass, field

from vla_kd.config_checks import ConfigValueError, at_least, fraction, one_of

POOLINGS = ("flatten", "spatial_softmax")


@dataclass
class ChunkedBCModel:
    """CNN + MLP behaviour cloning with action chunks (vla_kd.policies.mlp_bc)."""

    type: str = "chunked_bc"
    horizon: int = 4  # actions predicted per call, executed open-loop
    hidden: int = 256
    use_image: bool = True
    image_pooling: str = "flatten"  # flatten (NatureCNN) | spatial_softmax (one keypoint per channel)
    #: > 0: also predict the privileged object/goal poses from the image (training only)
    aux_privileged_weight: float = 0.0
    shift_pad: int = 4  # random-shift augmentation (pixels)
    #: proprio indices the model reads (null: all); LIBERO eef position only: [0,1,2]
    state_features: list[int] | None = None

    def __post_init__(self) -> None:
        at_least(self, 1, "horizon", "hidden")
        at_least(self, 0, "shift_pad", "aux_privileged_weight", "state_features")
        one_of(self, "image_pooling", POOLINGS)


@dataclass
class TokenVLAModel:
    """The OpenVLA-style teacher (vla_kd.policies.token_vla): patch tokens + MiniLM instruction
    + proprio -> Llama trunk -> 256-bin action tokens, greedy decoding with a KV cache."""

    type: str = "token_vla"
    horizon: int = 4  # action chunk (4 x 7 tokens), executed open-loop
    #: actions per token step: k > 1 tokenises each k-action mean (horizon/k x 7 tokens)
    action_stride: int = 1
    vision: str = "cnn"  # cnn | efficientnet_lite0 (frozen ImageNet weights)
    patch_grid: int = 4  # 16 image tokens
    hidden: int = 128  # sized to train in minutes on 2 CPU cores; raise on a GPU
    layers: int = 4
    heads: int = 4
    intermediate: int = 256
    kv_heads: int | None = None  # grouped-query attention; null: as many as heads
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    trunk: str = "tiny"  # tiny: random init | smollm2: pretrained (use model=token_vla_smollm2)
    shift_pad: int = 4
    label_sigma: float = 2.0  # Gaussian-smoothed token targets, in bins (0 = plain cross-entropy)
    state_noise: float = 0.1  # training-time proprio noise, in feature std units (see TokenBC)
    token_corruption: float = 0.5  # teacher-forced input action tokens replaced by random bins (see TokenBC)
    #: > 0: also predict the privileged object/goal poses from the image (training only)
    aux_privileged_weight: float = 0.0
    #: observation cameras, each with its own encoder and patch tokens; LIBERO: [rgb, wrist_rgb]
    cameras: list[str] = field(default_factory=lambda: ["rgb"])
    #: proprio indices the model reads (null: all); LIBERO eef position only: [0,1,2]
    state_features: list[int] | None = None

    def __post_init__(self) -> None:
        at_least(self, 1, "horizon", "action_stride", "patch_grid", "hidden", "layers", "heads",
                 "intermediate", "kv_heads")
        at_least(self, 0, "shift_pad", "label_sigma", "state_noise", "aux_privileged_weight",
                 "state_features")
        fraction(self, "token_corruption")
        one_of(self, "vision", ("cnn", "efficientnet_lite0"))
        one_of(self, "trunk", ("tiny", "smollm2"))
        if self.horizon % self.action_stride:
            raise ConfigValueError("action_stride",
                                   f"must divide horizon {self.horizon}, got {self.action_stride}")


@dataclass
class DiffusionExpertModel:
    """The action expert (vla_kd.policies.action_expert): CNN + proprio encoder, diffusion decoder
    over action chunks (DDPM training, DDIM sampling). VITA alignment reuses its decoder."""

    type: str = "diffusion_action_expert"
    horizon: int = 4
    features: int = 256
    image_pooling: str = "flatten"  # flatten (NatureCNN) | spatial_softmax (one keypoint per channel)
    hidden: int = 512
    train_timesteps: int = 100
    inference_steps: int = 10
    shift_pad: int = 4
    #: > 0: also predict the privileged object/goal poses from the image (training only)
    aux_privileged_weight: float = 0.0
    #: what the denoiser predicts: sample (the clean chunk) | epsilon (the noise)
    prediction_type: str = "sample"
    #: each with its own CNN; LIBERO: [rgb, wrist_rgb]
    cameras: list[str] = field(default_factory=lambda: ["rgb"])
    #: proprio indices the model reads (null: all); LIBERO eef position only: [0,1,2]
    state_features: list[int] | None = None

    def __post_init__(self) -> None:
        at_least(self, 1, "horizon", "features", "hidden", "train_timesteps", "inference_steps")
        at_least(self, 0, "shift_pad", "aux_privileged_weight", "state_features")
        one_of(self, "image_pooling", POOLINGS)
        one_of(self, "prediction_type", ("sample", "epsilon"))
        if self.inference_steps > self.train_timesteps:
            raise ConfigValueError("inference_steps",
                                   f"must not exceed train_timesteps ({self.train_timesteps})")


@dataclass
class TactileFlowExpertModel:
    """HapticVLA's teacher (vla_kd.policies.tactile_expert): the action expert's encoder plus a
    tactile token from the fingers' contact forces, a flow-matching decoder over action chunks.
    Needs a dataset recorded with touch (`vla-kd demos tactile=true`); trained with
    `method=tactile method.stage=teacher` (reward-weighted flow matching)."""

    type: str = "tactile_flow_expert"
    horizon: int = 4
    features: int = 256
    image_pooling: str = "flatten"  # flatten (NatureCNN) | spatial_softmax (one keypoint per channel)
    hidden: int = 512
    inference_steps: int = 10  # Euler steps from noise to a chunk
    #: what the decoder predicts: sample (the clean chunk, as the diffusion expert) | velocity
    #: (rectified flow's eps - x0, which underfits 32-action chunks: docs/experiments/tactile.md)
    prediction_type: str = "sample"
    tactile_token_dim: int = 32  # width of the tactile token (what the student learns to predict)
    shift_pad: int = 4
    #: > 0: also predict the privileged object/goal poses from the image (training only)
    aux_privileged_weight: float = 0.0
    cameras: list[str] = field(default_factory=lambda: ["rgb"])
    #: proprio indices the model reads (null: all)
    state_features: list[int] | None = None

    def __post_init__(self) -> None:
        at_least(self, 1, "horizon", "features", "hidden", "inference_steps", "tactile_token_dim")
        at_least(self, 0, "shift_pad", "aux_privileged_weight", "state_features")
        one_of(self, "image_pooling", POOLINGS)
        one_of(self, "prediction_type", ("velocity", "sample"))


#: OpenVLA's prompt; the hf_vla policy writes the discretised proprio tokens after it
OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"


@dataclass
class HFVLAModel:
    """Bring your own VLA (vla_kd.policies.hf_vla): a local Hugging Face image-text-to-text model
    fine-tuned the OpenVLA way (256 action bins on the last vocabulary ids, greedy decoding with
    its KV cache). ``vla-kd make-vlm`` builds a small one."""

    type: str = "hf_vla"
    checkpoint: str | None = None  # the pretrained model's local folder (nothing is downloaded)
    horizon: int = 4  # action chunk (4 x 7 tokens), executed open-loop
    #: observation cameras, each an image through the model's own processor; LIBERO: [rgb, wrist_rgb]
    cameras: list[str] = field(default_factory=lambda: ["rgb"])
    #: proprio indices written into the prompt as bin tokens (null: all)
    state_features: list[int] | None = None
    prompt: str = OPENVLA_PROMPT  # {instruction} is the task's text
    trust_remote_code: bool = False  # run modelling code the folder ships (OpenVLA): only if you trust it
    dtype: str = "float32"  # float32 (CPU) | bfloat16 (a GPU's)
    lora_rank: int = 0  # 0: full fine-tuning; > 0: LoRA adapters of this rank (peft), merged when done
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    #: [all-linear] (every linear layer but the output, as OpenVLA) or module names: [q_proj, v_proj]
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    # training (methods.bc's TokenBC, as for token_vla); 0 = off
    shift_pad: int = 4  # random-shift image augmentation, pixels
    label_sigma: float = 2.0  # Gaussian-smoothed token targets, in bins (0 = OpenVLA's plain cross-entropy)
    state_noise: float = 0.1  # proprio noise before it is binned, in feature std units
    token_corruption: float = 0.5  # teacher-forced input action tokens replaced by random bins
    #: > 0: also predict the privileged object/goal poses from the image features (training only;
    #: a linear head beside the VLM, saved in policy.safetensors)
    aux_privileged_weight: float = 0.0

    def __post_init__(self) -> None:
        at_least(self, 1, "horizon")
        at_least(self, 0, "lora_rank", "shift_pad", "label_sigma", "state_noise", "state_features",
                 "aux_privileged_weight")
        at_least(self, 0.0, "lora_alpha")
        fraction(self, "lora_dropout", "token_corruption")
        one_of(self, "dtype", ("float32", "bfloat16", "float16"))
        if "{instruction}" not in self.prompt:
            raise ConfigValueError("prompt", "must contain {instruction}")


#: model=<option> -> its schema (configs/model/<option>.yaml names ``<type>_schema``)
MODEL_SCHEMAS: dict[str, type] = {
    "chunked_bc": ChunkedBCModel,
    "token_vla": TokenVLAModel,
    "diffusion_action_expert": DiffusionExpertModel,
    "hf_vla": HFVLAModel,
    "tactile_flow_expert": TactileFlowExpertModel,
}
