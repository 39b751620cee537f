"""Blocks of the inflated SD1.5 denoising UNet (Hallo `unet_3d_blocks`): resnet, spatial+reference
attention, audio module, AnimateDiff motion module, per layer; frames are folded into the batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .audio_modules import AudioTransformer, RegionMasks
from .config import EMPTY_BANK_MOTION_FRAMES, DiffusionConfig
from .motion_module import VanillaTemporalModule

logger = logging.getLogger(__name__)


@dataclass
class BlockInputs:
    """What every block needs besides its hidden states (all with frames folded: N = B*F, frame-major).

    temb: (N, time_embed_dim); context: (N, K, cross_attention_dim) image tokens; audio: (N, T, audio_dim)
    or None (audio modules skipped); masks: RegionMasks; weights: pose/face/lip scales or None;
    frames: F; as_run: True = the official script's training branch (`DiffusionConfig.forward_mode`
    "official-as-run"): motion frames in every attention block, no motion module in attention-free
    blocks, weights in every audio module.
    """

    temb: torch.Tensor
    context: torch.Tensor
    audio: torch.Tensor | None
    masks: RegionMasks
    weights: tuple[float, float, float] | None
    frames: int
    as_run: bool = False


def bank_motion_frames(attention: nn.Module, hidden: torch.Tensor, frames: int, as_run: bool) -> torch.Tensor | None:
    """(B, M, C, h, w) motion-frame features the official blocks read from a spatial transformer's bank.

    attention: the layer's spatial Transformer2DModel; hidden: (B*F, C, h, w) its output. The features
    are the reference UNet's `norm1` tokens of the motion-frame images at the same layer (the bank entry
    past the reference image). Without a bank in read mode: None in clean mode, and the official
    training-branch fallback (EMPTY_BANK_MOTION_FRAMES zero frames) when `as_run`.
    """
    from .reference import ReferenceAttnProcessor

    batch = hidden.shape[0] // frames
    height, width = hidden.shape[-2:]
    processor = attention.transformer_blocks[0].attn1.processor
    if not isinstance(processor, ReferenceAttnProcessor) or processor.mode != "read" or not processor.bank:
        if not as_run:
            return None
        return hidden.new_zeros(batch, EMPTY_BANK_MOTION_FRAMES, hidden.shape[1], height, width)
    _, motion = processor.reference_tokens(batch)
    if motion.shape[1] == 0:
        return None
    return motion.reshape(batch, motion.shape[1], height, width, -1).permute(0, 1, 4, 2, 3)


def motion_with_history(module: nn.Module, hidden: torch.Tensor, motion: torch.Tensor | None,
                        frames: int) -> torch.Tensor:
    """Run a motion module on M motion frames prepended in time to the clip, return the clip's frames.

    hidden: (B*F, C, h, w); motion: (B, M, C, h, w) or None (the module sees the clip alone).
    """
    if motion is None:
        return module(hidden, frames)
    batch, extra = motion.shape[:2]
    clip = hidden.view(batch, frames, *hidden.shape[1:])
    joined = torch.cat([motion.to(hidden.dtype), clip], dim=1).flatten(0, 1)
    joined = module(joined, frames + extra)
    return joined.view(batch, frames + extra, *hidden.shape[1:])[:, extra:].flatten(0, 1)


def _resnet(config: DiffusionConfig, in_channels: int, out_channels: int) -> nn.Module:
    from diffusers.models.resnet import ResnetBlock2D

    return ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=config.time_embed_dim,
                         eps=config.norm_eps, groups=config.norm_num_groups)


def _spatial_transformer(config: DiffusionConfig, channels: int) -> nn.Module:
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    return Transformer2DModel(config.attention_heads, channels // config.attention_heads, in_channels=channels,
                              num_layers=1, cross_attention_dim=config.cross_attention_dim,
                              norm_num_groups=config.norm_num_groups)


def _audio_module(config: DiffusionConfig, channels: int, inner_dim: int) -> AudioTransformer:
    return AudioTransformer(channels, inner_dim, config.attention_heads, config.audio_attention_dim,
                            config.norm_num_groups)


def _motion_module(config: DiffusionConfig, channels: int) -> VanillaTemporalModule:
    return VanillaTemporalModule(channels, config.motion_heads, config.motion_attention_blocks, config.motion_max_len,
                                 config.norm_num_groups)


class UNetBlock3D(nn.Module):
    """One down or up block: per layer resnet -> spatial attention -> audio module -> motion module.

    config: sizes; resnet_channels: (in, out) per layer; attention: whether the block has spatial+audio
    attention; audio_inner: attention width of each layer's audio module; depth: 0..3 (mask level);
    sampler: "down", "up" or None; weighted: whether the audio modules apply the pose/face/lip weights.
    """

    def __init__(self, config: DiffusionConfig, resnet_channels: list[tuple[int, int]], attention: bool,
                 audio_inner: list[int], depth: int, sampler: str | None, weighted: bool) -> None:
        super().__init__()
        from diffusers.models.resnet import Downsample2D, Upsample2D

        self.depth = depth
        self.weighted = weighted
        self.resnets = nn.ModuleList(_resnet(config, cin, cout) for cin, cout in resnet_channels)
        outs = [cout for _, cout in resnet_channels]
        self.attentions = nn.ModuleList(_spatial_transformer(config, c) for c in outs) if attention else None
        self.audio_modules = (nn.ModuleList(_audio_module(config, c, inner) for c, inner in zip(outs, audio_inner, strict=True))
                              if attention else None)
        self.motion_modules = nn.ModuleList(_motion_module(config, c) for c in outs)
        self.downsamplers = self.upsamplers = None
        if sampler == "down":
            self.downsamplers = nn.ModuleList([Downsample2D(outs[-1], use_conv=True, out_channels=outs[-1],
                                                            padding=1, name="op")])
        elif sampler == "up":
            self.upsamplers = nn.ModuleList([Upsample2D(outs[-1], use_conv=True, out_channels=outs[-1])])

    def _layer(self, index: int, hidden: torch.Tensor, inputs: BlockInputs) -> torch.Tensor:
        hidden = self.resnets[index](hidden, inputs.temb)
        if self.attentions is None:
            # official training branch of DownBlock3D / UpBlock3D: resnet only, the motion module is skipped
            return hidden if inputs.as_run else self.motion_modules[index](hidden, inputs.frames)
        hidden = self.attentions[index](hidden, encoder_hidden_states=inputs.context, return_dict=False)[0]
        if inputs.audio is not None:
            masks = (inputs.masks.full[self.depth], inputs.masks.face[self.depth], inputs.masks.lip[self.depth])
            weighted = self.weighted or inputs.as_run
            hidden = self.audio_modules[index](hidden, inputs.audio, masks, inputs.weights if weighted else None)
        if not inputs.as_run:
            return self.motion_modules[index](hidden, inputs.frames)
        motion = bank_motion_frames(self.attentions[index], hidden, inputs.frames, as_run=True)
        return motion_with_history(self.motion_modules[index], hidden, motion, inputs.frames)

    def forward_down(self, hidden: torch.Tensor, inputs: BlockInputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """hidden: (N, C, h, w) -> (output, skip features of every layer and of the downsampler)."""
        skips = []
        for index in range(len(self.resnets)):
            hidden = self._layer(index, hidden, inputs)
            skips.append(hidden)
        if self.downsamplers is not None:
            hidden = self.downsamplers[0](hidden)
            skips.append(hidden)
        return hidden, skips

    def forward_up(self, hidden: torch.Tensor, skips: list[torch.Tensor], inputs: BlockInputs,
                   upsample_size: tuple[int, int] | None = None) -> torch.Tensor:
        """hidden: (N, C, h, w); skips: this block's skip features (popped from the end)."""
        for index in range(len(self.resnets)):
            hidden = torch.cat([hidden, skips.pop()], dim=1)
            hidden = self._layer(index, hidden, inputs)
        if self.upsamplers is not None:
            hidden = self.upsamplers[0](hidden, output_size=upsample_size)
        return hidden


class MidBlock3D(nn.Module):
    """Mid block: resnet, then per layer spatial attention -> audio module -> motion module -> resnet.

    The motion module also sees the motion frames (the reference UNet's extra images, read from the
    spatial attention's reference bank), prepended in time and cut off after, as Hallo does (both
    forward modes; in "official-as-run" an empty bank gives the official 4 zero frames).
    """

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        channels = config.block_out_channels[-1]
        self.depth = 3
        self.resnets = nn.ModuleList([_resnet(config, channels, channels), _resnet(config, channels, channels)])
        self.attentions = nn.ModuleList([_spatial_transformer(config, channels)])
        self.audio_modules = nn.ModuleList([_audio_module(config, channels, channels)])
        self.motion_modules = nn.ModuleList([_motion_module(config, channels)] if config.motion_mid_block else [])

    def forward(self, hidden: torch.Tensor, inputs: BlockInputs) -> torch.Tensor:
        """hidden: (N, C, h, w) -> (N, C, h, w)."""
        hidden = self.resnets[0](hidden, inputs.temb)
        hidden = self.attentions[0](hidden, encoder_hidden_states=inputs.context, return_dict=False)[0]
        if inputs.audio is not None:
            masks = (inputs.masks.full[3], inputs.masks.face[3], inputs.masks.lip[3])
            hidden = self.audio_modules[0](hidden, inputs.audio, masks, inputs.weights)
        if len(self.motion_modules):
            motion = bank_motion_frames(self.attentions[0], hidden, inputs.frames, as_run=inputs.as_run)
            hidden = motion_with_history(self.motion_modules[0], hidden, motion, inputs.frames)
        return self.resnets[1](hidden, inputs.temb)
