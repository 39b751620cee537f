"""Denoising UNet of SINGER/Hallo: SD1.5 inflated over frames, with reference attention, audio modules,
AnimateDiff motion modules and the SINGER self-adaptive filter module (SFM) after the mid block."""

from __future__ import annotations

import logging

import torch
from torch import nn

from .audio_modules import RegionMasks
from .config import DiffusionConfig
from .unet_blocks import BlockInputs, MidBlock3D, UNetBlock3D

logger = logging.getLogger(__name__)


class SpectralModulePlaceholder(nn.Module):
    """Stand-in with the official parameter names/shapes while singer_core.spectral lacks the module.

    shapes: name -> shape of each tensor (parameters, or buffers when the name is in `buffers`).
    Its forward is the identity and it says so once in the log.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], buffers: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._warned = False
        for name, shape in shapes.items():
            path = name.split(".")
            owner: nn.Module = self
            for part in path[:-1]:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            if name in buffers:
                owner.register_buffer(path[-1], torch.zeros(shape))
            else:
                owner.register_parameter(path[-1], nn.Parameter(torch.zeros(shape)))

    def forward(self, hidden: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not self._warned:
            logger.warning("%s: singer_core.spectral module missing, passing features through unchanged",
                           type(self).__name__)
            self._warned = True
        return hidden


def build_sfm(config: DiffusionConfig) -> nn.Module:
    """The SFM (`hidden_spectral_weighting`): weight [4, 1, C, w/2, w/2], fc.0 [w/2, w], fc.2 [w, w/2].

    C = the mid-block width (1280), w = mid-block latent width (8 at 512 px).
    """
    channels, width = config.block_out_channels[-1], config.sfm_width
    try:
        from ..spectral.sfm import SelfAdaptiveFilterModule
    except ImportError:
        logger.debug("build_sfm: singer_core.spectral.sfm not available, using a placeholder")
        return SpectralModulePlaceholder({"weight": (4, 1, channels, width // 2, width // 2),
                                          "fc.0.weight": (width // 2, width), "fc.2.weight": (width, width // 2)})
    from ..spectral.sfm import SFMConfig

    return SelfAdaptiveFilterModule(SFMConfig(channels=channels, fc_width=width, fc_hidden=width // 2,
                                              weight_size=width // 2))


class DenoisingUNet3D(nn.Module):
    """The denoising UNet (`denoising_unet.*` of net.pth: 1,949 tensors at full size).

    config: `DiffusionConfig`. State-dict names: SD1.5 diffusers names for the spatial parts (conv_in,
    time_embedding, down_blocks.i.{resnets,attentions,downsamplers}, mid_block, up_blocks, conv_norm_out,
    conv_out), `*.motion_modules.j.temporal_transformer.*` (AnimateDiff v2), `*.audio_modules.j.*` (Hallo)
    and `hidden_spectral_weighting.*` (SINGER SFM, when config.use_sfm).
    """

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.config = config
        # "clean" or "official-as-run" (DiffusionConfig.forward_mode); SingerNet.set_forward_mode switches it
        self.forward_mode = config.forward_mode
        widths = list(config.block_out_channels)
        layers = config.layers_per_block
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(widths[0], config.time_embed_dim)
        # 1. down: attention in all but the last; audio width = the layer's input width (Hallo)
        self.down_blocks = nn.ModuleList()
        previous = widths[0]
        for depth, width in enumerate(widths):
            resnet_channels = [(previous if j == 0 else width, width) for j in range(layers)]
            self.down_blocks.append(UNetBlock3D(
                config, resnet_channels, attention=depth < 3, audio_inner=[cin for cin, _ in resnet_channels],
                depth=depth, sampler="down" if depth < 3 else None, weighted=config.motion_scale_all_blocks))
            previous = width
        # 2. up: attention in all but the first; audio width = the block's input width for every layer
        self.up_blocks = nn.ModuleList()
        reversed_widths = widths[::-1]
        previous = reversed_widths[0]
        for index, width in enumerate(reversed_widths):
            block_in = reversed_widths[min(index + 1, 3)]
            resnet_channels = [((previous if j == 0 else width) + (block_in if j == layers else width), width)
                               for j in range(layers + 1)]
            self.up_blocks.append(UNetBlock3D(
                config, resnet_channels, attention=index > 0, audio_inner=[block_in] * (layers + 1),
                depth=3 - index, sampler="up" if index < 3 else None, weighted=config.motion_scale_all_blocks))
            previous = width
        self.mid_block = MidBlock3D(config)
        if config.use_sfm:
            self.hidden_spectral_weighting = build_sfm(config)
        else:
            self.hidden_spectral_weighting = None
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, widths[0], eps=config.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[0], config.out_channels, kernel_size=3, padding=1)

    def _apply_sfm(self, hidden: torch.Tensor, frames: int) -> torch.Tensor:
        """Run the SFM on (B*F, C, h, w) features; it takes (B, C, F, h, w) as the official layer."""
        if self.hidden_spectral_weighting is None:
            return hidden
        total = hidden.shape[0]
        video = hidden.view(total // frames, frames, *hidden.shape[1:]).transpose(1, 2)
        video = self.hidden_spectral_weighting(video)
        return video.transpose(1, 2).reshape(hidden.shape)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int, encoder_hidden_states: torch.Tensor,
                audio_embedding: torch.Tensor | None = None, *, mask_cond_fea: torch.Tensor | None = None,
                masks: RegionMasks | None = None,
                motion_scale: tuple[float, float, float] | None = None) -> torch.Tensor:
        """Predict noise (or v) for a clip.

        sample: (B, C_in, F, h, w) noisy latents, h and w divisible by 8; timestep: scalar or (B,);
        encoder_hidden_states: (B, K, cross_attention_dim) image tokens (ImageProjModel);
        audio_embedding: (B, F, T, audio_attention_dim) per-frame audio tokens (AudioProjModel), None =
        audio modules skipped; mask_cond_fea: (B, C0, F, h, w) face-locator features added after conv_in;
        masks: full/face/lip region masks (None = all ones); motion_scale: (pose, face, lip) weights.
        Reference attention is active when a ReferenceAttentionControl has been put in read mode.
        `self.forward_mode` picks the branch of the official blocks (see DiffusionConfig.forward_mode).
        Returns (B, C_out, F, h, w).
        """
        if sample.dim() != 5:
            raise ValueError(f"DenoisingUNet3D: sample must be (B, C, F, h, w), got {tuple(sample.shape)}")
        batch, _, frames, height, width = sample.shape
        if height % 8 or width % 8:
            raise ValueError(f"DenoisingUNet3D: latent size {height}x{width} must be divisible by 8 "
                             "(images divisible by 64)")
        if audio_embedding is not None and tuple(audio_embedding.shape[:2]) != (batch, frames):
            raise ValueError(f"DenoisingUNet3D: audio_embedding {tuple(audio_embedding.shape)} must be (B, F, T, D) "
                             f"with B={batch}, F={frames}")
        # 1. fold frames into the batch, time embedding per frame
        hidden = sample.transpose(1, 2).reshape(batch * frames, -1, height, width)
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.reshape(-1).expand(batch) if timestep.numel() in (1, batch) else timestep
        if timestep.numel() != batch:
            raise ValueError(f"DenoisingUNet3D: timestep must be a scalar or ({batch},), got {tuple(timestep.shape)}")
        temb = self.time_embedding(self.time_proj(timestep).to(hidden.dtype)).repeat_interleave(frames, dim=0)
        context = encoder_hidden_states.to(hidden.dtype).repeat_interleave(frames, dim=0)
        audio = None if audio_embedding is None else audio_embedding.to(hidden.dtype).flatten(0, 1)
        if masks is None:
            masks = RegionMasks.ones(batch * frames, height, width, device=hidden.device, dtype=hidden.dtype)
        inputs = BlockInputs(temb=temb, context=context, audio=audio, masks=masks,
                             weights=None if motion_scale is None else tuple(motion_scale), frames=frames,
                             as_run=self.forward_mode == "official-as-run")
        # 2. stem (+ face-locator features)
        hidden = self.conv_in(hidden)
        if mask_cond_fea is not None:
            hidden = hidden + mask_cond_fea.transpose(1, 2).reshape(hidden.shape).to(hidden.dtype)
        # 3. down, mid, SFM, up
        skips = [hidden]
        for block in self.down_blocks:
            hidden, block_skips = block.forward_down(hidden, inputs)
            skips.extend(block_skips)
        hidden = self.mid_block(hidden, inputs)
        hidden = self._apply_sfm(hidden, frames)
        for index, block in enumerate(self.up_blocks):
            block_skips = skips[-len(block.resnets):]
            del skips[-len(block.resnets):]
            size = tuple(skips[-1].shape[-2:]) if index < len(self.up_blocks) - 1 else None
            hidden = block.forward_up(hidden, block_skips, inputs, upsample_size=size)
        # 4. head, unfold frames
        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        return hidden.view(batch, frames, -1, height, width).transpose(1, 2)
