"""The whole SINGER network as stored in the official `net.pth`: reference UNet, denoising UNet, face
locator, image and audio projections and the MSM (`audioembed`)."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from ..io.checkpoint import PretrainedMixin
from .audio_modules import RegionMasks
from .audio_proj import AudioProjModel
from .config import FORWARD_MODES, DiffusionConfig
from .face_locator import FaceLocator
from .image_proj import ImageProjModel
from .reference import ReferenceAttentionControl, build_reference_unet
from .unet3d import DenoisingUNet3D, SpectralModulePlaceholder

logger = logging.getLogger(__name__)


def build_msm(config: DiffusionConfig) -> nn.Module:
    """The MSM (`audioembed`): buffer dct_layer.weight [1, C, 14, S, S], fc.0 [2, C], fc.2 [1, 2]."""
    shape = (1, config.in_channels, config.msm_frames, config.sample_size, config.sample_size)
    try:
        from ..spectral.msm import MSMConfig, MultiScaleSpectralModule
    except ImportError:
        logger.debug("build_msm: singer_core.spectral.msm not available, using a placeholder")
        return SpectralModulePlaceholder({"dct_layer.weight": shape, "fc.0.weight": (2, config.in_channels),
                                          "fc.2.weight": (1, 2)}, buffers=("dct_layer.weight",))
    return MultiScaleSpectralModule(MSMConfig(latent_channels=config.in_channels, latent_height=config.sample_size,
                                              latent_width=config.sample_size, frames=config.msm_frames))


class SingerNet(nn.Module, PretrainedMixin):
    """Every trained part of SINGER under the prefixes of `net.pth`.

    config: `DiffusionConfig` (full size by default). Children: `reference_unet`, `denoising_unet`,
    `face_locator`, `imageproj`, `audioproj`, `audioembed` (None when config.use_msm is False).
    `reference_control` pairs the two UNets' spatial self-attentions.
    """

    config_class = DiffusionConfig

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DiffusionConfig()
        self.reference_unet = build_reference_unet(config)
        self.denoising_unet = DenoisingUNet3D(config)
        self.face_locator = FaceLocator(config.block_out_channels[0], config.face_conditioning_channels,
                                        config.face_locator_channels)
        self.imageproj = ImageProjModel(config.cross_attention_dim, config.face_embedding_dim, config.face_tokens)
        self.audioproj = AudioProjModel(config.audio_seq_len, config.audio_blocks, config.audio_channels,
                                        config.audio_intermediate_dim, config.audio_attention_dim,
                                        config.audio_tokens)
        self.audioembed = build_msm(config) if config.use_msm else None
        self.reference_control = ReferenceAttentionControl(self.reference_unet, self.denoising_unet,
                                                           bank_fp16=config.reference_bank_fp16)

    @property
    def forward_mode(self) -> str:
        """"clean" or "official-as-run" (see `DiffusionConfig.forward_mode`)."""
        return self.config.forward_mode

    def set_forward_mode(self, mode: str, *, reference_bank_fp16: bool | None = None) -> None:
        """Switch between the eval-branch forward ("clean") and the official script's ("official-as-run").

        reference_bank_fp16: also switch the fp16 rounding of the reference bank (None = keep).
        The config is replaced, so `save_pretrained` records the mode.
        """
        if mode not in FORWARD_MODES:
            raise ValueError(f"SingerNet.set_forward_mode: mode must be one of {FORWARD_MODES}, got {mode!r}")
        changes = {"forward_mode": mode}
        if reference_bank_fp16 is not None:
            changes["reference_bank_fp16"] = bool(reference_bank_fp16)
        self.config = dataclasses.replace(self.config, **changes)
        self.denoising_unet.config = self.config
        self.denoising_unet.forward_mode = mode
        self.reference_control.bank_fp16 = self.config.reference_bank_fp16

    def audio_tokens(self, audio_windows: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame audio tokens.

        audio_windows: (B, F, seq_len, blocks, channels) wav2vec2 windows; latents: (B, C, F, h, w) noisy
        latents for the MSM (None = MSM skipped). Returns (B, F, audio_tokens, audio_attention_dim).
        """
        tokens = self.audioproj(audio_windows)
        if latents is not None and self.audioembed is not None:
            tokens = self.audioembed(tokens, latents)
        return tokens

    def write_reference(self, reference_latents: torch.Tensor, image_tokens: torch.Tensor) -> None:
        """Run the reference UNet on the reference (+ motion-frame) latents and fill the attention banks.

        reference_latents: (B, S, C, h, w): S = 1 reference image + motion frames;
        image_tokens: (B, K, cross_attention_dim) from `imageproj`.
        Image i of the flattened (B*S) batch reads tokens of sample i // S ("clean", `repeat_interleave`)
        or of sample i % B ("official-as-run": the official write-mode block tiles them with
        `encoder_hidden_states.repeat(S, 1, 1)`, so under CFG [ref, m1, m2, ref, m1, m2] read
        [u, c, u, c, u, c]).
        """
        if reference_latents.dim() != 5:
            raise ValueError(f"SingerNet.write_reference: reference_latents must be (B, S, C, h, w), got "
                             f"{tuple(reference_latents.shape)}")
        batch, images = reference_latents.shape[:2]
        flat = reference_latents.flatten(0, 1)
        timestep = torch.zeros(flat.shape[0], device=flat.device)
        if self.forward_mode == "official-as-run":
            context = image_tokens.repeat(images, 1, 1)
        else:
            context = image_tokens.repeat_interleave(images, dim=0)
        with self.reference_control.write():
            self.reference_unet(flat, timestep, encoder_hidden_states=context, return_dict=False)

    def predict(self, latents: torch.Tensor, timestep: torch.Tensor | float | int, *, reference_latents: torch.Tensor,
                face_embedding: torch.Tensor, audio_windows: torch.Tensor, face_mask_image: torch.Tensor | None = None,
                masks: RegionMasks | None = None, motion_scale: tuple[float, float, float] | None = None,
                msm_latents: torch.Tensor | None = None, keep_reference: torch.Tensor | None = None) -> torch.Tensor:
        """One denoising-network evaluation for a clip (no guidance mixing; the sampler does that).

        latents: (B, C, F, h, w) noisy latents; timestep: scalar or (B,); reference_latents: (B, S, C, h, w);
        face_embedding: (B, face_embedding_dim); audio_windows: (B, F, seq_len, blocks, channels);
        face_mask_image: (B, 3, F, 8h, 8w) or (B, 3, 8h, 8w) face-region image for the face locator;
        masks: audio region masks (None = all ones); motion_scale: pose/face/lip weights;
        msm_latents: latents the MSM reads (official: the initial noise of the clip), None = MSM off;
        keep_reference: (B,) bool, False = that sample ignores the reference (unconditional branch).
        Returns (B, C, F, h, w) noise / v prediction.
        """
        frames = latents.shape[2]
        # 1. conditions
        image_tokens = self.imageproj(face_embedding)
        audio = self.audio_tokens(audio_windows, msm_latents)
        mask_cond_fea = None
        if face_mask_image is not None:
            mask_cond_fea = self.face_locator(face_mask_image)
            if mask_cond_fea.dim() == 4:
                mask_cond_fea = mask_cond_fea[:, :, None].expand(-1, -1, frames, -1, -1)
        # 2. reference attention banks, then the denoising UNet
        self.write_reference(reference_latents, image_tokens)
        try:
            self.reference_control.read(frames, keep_reference)
            return self.denoising_unet(latents, timestep, image_tokens, audio, mask_cond_fea=mask_cond_fea,
                                       masks=masks, motion_scale=motion_scale)
        finally:
            self.reference_control.clear()
