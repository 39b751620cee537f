"""Hallo audio modules: per-frame cross-attention to audio tokens, split by full/face/lip region masks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionMasks:
    """Full / face / lip masks at the four UNet depths.

    Each field is a tuple of 4 tensors, depth d (0 = latent resolution, 3 = latent / 8) of shape
    (B*F, h_d * w_d) with values in [0, 1], frames folded into the batch frame-major.
    """

    full: tuple[torch.Tensor, ...]
    face: tuple[torch.Tensor, ...]
    lip: tuple[torch.Tensor, ...]

    @classmethod
    def from_latent_masks(cls, full: torch.Tensor, face: torch.Tensor, lip: torch.Tensor) -> RegionMasks:
        """Build the pyramid from masks at latent resolution by area pooling.

        full, face, lip: (B, F, h, w) or (B, 1, h, w) (shared by all frames) in [0, 1]; h, w divisible by 8.
        Frame counts must agree (or be 1: expanded to the largest).
        """
        masks = [full, face, lip]
        for mask in masks:
            if mask.dim() != 4 or mask.shape[-1] % 8 or mask.shape[-2] % 8:
                raise ValueError(f"RegionMasks: masks must be (B, F, h, w) with h, w divisible by 8, got "
                                 f"{tuple(mask.shape)}")
        frames = max(mask.shape[1] for mask in masks)
        masks = [mask.expand(-1, frames, -1, -1) for mask in masks]
        levels = []
        for mask in masks:
            flat = mask.reshape(-1, 1, *mask.shape[-2:]).float()
            levels.append(tuple(F.avg_pool2d(flat, 2 ** d).flatten(1) if d else flat.flatten(1) for d in range(4)))
        return cls(*levels)

    @classmethod
    def ones(cls, batch_frames: int, height: int, width: int, device=None, dtype=None) -> RegionMasks:
        """All-ones masks (no region split) for (B*F) frames of latent size height x width."""
        level = tuple(torch.ones(batch_frames, (height >> d) * (width >> d), device=device, dtype=dtype)
                      for d in range(4))
        return cls(level, level, level)


class AudioCrossAttentionBlock(nn.Module):
    """Self-attention, three audio cross-attentions (full/face/lip) with zero 1x1 convs, feed-forward.

    dim: token width; heads: attention heads; audio_dim: audio token width (768).
    Keys follow Hallo `AudioTemporalBasicTransformerBlock` with stacked blocks enabled:
    attn1, norm1, attn2_0, attn2_1, attn2_2, norm2, ff, norm3, zero_conv_full, zero_conv_face, zero_conv_lip.
    """

    def __init__(self, dim: int, heads: int, audio_dim: int) -> None:
        super().__init__()
        from diffusers.models.attention import FeedForward
        from diffusers.models.attention_processor import Attention

        head_dim = dim // heads
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=head_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2_0 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=head_dim)
        self.attn2_1 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=head_dim)
        self.attn2_2 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)
        self.zero_conv_full = nn.Conv2d(dim, dim, kernel_size=1)
        self.zero_conv_face = nn.Conv2d(dim, dim, kernel_size=1)
        self.zero_conv_lip = nn.Conv2d(dim, dim, kernel_size=1)
        for conv in (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, tokens: torch.Tensor, audio: torch.Tensor, height: int, width: int,
                masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                weights: tuple[float, float, float] | None) -> torch.Tensor:
        """tokens: (N, h*w, dim) per frame; audio: (N, T, audio_dim) that frame's audio tokens;
        masks: full, face, lip (N, h*w); weights: pose/face/lip scales of the three branches (None = 1).
        Returns (N, h*w, dim)."""
        tokens = self.attn1(self.norm1(tokens)) + tokens
        normed = self.norm2(tokens)
        branches = []
        for attn, conv, mask in ((self.attn2_0, self.zero_conv_full, masks[0]),
                                 (self.attn2_1, self.zero_conv_face, masks[1]),
                                 (self.attn2_2, self.zero_conv_lip, masks[2])):
            out = attn(normed, encoder_hidden_states=audio) * mask[:, :, None].to(normed.dtype)
            out = out.transpose(1, 2).reshape(out.shape[0], -1, height, width)
            branches.append(conv(out).flatten(2).transpose(1, 2))
        scales = weights if weights is not None else (1.0, 1.0, 1.0)
        tokens = tokens + scales[0] * branches[0] + scales[1] * branches[1] + scales[2] * branches[2]
        return self.ff(self.norm3(tokens)) + tokens


class AudioTransformer(nn.Module):
    """GroupNorm, 1x1 conv in, one `AudioCrossAttentionBlock`, 1x1 conv out, residual.

    in_channels: width of the UNet level; inner_dim: attention width (Hallo sets it from the block's
    input width, so it differs from in_channels in the first layer of a widening block); heads;
    audio_dim: audio token width; norm_groups: GroupNorm groups.
    """

    def __init__(self, in_channels: int, inner_dim: int, heads: int, audio_dim: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([AudioCrossAttentionBlock(inner_dim, heads, audio_dim)])
        self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1)

    def forward(self, hidden: torch.Tensor, audio: torch.Tensor,
                masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                weights: Sequence[float] | None = None) -> torch.Tensor:
        """hidden: (B*F, C, h, w); audio: (B*F, T, audio_dim); masks: three (B*F, h*w) -> (B*F, C, h, w)."""
        total, _, height, width = hidden.shape
        if audio.shape[0] != total:
            raise ValueError(f"AudioTransformer: audio tokens for {audio.shape[0]} frames, features for {total}")
        tokens = self.proj_in(self.norm(hidden))
        inner = tokens.shape[1]
        tokens = tokens.permute(0, 2, 3, 1).reshape(total, height * width, inner)
        for block in self.transformer_blocks:
            tokens = block(tokens, audio, height, width, masks, None if weights is None else tuple(weights))
        tokens = tokens.reshape(total, height, width, inner).permute(0, 3, 1, 2)
        return self.proj_out(tokens) + hidden
