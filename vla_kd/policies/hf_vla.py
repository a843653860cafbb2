"""``hf_vla``: any local Hugging Face image-text-to-text model turned into an action model the
OpenVLA way.

* Actions: each dimension normalised by the dataset's 1st/99th percentiles into 256 uniform
  bins; bin ``k`` is vocabulary id ``action_vocab_end - 1 - k`` (the last 256 ids of the
  tokenizer's base vocabulary, as OpenVLA). A chunk of ``horizon`` actions is
  ``horizon x 7`` tokens after the prompt, decoded greedily with the model's own KV cache.
* Prompt: the camera image(s) through the model's own processor, then OpenVLA's instruction
  text, then the proprio *as tokens*: each chosen state feature, normalised by its own 1st/99th
  percentiles, written as one of the same 256 bin tokens (as pi0.5 and FAST write their
  discretised state into the prompt). No weights are added to the model, so the folder it is
  saved to stays an ordinary Hugging Face folder.
* Optionally (``aux_state_dim > 0``, training only) a linear head on the mean of the model's
  projected image features predicts the frame's object/goal poses, as the TokenVLA's auxiliary
  head: on a few dozen demonstrations it makes the image tokens carry where the cube and the
  goal are, which the proprio tokens cannot tell. It is the policy's own tensor, not the VLM's.

A saved policy is the suite's ``config.json`` and ``policy.safetensors`` (bins, added layers) beside the
model's own ``save_pretrained`` folder ``vlm/`` (and, while LoRA adapters are not yet merged,
peft's ``vlm_adapter/``).
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DynamicCache

from vla_kd.envs.base import ACTION_DIM
from vla_kd.errors import UserError
from vla_kd.nn.action_tokenizer import ActionTokenizer
from vla_kd.nn.normalization import Standardizer
from vla_kd.policies.base import views_by_camera
from vla_kd.policies.hf_checkpoint import action_vocab_end, load_vlm
from vla_kd.policies.model_configs import OPENVLA_PROMPT
from vla_kd.policies.pretrained import CONFIG_NAME, read_config
from vla_kd.policies.prompt_embedding import append_embedding, model_inputs
from vla_kd.policies.token_policy import CameraImages, DecodingSession, TokenPolicy, TrunkShape
from vla_kd.policies.vlm_session import VLMSession, positions

#: the policy's own tensors beside the VLM: action/proprio bins, and a student's added layers
OWN_WEIGHTS = "policy.safetensors"
VLM_FOLDER, ADAPTER_FOLDER = "vlm", "vlm_adapter"


@dataclass
class HFVLAConfig:
    """How a Hugging Face VLM reads observations and writes actions."""

    state_dim: int
    horizon: int = 4
    action_stride: int = 1
    action_dim: int = ACTION_DIM
    n_bins: int = 256
    cameras: tuple[str, ...] = ("rgb",)
    image_size: int = 128  # the camera frames it was fine-tuned on
    #: proprio features written into the prompt (indices into ``state``); None: all
    state_features: tuple[int, ...] | None = None
    prompt: str = OPENVLA_PROMPT  # ``{instruction}`` is the task's; the state tokens follow it
    #: one past the id of bin 0 (OpenVLA: the tokenizer's base vocabulary size)
    action_vocab_end: int = 0
    architecture: str = ""  # the transformers class, as read from the folder (for the record)
    trust_remote_code: bool = False  # only a user may switch it on, for a folder they trust
    dtype: str = "float32"  # float32 | bfloat16 (a GPU's)
    lora_rank: int = 0  # > 0: fine-tune LoRA adapters of this rank (peft) instead of every weight
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    #: modules given adapters: peft's "all-linear" (every linear layer but the output, as OpenVLA's
    #: LoRA fine-tune) or module names such as q_proj, v_proj
    lora_targets: tuple[str, ...] = ("all-linear",)
    decoding: str = "greedy"  # greedy | jacobi (vla_kd.nn.jacobi)
    jacobi_init: str = "repeat"
    exit_max_changed: int | None = None
    exit_max_bin_change: int | None = None
    exit_max_iterations: int | None = None
    #: width of the privileged vector (object/goal poses) that an auxiliary head predicts from
    #: the image features while training; 0: no head
    aux_state_dim: int = 0
    #: width of the tactile token it predicts from the image features and proprio (HapticVLA's
    #: student, vla_kd.methods.tactile); the token's embedding enters the prompt after the state
    #: tokens, in place of one placeholder id; 0: none
    tactile_token_dim: int = 0

    @property
    def state_tokens(self) -> int:
        return len(self.state_features) if self.state_features is not None else self.state_dim


class HFVLA(TokenPolicy):
    """A transformers VLM (``self.vlm``, wrapped by peft while LoRA trains) as a token policy."""

    policy_type = "hf_vla"
    config_class = HFVLAConfig

    def __init__(self, config: HFVLAConfig, vlm: nn.Module, processor) -> None:
        super().__init__(config)
        self.vlm, self.processor = vlm, processor
        self.cameras = tuple(config.cameras)
        self.tokenizer = ActionTokenizer(config.action_dim, config.n_bins)
        self.state_bins = ActionTokenizer(config.state_dim, config.n_bins)
        self.state_norm = Standardizer(config.state_dim, config.state_features)  # noise scale only
        self.register_buffer("bin_ids", config.action_vocab_end - 1 - torch.arange(config.n_bins),
                             persistent=False)
        #: the arguments its forward takes by name (architectures differ: token_type_ids, ...)
        self.accepted_inputs = set(inspect.signature(self.hf_model.forward).parameters)
        self.prefix_length = 0
        width = self.hf_model.config.get_text_config().hidden_size
        if config.aux_state_dim:
            self.aux_head = nn.Linear(width, config.aux_state_dim)
            self.aux_norm = Standardizer(config.aux_state_dim)
        if config.tactile_token_dim:
            self.tactile_head = nn.Sequential(nn.Linear(width + config.state_dim, width), nn.GELU(),
                                              nn.Linear(width, config.tactile_token_dim))
            self.tactile_proj = nn.Linear(config.tactile_token_dim, width)

    # ------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(cls, folder: str | Path, config: HFVLAConfig) -> HFVLA:
        """A fresh policy around a user's pretrained VLM folder (to be fine-tuned)."""
        vlm, processor = load_vlm(folder, config.trust_remote_code, config.dtype)
        end = action_vocab_end(processor, vlm, folder, config.n_bins)
        config = dataclasses.replace(config, action_vocab_end=end, architecture=type(vlm).__name__)
        policy = cls(config, vlm, processor)
        if config.lora_rank:
            policy.add_lora()
        return policy

    def add_lora(self) -> None:
        """Wrap the VLM in peft LoRA adapters of ``config.lora_rank`` (its weights freeze)."""
        # optional: peft, only when LoRA is asked for
        from peft import LoraConfig, get_peft_model

        c = self.config
        targets = "all-linear" if list(c.lora_targets) == ["all-linear"] else list(c.lora_targets)
        lora = LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                          target_modules=targets)
        try:
            self.vlm = get_peft_model(self.vlm, lora)
        except ValueError as err:
            first_line = str(err).splitlines()[0]
            raise UserError(f"hf_vla: LoRA cannot target {list(c.lora_targets)}: {first_line}") from None

    def merge_lora(self) -> None:
        """Fold trained LoRA adapters into the weights (a plain VLM again, as fast as before)."""
        if self.hf_model is not self.vlm:
            self.vlm = self.vlm.merge_and_unload()
            self.config = dataclasses.replace(self.config, lora_rank=0)

    @property
    def hf_model(self) -> nn.Module:
        """The transformers model itself (inside peft's wrapper while LoRA trains)."""
        return self.vlm.get_base_model() if hasattr(self.vlm, "get_base_model") else self.vlm

    def set_normalization(
        self, state_stats: dict, actions: np.ndarray, states: np.ndarray, aux_stats: dict | None = None
    ) -> None:
        """Fit the action and proprio bins (1st/99th percentiles), the proprio noise scale and,
        given ``aux_stats``, the auxiliary head's target standardiser."""
        self.tokenizer.fit(torch.as_tensor(actions))
        self.state_bins.fit(torch.as_tensor(states))
        self.state_norm.fit(state_stats)
        if self.config.aux_state_dim and aux_stats is not None:
            self.aux_norm.fit(aux_stats)

    # ------------------------------------------------------------- prompt
    def prompt(self, rgb: CameraImages, state: torch.Tensor, instructions: list[str]) -> dict:
        """The model inputs: images and instruction through the processor (rows left-padded to
        one length), then the state tokens."""
        views = views_by_camera(rgb, self.cameras, "hf_vla")
        frames = {name: torch.as_tensor(v).cpu().numpy() for name, v in views.items()}
        image_token = getattr(self.processor, "image_token", "<image>")
        texts = [image_token * len(self.cameras) + self.config.prompt.format(instruction=text)
                 for text in instructions]
        images = [[frames[name][i] for name in self.cameras] for i in range(len(texts))]
        try:
            encoded = self.processor(text=texts, images=images, return_tensors="pt", padding=True,
                                     padding_side="left")
        except (ValueError, TypeError) as err:
            raise UserError(f"hf_vla: the model's processor cannot take the cameras "
                            f"{list(self.cameras)}: {str(err).splitlines()[0]}") from None
        inputs = {k: v for k, v in encoded.items() if k in self.accepted_inputs and k != "labels"}
        device = self.bin_ids.device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.hf_model.dtype)
        state_ids = self.bin_token_ids(self.state_bins.encode(state.to(device)))
        if self.config.state_features is not None:
            state_ids = state_ids[:, list(self.config.state_features)]
        return self.extend(inputs, state_ids, prefix=True)

    def bin_token_ids(self, bins: torch.Tensor) -> torch.Tensor:
        """Bins ``[0, n_bins)`` -> vocabulary ids (bin ``k`` is ``action_vocab_end - 1 - k``)."""
        return self.bin_ids[bins.long()]

    @staticmethod
    def extend(inputs: dict, ids: torch.Tensor, prefix: bool) -> dict:
        """``inputs`` with ``ids`` appended (attended; of the prefix or, for PaliGemma's prefix-LM
        mask, of the causal suffix)."""
        out = dict(inputs)
        out["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)
        out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(ids)], dim=1)
        if "token_type_ids" in inputs:
            kind = torch.zeros_like(ids) if prefix else torch.ones_like(ids)
            out["token_type_ids"] = torch.cat([inputs["token_type_ids"], kind], dim=1)
        return out

    def bin_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The vocabulary logits of the action ids, as ``(..., n_bins)`` in bin order."""
        return logits.index_select(-1, self.bin_ids).float()

    def forward_model(self, inputs: dict, position_ids: torch.Tensor | None = None, **kwargs):
        """The VLM's forward; positions from the attention mask (left padding skipped) unless
        given, and only to a model that takes them."""
        if "position_ids" in self.accepted_inputs:
            if position_ids is None:
                position_ids = positions(inputs["attention_mask"])
            kwargs["position_ids"] = position_ids
        return self.vlm(**model_inputs(inputs, self.hf_model.get_input_embeddings()), **kwargs)

    def predicted_tactile(self, image_summary: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``(B, tactile_token_dim)``: the tactile token predicted from the image summary (of
        :meth:`encode`) and proprio, as the prompt carries it."""
        return self.tactile_head(torch.cat([image_summary, self.state_norm(state)], dim=-1))

    def own_state(self) -> dict[str, torch.Tensor]:
        """The tensors that are the policy's own, not the VLM's: the bins, a student's added layers."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("vlm.")}

    # ------------------------------------------------------------- the protocol
    def encode(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str]
    ) -> tuple[dict, torch.Tensor | None]:
        inputs = self.prompt(rgb, state, instructions)
        c = self.config
        # the auxiliary head's input only while it trains, the tactile head's always: each runs
        # the vision tower once more
        summary = None
        if c.tactile_token_dim or (c.aux_state_dim and self.training):
            summary = self.image_summary(inputs)
        if c.tactile_token_dim:  # its embedding in place of one placeholder id after the state tokens
            token = self.predicted_tactile(summary, state.to(summary.device))
            placeholder = self.bin_token_ids(torch.zeros_like(token[:, :1], dtype=torch.long))
            inputs = append_embedding(inputs, self.tactile_proj(token), placeholder, self.extend)
        return inputs, summary

    def image_summary(self, inputs: dict) -> torch.Tensor:
        """The mean of each row's projected image features ``(B, text hidden)``, from the model's
        own ``get_image_features``."""
        extra = {k: inputs[k] for k in ("pixel_attention_mask",) if k in inputs}
        features = self.hf_model.get_image_features(inputs["pixel_values"], **extra)
        features = getattr(features, "pooler_output", features)
        if isinstance(features, (list, tuple)):  # Idefics3: one (tokens, hidden) per row
            return torch.stack([f.mean(0) for f in features]).float()
        rows = len(inputs["input_ids"])  # PaliGemma: (rows x cameras, tokens, hidden)
        return features.reshape(rows, -1, features.shape[-1]).mean(1).float()

    def token_logits(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], tokens: torch.Tensor,
        output_hidden_states: bool = False, prefix: dict | None = None,
    ):
        if prefix is None:
            prefix = self.encode(rgb, state, instructions)[0]
        inputs = self.extend(prefix, self.bin_token_ids(tokens[:, :-1]), prefix=False)
        extra = {"logits_to_keep": tokens.shape[1]} if "logits_to_keep" in self.accepted_inputs else {}
        out = self.forward_model(inputs, output_hidden_states=output_hidden_states, **extra)
        logits = self.bin_logits(out.logits[:, -tokens.shape[1]:])
        return (logits, out.hidden_states) if output_hidden_states else logits

    def start_decoding(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], prefix: dict | None = None
    ) -> tuple[DecodingSession, torch.Tensor]:
        inputs = self.encode(rgb, state, instructions)[0] if prefix is None else prefix
        cache = DynamicCache()
        out = self.forward_model(inputs, past_key_values=cache, use_cache=True)
        self.prefix_length = inputs["input_ids"].shape[1]  # the last prompt's, for FLOP counts
        session = VLMSession(self, cache, inputs["attention_mask"])
        return session, self.bin_logits(out.logits[:, -1])

    def prefix_rows(self, prefix: dict, rows: torch.Tensor) -> dict:
        batch = len(prefix["input_ids"])
        out = {}
        for key, value in prefix.items():
            if value.shape[0] != batch:  # images of all rows in one stack (PaliGemma's pixel_values)
                value = value.unflatten(0, (batch, -1))[rows].flatten(0, 1)
            else:
                value = value[rows]
            out[key] = value
        return out

    @property
    def layer_container(self) -> nn.Module:
        return self.hf_model.get_decoder()

    def hidden_after_prompt(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], extra: torch.Tensor
    ) -> torch.Tensor:
        # The prompt (images merged by the model itself) into the cache, then the extra
        # embeddings after it: one generic path for every architecture.
        inputs = self.encode(rgb, state, instructions)[0]
        backbone = self.hf_model.model
        cache = DynamicCache()
        backbone(**model_inputs(inputs, self.hf_model.get_input_embeddings()),
                 position_ids=positions(inputs["attention_mask"]), past_key_values=cache, use_cache=True)
        mask = torch.cat([inputs["attention_mask"], torch.ones(extra.shape[:2], dtype=torch.long,
                                                               device=extra.device)], dim=1)
        position_ids = positions(mask)[:, -extra.shape[1]:]
        out = backbone(inputs_embeds=extra.to(self.hf_model.dtype), attention_mask=mask,
                       position_ids=position_ids, past_key_values=cache, use_cache=True)
        return out.last_hidden_state.float()

    @property
    def vision_modules(self) -> list[nn.Module]:
        backbone = self.hf_model.model
        names = ("vision_model", "vision_tower", "connector", "multi_modal_projector")
        return [getattr(backbone, name) for name in names if hasattr(backbone, name)]

    def fresh_copy(self) -> HFVLA:
        fresh = type(self.hf_model)(self.hf_model.config)
        policy = type(self)(self.config, fresh, self.processor)
        policy.load_state_dict(self.own_state(), strict=False)
        return policy

    @property
    def trunk_shape(self) -> TrunkShape:
        text = self.hf_model.config.get_text_config()
        heads = text.num_attention_heads
        return TrunkShape(text.hidden_size, text.intermediate_size, heads,
                          getattr(text, "num_key_value_heads", None) or heads, text.num_hidden_layers)

    # ------------------------------------------------------------- save / load
    def write_weights(self, folder: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.own_state().items()}, str(folder / OWN_WEIGHTS))
        model = self.hf_model
        if model is not self.vlm:  # LoRA: the frozen base weights under their own names, and the adapter
            base = {k.replace(".base_layer.", "."): v
                    for k, v in model.state_dict().items() if "lora_" not in k}
            model.save_pretrained(folder / VLM_FOLDER, state_dict=base)
            self.vlm.save_pretrained(folder / ADAPTER_FOLDER)
        else:
            model.save_pretrained(folder / VLM_FOLDER)
        self.processor.save_pretrained(folder / VLM_FOLDER)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> HFVLA:
        folder = Path(folder)
        saved = read_config(folder)
        if saved["policy_type"] != cls.policy_type:
            raise UserError(f"'{folder}' holds a '{saved['policy_type']}' policy, not '{cls.policy_type}'")
        try:
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()}
            config = cls.config_class(**fields)
        except TypeError as err:
            raise UserError(f"'{folder / CONFIG_NAME}' does not fit HFVLA: {err}") from None
        vlm, processor = load_vlm(folder / VLM_FOLDER, config.trust_remote_code, config.dtype)
        policy = cls(config, vlm, processor)
        adapter = folder / ADAPTER_FOLDER
        if adapter.is_dir():
            # optional: peft, only for a folder saved while LoRA adapters were training
            from peft import PeftModel

            policy.vlm = PeftModel.from_pretrained(vlm, str(adapter), is_trainable=True)
        path = folder / OWN_WEIGHTS
        try:
            own = load_file(str(path))
        except Exception as err:  # safetensors raises several error types for a bad file
            raise UserError(f"'{path}' is missing or corrupt: {err}") from None
        expected = set(policy.own_state())
        if set(own) != expected:
            differing = sorted(set(own) ^ expected)[:3]
            raise UserError(f"'{path}' does not match the policy (differs in {differing})")
        policy.load_state_dict(own, strict=False)
        return policy.eval()
