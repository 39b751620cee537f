"""Hallo face locator: strided convolutions turning a face-region mask image into latent-size features."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class FaceLocator(nn.Module):
    """Conv stack from a face mask image to features added after the denoising UNet's conv_in.

    conditioning_embedding_channels: output width (320 = first UNet block); conditioning_channels: mask
    image channels (3); block_out_channels: widths; each step after the first halves the resolution
    (3 halvings: 512 px -> 64 latent). Keys: conv_in, blocks.0..5, conv_out (16 tensors at full size).
    conv_out starts at zero, so a fresh locator adds nothing.
    """

    def __init__(self, conditioning_embedding_channels: int = 320, conditioning_channels: int = 3,
                 block_out_channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        widths = list(block_out_channels)
        self.conv_in = nn.Conv2d(conditioning_channels, widths[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            self.blocks.append(nn.Conv2d(width_in, width_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(width_in, width_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(widths[-1], conditioning_embedding_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        """conditioning: (B, C, F, H, W) mask video (or (B, C, H, W) one image) -> (B, E, F, H/8, W/8)."""
        video = conditioning.dim() == 5
        if not video:
            conditioning = conditioning[:, :, None]
        if conditioning.dim() != 5:
            raise ValueError(f"FaceLocator: expected (B, C, F, H, W), got {tuple(conditioning.shape)}")
        batch, channels, frames, height, width = conditioning.shape
        # 1. fold frames, convolve per frame
        hidden = conditioning.transpose(1, 2).reshape(batch * frames, channels, height, width)
        hidden = F.silu(self.conv_in(hidden))
        for block in self.blocks:
            hidden = F.silu(block(hidden))
        hidden = self.conv_out(hidden)
        # 2. unfold
        hidden = hidden.view(batch, frames, *hidden.shape[1:]).transpose(1, 2)
        return hidden if video else hidden[:, :, 0]
