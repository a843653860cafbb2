"""One position of a Hugging Face VLM's prompt that carries a continuous embedding instead of a
vocabulary token (HapticVLA's predicted tactile token in an ``hf_vla`` student).

The prompt stays a dict of ``input_ids`` (with a placeholder id at that position), so every path
that extends, slices or caches prompts works unchanged; two more keys carry the embedding and its
position until :func:`model_inputs` turns the dict into the ``inputs_embeds`` the model takes.
Transformers' VLMs find their image positions by the image token's embedding when given
``inputs_embeds``, so the images are merged as they are for ``input_ids``.
"""
from __future__ import annotations

import torch
from torch import nn

EMBEDDING, POSITION = "prompt_embedding", "prompt_embedding_position"


def append_embedding(inputs: dict, embedding: torch.Tensor, placeholder: torch.Tensor, extend) -> dict:
    """``inputs`` extended (by ``extend``, the policy's) with ``placeholder`` ids ``(B, 1)`` whose
    position will carry ``embedding`` ``(B, hidden)``."""
    out = extend(inputs, placeholder, prefix=True)
    out[EMBEDDING] = embedding[:, None]
    out[POSITION] = torch.full((len(embedding),), out["input_ids"].shape[1] - 1, device=embedding.device)
    return out


def model_inputs(inputs: dict, embeddings: nn.Module) -> dict:
    """``inputs`` as the model's forward takes them: unchanged without an embedding, else
    ``inputs_embeds`` from ``embeddings`` (the model's input embedding layer) with the carried
    embedding at its position."""
    if EMBEDDING not in inputs:
        return inputs
    out = {k: v for k, v in inputs.items() if k not in ("input_ids", EMBEDDING, POSITION)}
    ids = inputs["input_ids"]
    embeds = embeddings(ids)
    at_position = torch.arange(ids.shape[1], device=ids.device)[None] == inputs[POSITION][:, None]
    out["inputs_embeds"] = torch.where(at_position[..., None], inputs[EMBEDDING].to(embeds.dtype), embeds)
    return out
