"""The token-teacher protocol: what every policy that emits OpenVLA-style action tokens offers the
distillation methods, whatever its architecture (the suite's TokenVLA, a Hugging Face VLM).

A chunk of ``horizon`` actions is ``horizon // action_stride * action_dim`` tokens, each one of
``n_bins`` bins. A subclass supplies the model-specific parts: :meth:`encode` (the observation as
the model's prompt), :meth:`token_logits` (teacher-forced bin logits, optionally with hidden
states), :meth:`start_decoding` (the prompt through the model into its own KV cache) and
``decoder_layers``. Everything built on those is shared here: greedy decoding over the cache,
Jacobi decoding (:mod:`vla_kd.nn.jacobi`), tokens <-> actions, and acting.
"""
from __future__ import annotations

import abc
import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vla_kd.errors import unknown_name
from vla_kd.nn.jacobi import EarlyExit, jacobi_decode
from vla_kd.policies.base import views_by_camera
from vla_kd.policies.pretrained import ChunkedPolicy

#: one camera's uint8 ``(B, H, W, 3)`` frames, or several cameras' by name
CameraImages = torch.Tensor | dict[str, torch.Tensor]
DECODINGS = ("greedy", "jacobi")


@dataclass(frozen=True)
class TrunkShape:
    """The decoder's sizes, what FLOP counts and layer adapters read."""

    hidden: int
    intermediate: int
    heads: int
    key_value_heads: int
    layers: int


class DecodingSession(abc.ABC):
    """A prompt held in a model's KV cache, extended by action tokens and rewound again."""

    @property
    @abc.abstractmethod
    def length(self) -> int:
        """Positions held in the cache (the prompt's, plus tokens stepped and not rewound)."""

    @abc.abstractmethod
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``(B, k)`` action tokens; the bin logits ``(B, k, n_bins)`` each predicts next."""

    @abc.abstractmethod
    def rewind(self, k: int) -> None:
        """Drop the last ``k`` stepped tokens from the cache."""

    @abc.abstractmethod
    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (indices) from here on."""


class TokenPolicy(ChunkedPolicy):
    """An action-token policy; see the module docstring for what a subclass supplies. Its
    ``config`` has ``horizon``, ``action_stride``, ``action_dim``, ``n_bins``, ``cameras`` and
    the decoding fields (``decoding``, ``jacobi_init``, ``exit_*``); ``self.tokenizer`` is the
    :class:`~vla_kd.nn.action_tokenizer.ActionTokenizer` of its action bins."""

    cameras: tuple[str, ...]

    @abc.abstractmethod
    def encode(self, rgb: CameraImages, state: torch.Tensor, instructions: list[str]) -> tuple[Any, Any]:
        """(the encoded prompt, which :meth:`token_logits` takes as ``prefix``; an image summary
        ``(B, hidden)`` for an auxiliary head, or None)."""

    @abc.abstractmethod
    def token_logits(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], tokens: torch.Tensor,
        output_hidden_states: bool = False, prefix: Any = None,
    ):
        """Teacher-forced bin logits ``(B, n, n_bins)`` for target ``tokens`` ``(B, n)`` (and the
        decoder's hidden states over the whole sequence when ``output_hidden_states``)."""

    @abc.abstractmethod
    def start_decoding(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], prefix: Any = None
    ) -> tuple[DecodingSession, torch.Tensor]:
        """(a session holding the prompt in the KV cache, the first token's bin logits ``(B, n_bins)``);
        ``prefix``: the prompt as :meth:`encode` gave it, when the caller has it already."""

    @property
    @abc.abstractmethod
    def layer_container(self) -> torch.nn.Module:
        """The decoder module whose forward loops over its ``layers`` (layer skipping swaps them)."""

    @property
    @abc.abstractmethod
    def trunk_shape(self) -> TrunkShape:
        """The decoder's sizes."""

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        """The decoder layers the action tokens run through."""
        return self.layer_container.layers

    @abc.abstractmethod
    def hidden_after_prompt(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], extra: torch.Tensor
    ) -> torch.Tensor:
        """The decoder's last hidden states ``(B, k, hidden)`` of ``extra`` embeddings
        ``(B, k, hidden)`` placed right after the observation's prompt (where the action tokens
        would start): how an aligned student reads the VLM (VITA-VLA)."""

    @property
    @abc.abstractmethod
    def vision_modules(self) -> list[torch.nn.Module]:
        """The image encoder and what carries its features into the prompt."""

    @abc.abstractmethod
    def fresh_copy(self) -> TokenPolicy:
        """The same architecture and bins with newly initialised weights (a from-scratch baseline)."""

    def prefix_rows(self, prefix: Any, rows: torch.Tensor) -> Any:
        """The batch rows ``rows`` of an encoded prompt."""
        return prefix[rows]

    def copy_with(self, **settings: Any) -> TokenPolicy:
        """A trainable copy of this policy (same architecture and weights) with other config
        ``settings`` (e.g. how it decodes): the student of a method that starts from its teacher."""
        student = copy.deepcopy(self)
        student.config = dataclasses.replace(self.config, **settings)
        return student.train().requires_grad_(True)

    # ------------------------------------------------------------- observations
    def camera_input(self, source: dict) -> CameraImages:
        """What ``encode`` reads, from an observation (key ``<camera>``) or a dataset batch
        (``observation.images.<camera>``): the one camera's tensor, or a dict for several."""
        keys = {name: name if name in source else f"observation.images.{name}" for name in self.cameras}
        views = views_by_camera({n: torch.as_tensor(source[k]) for n, k in keys.items() if k in source},
                                self.cameras, type(self).__name__)
        return views if len(views) > 1 else views[self.cameras[0]]

    # ------------------------------------------------------------- tokens <-> actions
    @property
    def n_action_tokens(self) -> int:
        return self.config.horizon // self.config.action_stride * self.config.action_dim

    def _token_steps(self, actions: torch.Tensor) -> torch.Tensor:
        """``(B, horizon, 7)`` actions -> ``(B, horizon // stride, 7)``, each the mean of its
        ``action_stride`` actions (padding repeats an episode's last action, so a block that
        runs past the end averages real actions with copies of the last)."""
        stride = self.config.action_stride
        return actions.unflatten(1, (-1, stride)).mean(2) if stride > 1 else actions

    def action_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """A chunk of ``(B, horizon, 7)`` actions as its ``(B, n_action_tokens)`` target tokens."""
        return self.tokenizer.encode(self._token_steps(actions)).flatten(1)

    def action_soft_targets(self, actions: torch.Tensor, sigma: float) -> torch.Tensor:
        """Gaussian-smoothed targets ``(B, n_action_tokens, n_bins)`` of ``action_tokens``."""
        return self.tokenizer.soft_targets(self._token_steps(actions), sigma).flatten(1, 2)

    def token_keep(self, action_is_pad: torch.Tensor) -> torch.Tensor:
        """``(B, n_action_tokens)`` float mask: 1 where a token step holds at least one real
        (unpadded) action of the chunk."""
        first_of_block = action_is_pad[:, :: self.config.action_stride]
        return (~first_of_block).repeat_interleave(self.config.action_dim, dim=1).float()

    def tokens_to_actions(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, k * 7)`` tokens -> ``(B, k * action_stride, 7)`` actions, each token step's
        action repeated ``action_stride`` times."""
        shaped = tokens.view(len(tokens), -1, self.config.action_dim)
        return self.tokenizer.decode(shaped).repeat_interleave(self.config.action_stride, dim=1)

    # ------------------------------------------------------------- decoding
    @torch.no_grad()
    def generate_tokens(
        self, rgb: CameraImages, state: torch.Tensor, instructions: list[str], n_tokens: int | None = None
    ) -> torch.Tensor:
        """Greedy autoregressive decoding with the model's KV cache: ``(B, n_tokens)`` tokens (all
        ``n_action_tokens`` by default; decoding is causal, so a prefix is the full decode's)."""
        session, logits = self.start_decoding(rgb, state, instructions)
        tokens = [logits.argmax(-1)]
        for _ in range(1, n_tokens or self.n_action_tokens):
            tokens.append(session.step(tokens[-1][:, None])[:, -1].argmax(-1))
        return torch.stack(tokens, dim=1)

    def decode_tokens(self, rgb: CameraImages, state: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """All action tokens by the configured decoder; Jacobi's pass count goes to
        ``self.last_iterations``."""
        c = self.config
        if c.decoding == "greedy":
            self.last_iterations = self.n_action_tokens
            return self.generate_tokens(rgb, state, instructions)
        if c.decoding != "jacobi":
            raise unknown_name("decoding", c.decoding, DECODINGS)
        rule = EarlyExit(c.exit_max_changed, c.exit_max_bin_change, c.exit_max_iterations)
        result = jacobi_decode(self, rgb, state, instructions, init=c.jacobi_init, early_exit=rule)
        self.last_iterations = result.iterations
        return result.tokens

    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        state = torch.as_tensor(obs["state"])
        tokens = self.decode_tokens(self.camera_input(obs), state, list(obs["instruction"]))
        return self.tokens_to_actions(tokens).clamp(-1, 1).numpy()

    def predict_first_action(self, obs: dict) -> np.ndarray:
        """``(B, 7)``: the first action of the chunk ``predict_action_chunk`` would return,
        decoding only its 7 tokens (what a distillation label needs)."""
        state = torch.as_tensor(obs["state"])
        tokens = self.generate_tokens(self.camera_input(obs), state, list(obs["instruction"]),
                                      n_tokens=self.config.action_dim)
        return self.tokens_to_actions(tokens)[:, 0].clamp(-1, 1).numpy()
