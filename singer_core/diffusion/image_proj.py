"""Hallo/IP-Adapter image projection: a face identity embedding to cross-attention tokens."""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


class ImageProjModel(nn.Module):
    """Linear map of one embedding to `clip_extra_context_tokens` tokens, then LayerNorm.

    cross_attention_dim: token width (768); clip_embeddings_dim: embedding width (512, ArcFace);
    clip_extra_context_tokens: tokens (4). Keys: proj, norm (4 tensors).
    """

    def __init__(self, cross_attention_dim: int = 768, clip_embeddings_dim: int = 512,
                 clip_extra_context_tokens: int = 4) -> None:
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.clip_extra_context_tokens = clip_extra_context_tokens
        self.proj = nn.Linear(clip_embeddings_dim, clip_extra_context_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """image_embeds: (B, clip_embeddings_dim) (or (B, 1, D)) -> (B, tokens, cross_attention_dim)."""
        tokens = self.proj(image_embeds).reshape(-1, self.clip_extra_context_tokens, self.cross_attention_dim)
        return self.norm(tokens)
