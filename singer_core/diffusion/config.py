"""Configuration of the SINGER / Hallo denoising stack (SD1.5 UNets + AnimateDiff + audio modules + MSM/SFM)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..io.config import JsonConfig

logger = logging.getLogger(__name__)

# How the denoising UNet's down/up blocks run (see `DiffusionConfig.forward_mode`).
FORWARD_MODES = ("clean", "official-as-run")
# motion frames the official blocks prepend when no reference bank was written (its zero fallback)
EMPTY_BANK_MOTION_FRAMES = 4


@dataclass(frozen=True)
class DiffusionConfig(JsonConfig):
    """Every size of the reference UNet, denoising UNet, face locator and projections.

    The defaults are the full-size model of the official SINGER `net.pth` (SD1.5 + Hallo settings,
    512-px images); `DiffusionConfig.tiny()` is a CPU-test preset with the same structure.
    """

    # latent side in pixels/8 the model was trained at (64 = 512 px); fixes the MSM/SFM weight shapes
    sample_size: int = 64
    # latent channels of the VAE (4 for SD1.5)
    in_channels: int = 4
    # channels predicted by the denoising UNet (noise or v, same as in_channels)
    out_channels: int = 4
    # channels of the four UNet resolutions (SD1.5: 320, 640, 1280, 1280)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    # resnets per down block (up blocks have one more)
    layers_per_block: int = 2
    # heads of the spatial and audio attentions (SD1.5 config calls this `attention_head_dim` = 8)
    attention_heads: int = 8
    # width of the image-token cross-attention context (CLIP-L width 768 in SD1.5)
    cross_attention_dim: int = 768
    # GroupNorm groups in resnets, transformers and motion modules
    norm_num_groups: int = 32
    # GroupNorm epsilon of the resnets
    norm_eps: float = 1e-5
    # width of the audio tokens the audio modules attend to (Hallo: 768)
    audio_attention_dim: int = 768
    # heads of the AnimateDiff temporal self-attentions
    motion_heads: int = 8
    # length of the sinusoidal temporal position table (AnimateDiff v2: 32 frames incl. motion frames)
    motion_max_len: int = 32
    # temporal self-attentions per motion module ("Temporal_Self", "Temporal_Self")
    motion_attention_blocks: int = 2
    # a motion module after the mid-block attention too (mm_sd_v15_v2 has one)
    motion_mid_block: bool = True
    # apply the pose/face/lip weights in every audio module in "clean" mode; False = only in the mid
    # block, as the eval-mode (`else:`) branch of the official blocks does. "official-as-run" always
    # applies them everywhere (the branch the official script actually runs passes them to every block).
    motion_scale_all_blocks: bool = False
    # Which branch of the official `unet_3d_blocks.py` the denoising UNet follows.
    # "clean": the `else:` (eval) branch: only the mid block's motion module sees the reference bank's
    #   motion frames, every motion module runs, the pose/face/lip weights reach the mid block only
    #   (unless motion_scale_all_blocks), and under CFG the reference UNet gets the face tokens of each
    #   sample for all of its images (`repeat_interleave`).
    # "official-as-run": what `scripts/inference_new.py` really computes. It enables gradient
    #   checkpointing and never calls `.eval()`, so every `if self.training and
    #   self.gradient_checkpointing:` branch runs, and the released net.pth was trained through that
    #   same branch. Differences: (1) every cross-attention down and up block prepends the reference
    #   bank's motion frames (read from its own layer's bank) to its motion-module input, F + M frames,
    #   not only the mid block; (2) the motion modules of the attention-free blocks (down_blocks.3,
    #   up_blocks.0) are skipped; (3) every audio module gets the pose/face/lip weights; (4) the reference
    #   UNet tiles the face tokens with `.repeat` (images [ref, m1, m2, ref, m1, m2] of a CFG batch read
    #   tokens [u, c, u, c, u, c]); with no reference bank, 4 zero motion frames are prepended.
    # `load_net_pth` sets "official-as-run"; our own folders keep what their config.json says.
    forward_mode: str = "clean"
    # round the reference bank to fp16 before the denoising UNet reads it, as the official
    # `ReferenceAttentionControl.update(writer, dtype=torch.float16)` does even in fp32 runs (changes the
    # official-as-run prediction by ~1e-4 relative); False keeps the bank in the compute dtype
    reference_bank_fp16: bool = False
    # channels of the face-locator convolutions (each step after the first halves the resolution)
    face_locator_channels: tuple[int, ...] = (16, 32, 64, 128)
    # channels of the face-region mask image given to the face locator
    face_conditioning_channels: int = 3
    # width of the face identity embedding (insightface ArcFace: 512)
    face_embedding_dim: int = 512
    # image tokens made from the face embedding for the cross-attentions
    face_tokens: int = 4
    # audio frames in the per-frame window (i-2 .. i+2)
    audio_seq_len: int = 5
    # wav2vec2 hidden layers stacked per frame
    audio_blocks: int = 12
    # width of each wav2vec2 layer
    audio_channels: int = 768
    # hidden width of the audio projection MLP
    audio_intermediate_dim: int = 512
    # audio tokens per video frame fed to the audio modules
    audio_tokens: int = 32
    # build the SINGER self-adaptive filter module after the mid block (`hidden_spectral_weighting`)
    use_sfm: bool = True
    # build the SINGER multi-scale spectral module (`audioembed`)
    use_msm: bool = True
    # frame axis of the official MSM weight [1, C, 14, 64, 64] (summed away by its einsum)
    msm_frames: int = 14

    def __post_init__(self) -> None:
        blocks = self.block_out_channels
        if len(blocks) != 4:
            raise ValueError(f"DiffusionConfig: block_out_channels must have 4 entries (SD1.5 layout), got {blocks}")
        for channels in blocks:
            if channels % self.norm_num_groups or channels % self.attention_heads or channels % self.motion_heads:
                raise ValueError(f"DiffusionConfig: every block width must divide by norm_num_groups "
                                 f"({self.norm_num_groups}), attention_heads ({self.attention_heads}) and "
                                 f"motion_heads ({self.motion_heads}); {channels} does not")
        if self.sample_size % 8:
            raise ValueError(f"DiffusionConfig: sample_size must be a multiple of 8 (three halvings and a Haar "
                             f"step), got {self.sample_size}")
        if len(self.face_locator_channels) < 2:
            raise ValueError("DiffusionConfig: face_locator_channels needs at least 2 entries")
        if self.forward_mode not in FORWARD_MODES:
            raise ValueError(f"DiffusionConfig: forward_mode must be one of {FORWARD_MODES}, got {self.forward_mode!r}")
        if self.motion_max_len < 1 or self.layers_per_block < 1:
            raise ValueError("DiffusionConfig: motion_max_len and layers_per_block must be >= 1")

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding (4 x the first block width)."""
        return 4 * self.block_out_channels[0]

    @property
    def sfm_width(self) -> int:
        """Mid-block latent width the SFM was built for (8 at 512 px)."""
        return self.sample_size // 8

    @classmethod
    def full(cls) -> DiffusionConfig:
        """The official SINGER/Hallo full-size configuration (512 px, SD1.5)."""
        return cls()

    @classmethod
    def tiny(cls) -> DiffusionConfig:
        """A small configuration with the full structure, for CPU tests (latents 16 x 16)."""
        return cls(sample_size=16, block_out_channels=(16, 32, 32, 32), attention_heads=2, cross_attention_dim=16,
                   norm_num_groups=8, audio_attention_dim=16, motion_heads=2, motion_max_len=24,
                   face_locator_channels=(4, 8, 8, 16), face_embedding_dim=8, face_tokens=2, audio_blocks=2,
                   audio_channels=8, audio_intermediate_dim=16, audio_tokens=4, msm_frames=2)
