"""Reference path of Hallo/SINGER: the reference UNet and the reference-attention bank (write, then read).

The reference UNet (SD1.5 `UNet2DConditionModel` without `conv_norm_out`/`conv_out`) runs on the
reference image latents (and the motion-frame latents) once; every spatial self-attention of it
records its input (the `norm1` output) in a bank. The denoising UNet's spatial self-attentions
then attend over their own tokens concatenated with the reference tokens of the same block.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiffusionConfig

logger = logging.getLogger(__name__)


def reference_unet_kwargs(config: DiffusionConfig) -> dict:
    """diffusers `UNet2DConditionModel` arguments of the SD1.5 UNet sized by `config`."""
    return dict(
        sample_size=config.sample_size, in_channels=config.in_channels, out_channels=config.out_channels,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        cross_attention_dim=config.cross_attention_dim, attention_head_dim=config.attention_heads,
        norm_num_groups=config.norm_num_groups, norm_eps=config.norm_eps)


def build_reference_unet(config: DiffusionConfig) -> nn.Module:
    """The reference UNet: a diffusers SD1.5 `UNet2DConditionModel` with no `conv_norm_out`/`conv_out`.

    config: sizes (`DiffusionConfig`). Its state dict is the 682 `reference_unet.*` tensors of `net.pth`
    at full size. Its forward returns the 320-channel last features (only the bank writes matter).
    """
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**reference_unet_kwargs(config))
    unet.conv_norm_out = None  # diffusers skips the norm and activation when this is None
    unet.conv_out = nn.Identity()
    return unet


class ReferenceAttnProcessor:
    """diffusers attention processor of a spatial self-attention (`attn1`) that writes or reads a bank.

    mode: "off" (plain self-attention), "write" (store the input tokens, then plain self-attention) or
    "read" (attend over own tokens + reference tokens of the bank).
    In read mode, `video_length` F is the frame count of the denoised clip and `keep` an optional (B,)
    bool tensor: samples with False attend to themselves only (Hallo's unconditional CFG half).
    """

    def __init__(self) -> None:
        self.mode = "off"
        self.bank: list[torch.Tensor] = []
        self.video_length = 1
        self.keep: torch.Tensor | None = None

    @staticmethod
    def _attend(attn, query_tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of `query_tokens` (N, L, C) over `context` (N, M, C) with attn's weights."""
        batch, length, _ = query_tokens.shape
        heads = attn.heads
        query = attn.to_q(query_tokens)
        key = attn.to_k(context)
        value = attn.to_v(context)
        head_dim = query.shape[-1] // heads
        query, key, value = (x.view(batch, -1, heads, head_dim).transpose(1, 2) for x in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, length, heads * head_dim).to(query_tokens.dtype)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def reference_tokens(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Split the first bank entry (B*S, L, C) into reference (B, L, C) and motion frames (B, S-1, L, C)."""
        if not self.bank:
            raise RuntimeError("ReferenceAttnProcessor: read mode but the bank is empty; run the reference UNet "
                               "under ReferenceAttentionControl.write() first")
        entry = self.bank[0]
        if entry.shape[0] % batch:
            raise ValueError(f"ReferenceAttnProcessor: bank batch {entry.shape[0]} is not a multiple of the "
                             f"denoising batch {batch}; give the reference UNet B*(1+motion frames) images")
        entry = entry.view(batch, entry.shape[0] // batch, *entry.shape[1:])
        return entry[:, 0], entry[:, 1:]

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("ReferenceAttnProcessor: attention masks are not supported in spatial self-attention")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if self.mode == "write":
            self.bank.append(hidden_states)
            return self._attend(attn, hidden_states, context)
        if self.mode != "read":
            return self._attend(attn, hidden_states, context)
        # 1. the reference tokens of each sample, repeated over its frames
        frames = self.video_length
        batch = hidden_states.shape[0] // frames
        reference, _ = self.reference_tokens(batch)
        reference = reference.to(hidden_states.dtype).repeat_interleave(frames, dim=0)
        # 2. self + reference tokens as keys/values
        out = self._attend(attn, hidden_states, torch.cat([hidden_states, reference], dim=1))
        # 3. samples whose reference is dropped (classifier-free guidance) attend to themselves only
        if self.keep is not None and not bool(self.keep.all()):
            drop = (~self.keep.to(hidden_states.device)).repeat_interleave(frames)
            out = out.clone()
            out[drop] = self._attend(attn, hidden_states[drop], hidden_states[drop])
        return out


def spatial_self_attentions(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, attn1) of every spatial transformer block under `attentions` (not audio or motion modules)."""
    from diffusers.models.attention import BasicTransformerBlock

    for name, module in unet.named_modules():
        if isinstance(module, BasicTransformerBlock) and ".attentions." in f".{name}":
            yield name, module.attn1


class ReferenceAttentionControl:
    """Pairs the reference UNet's spatial self-attentions with the denoising UNet's, by module path.

    reference_unet: the writer (from `build_reference_unet`); denoising_unet: the reader
    (`DenoisingUNet3D`). Both have the SD1.5 block layout, so `down_blocks.1.attentions.0...` of one pairs
    with the same path of the other (the official code pairs them by sorted width, which is the same).
    Use: `with control.write(): reference_unet(...)`, then `control.read(frames, keep)`, denoise, `clear()`.
    bank_fp16: round the banks to float16 when handing them over (the official `update(writer,
    dtype=torch.float16)` default), then back to their dtype.
    """

    def __init__(self, reference_unet: nn.Module, denoising_unet: nn.Module, *, bank_fp16: bool = False) -> None:
        self.bank_fp16 = bank_fp16
        writers = dict(spatial_self_attentions(reference_unet))
        readers = dict(spatial_self_attentions(denoising_unet))
        if set(writers) != set(readers):
            raise ValueError(f"ReferenceAttentionControl: the UNets' spatial attentions differ: only in reference "
                             f"{sorted(set(writers) - set(readers))[:4]}, only in denoising "
                             f"{sorted(set(readers) - set(writers))[:4]}; build both from one DiffusionConfig")
        self.pairs: list[tuple[ReferenceAttnProcessor, ReferenceAttnProcessor]] = []
        for name in sorted(writers):
            write_proc, read_proc = ReferenceAttnProcessor(), ReferenceAttnProcessor()
            writers[name].set_processor(write_proc)
            readers[name].set_processor(read_proc)
            self.pairs.append((write_proc, read_proc))

    def write(self) -> _WriteContext:
        """Context in which reference-UNet forwards fill the banks (cleared first)."""
        return _WriteContext(self)

    def read(self, video_length: int, keep: torch.Tensor | None = None) -> None:
        """Hand the written banks to the denoising UNet.

        video_length: frames F of the denoised clip; keep: optional (B,) bool, False = no reference for
        that sample (the unconditional half of classifier-free guidance).
        """
        for writer, reader in self.pairs:
            if not writer.bank:
                raise RuntimeError("ReferenceAttentionControl.read: nothing was written; run the reference UNet "
                                   "inside `with control.write():` first")
            reader.bank = ([entry.to(torch.float16).to(entry.dtype) for entry in writer.bank] if self.bank_fp16
                           else list(writer.bank))
            reader.mode = "read"
            reader.video_length = video_length
            reader.keep = keep

    def clear(self) -> None:
        """Empty every bank and turn the reference attention off."""
        for writer, reader in self.pairs:
            writer.bank, reader.bank = [], []
            writer.mode, reader.mode = "off", "off"
            reader.keep = None


class _WriteContext:
    def __init__(self, control: ReferenceAttentionControl) -> None:
        self.control = control

    def __enter__(self) -> ReferenceAttentionControl:
        for writer, _ in self.control.pairs:
            writer.bank = []
            writer.mode = "write"
        return self.control

    def __exit__(self, *exc) -> None:
        for writer, _ in self.control.pairs:
            writer.mode = "off"
