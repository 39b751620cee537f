"""Hallo audio projection: per-frame windows of wav2vec2 layers to audio tokens."""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


class AudioProjModel(nn.Module):
    """Three-layer MLP (ReLU) from a flattened window to `context_tokens` tokens, then LayerNorm.

    seq_len: frames per window (5); blocks: wav2vec2 layers (12); channels: layer width (768);
    intermediate_dim: MLP width (512); output_dim: token width (768); context_tokens: tokens (32).
    Keys: proj1, proj2, proj3, norm (8 tensors; proj1 input 5 x 12 x 768 = 46,080).
    """

    def __init__(self, seq_len: int = 5, blocks: int = 12, channels: int = 768, intermediate_dim: int = 512,
                 output_dim: int = 768, context_tokens: int = 32) -> None:
        super().__init__()
        self.input_dim = seq_len * blocks * channels
        self.context_tokens = context_tokens
        self.output_dim = output_dim
        self.proj1 = nn.Linear(self.input_dim, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, context_tokens * output_dim)
        self.norm = nn.LayerNorm(output_dim)

    def forward(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """audio_embeds: (B, F, seq_len, blocks, channels) -> (B, F, context_tokens, output_dim)."""
        if audio_embeds.dim() != 5 or audio_embeds[0, 0].numel() != self.input_dim:
            raise ValueError(f"AudioProjModel: expected (B, F, window, layers, width) with window*layers*width = "
                             f"{self.input_dim}, got {tuple(audio_embeds.shape)}")
        batch, frames = audio_embeds.shape[:2]
        hidden = audio_embeds.reshape(batch * frames, self.input_dim)
        hidden = torch.relu(self.proj2(torch.relu(self.proj1(hidden))))
        tokens = self.norm(self.proj3(hidden).reshape(batch * frames, self.context_tokens, self.output_dim))
        return tokens.view(batch, frames, self.context_tokens, self.output_dim)
