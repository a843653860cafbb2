"""A Hugging Face VLM's decoding session: its prompt in the model's own KV cache, extended by action
tokens (greedy steps, Jacobi windows) and rewound; the attention mask and the positions follow
the cache, so left-padded rows decode as they would alone."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

from vla_kd.policies.token_policy import DecodingSession

if TYPE_CHECKING:  # the policy imports this module
    from vla_kd.policies.hf_vla import HFVLA


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding (what ``generate`` derives from the mask)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


class VLMSession(DecodingSession):
    """A VLM's prompt in its own KV cache; the attention mask and positions follow the cache."""

    def __init__(self, policy: HFVLA, cache: DynamicCache, attention_mask: torch.Tensor) -> None:
        self.policy, self.cache, self.mask = policy, cache, attention_mask
        self.next_position = positions(attention_mask)[:, -1] + 1

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        k = tokens.shape[1]
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)], dim=1)
        position_ids = self.next_position[:, None] + torch.arange(k, device=tokens.device)
        inputs = {"input_ids": self.policy.bin_token_ids(tokens), "attention_mask": self.mask}
        out = self.policy.forward_model(inputs, position_ids, past_key_values=self.cache, use_cache=True)
        self.next_position = self.next_position + k
        return self.policy.bin_logits(out.logits)

    def rewind(self, k: int) -> None:
        self.cache.crop(-k)
        self.mask = self.mask[:, :-k]
        self.next_position = self.next_position - k

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask, self.next_position = self.mask[rows], self.next_position[rows]
