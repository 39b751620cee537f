"""AnimateDiff "Vanilla" motion module (temporal self-attention), key-compatible with mm_sd_v15_v2.ckpt."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class TemporalPositionalEncoding(nn.Module):
    """Sinusoidal frame-position table added before a temporal attention.

    channels: token width C; max_len: longest clip (frames, motion frames included).
    The table is a persistent buffer `pe` (1, max_len, C), as stored in the AnimateDiff checkpoints.
    """

    def __init__(self, channels: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
        table = torch.zeros(1, max_len, channels)
        table[0, :, 0::2] = torch.sin(position * frequency)
        table[0, :, 1::2] = torch.cos(position * frequency)
        self.register_buffer("pe", table)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (N, F, C) -> (N, F, C) with the first F rows of the table added."""
        frames = tokens.shape[1]
        if frames > self.pe.shape[1]:
            raise ValueError(f"TemporalPositionalEncoding: {frames} frames but the table holds {self.pe.shape[1]}; "
                             "use shorter clips (frames + motion frames <= motion_max_len)")
        return tokens + self.pe[:, :frames].to(tokens.dtype)


class TemporalSelfAttention(nn.Module):
    """Self-attention along frames at every pixel (AnimateDiff `VersatileAttention`, mode "Temporal").

    channels: width C; heads: attention heads; max_len: positional table length.
    Keys: to_q, to_k, to_v (no bias), to_out.0 (with bias), pos_encoder.pe.
    """

    def __init__(self, channels: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])
        self.pos_encoder = TemporalPositionalEncoding(channels, max_len)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (N, F, C) frame sequences (N = batch x pixels) -> (N, F, C)."""
        tokens = self.pos_encoder(tokens)
        batch, frames, channels = tokens.shape
        head_dim = channels // self.heads
        query, key, value = (proj(tokens).view(batch, frames, self.heads, head_dim).transpose(1, 2)
                             for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(batch, frames, channels)
        return self.to_out[1](self.to_out[0](out))


class TemporalTransformerBlock(nn.Module):
    """Pre-norm temporal self-attentions then a GEGLU feed-forward (keys attention_blocks, norms, ff, ff_norm).

    channels: width C; heads: attention heads; attention_blocks: number of temporal self-attentions;
    max_len: positional table length.
    """

    def __init__(self, channels: int, heads: int, attention_blocks: int, max_len: int) -> None:
        super().__init__()
        from diffusers.models.attention import FeedForward

        self.attention_blocks = nn.ModuleList(TemporalSelfAttention(channels, heads, max_len)
                                              for _ in range(attention_blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(attention_blocks))
        self.ff = FeedForward(channels, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (N, F, C) -> (N, F, C)."""
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            tokens = attention(norm(tokens)) + tokens
        return self.ff(self.ff_norm(tokens)) + tokens


class TemporalTransformer3D(nn.Module):
    """GroupNorm, linear in, temporal blocks, linear out, residual (AnimateDiff `TemporalTransformer3DModel`).

    channels: width C; heads; attention_blocks; max_len; norm_groups: GroupNorm groups (32 in AnimateDiff).
    """

    def __init__(self, channels: int, heads: int, attention_blocks: int, max_len: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, attention_blocks, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, hidden: torch.Tensor, frames: int) -> torch.Tensor:
        """hidden: (B*F, C, H, W) frames folded into the batch, frame-major per sample -> same shape."""
        total, channels, height, width = hidden.shape
        if total % frames:
            raise ValueError(f"TemporalTransformer3D: batch {total} is not a multiple of {frames} frames")
        batch = total // frames
        # 1. normalise per frame, tokens per pixel
        tokens = self.norm(hidden).permute(0, 2, 3, 1).reshape(total, height * width, channels)
        tokens = self.proj_in(tokens)
        # 2. sequences along frames: (B*F, HW, C) -> (B*HW, F, C)
        tokens = tokens.view(batch, frames, height * width, channels).transpose(1, 2)
        tokens = tokens.reshape(batch * height * width, frames, channels)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        # 3. back to (B*F, C, H, W), residual
        tokens = self.proj_out(tokens).view(batch, height * width, frames, channels).transpose(1, 2)
        tokens = tokens.reshape(total, height, width, channels).permute(0, 3, 1, 2)
        return tokens + hidden


class VanillaTemporalModule(nn.Module):
    """AnimateDiff "Vanilla" motion module: one `temporal_transformer` (keys as in mm_sd_v15_v2.ckpt).

    channels: width C of the UNet level; heads: 8; attention_blocks: 2 ("Temporal_Self" x 2);
    max_len: 32 for v2; norm_groups: 32. `proj_out` starts at zero so a fresh module is the identity.
    """

    def __init__(self, channels: int, heads: int = 8, attention_blocks: int = 2, max_len: int = 32,
                 norm_groups: int = 32) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer3D(channels, heads, attention_blocks, max_len, norm_groups)
        nn.init.zeros_(self.temporal_transformer.proj_out.weight)
        nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden: torch.Tensor, frames: int) -> torch.Tensor:
        """hidden: (B*F, C, H, W) -> (B*F, C, H, W)."""
        return self.temporal_transformer(hidden, frames)
