"""FD2Talk's frame Diffusion UNet (Sec. 3.3, eqs. 6-7, 16): a per-frame latent denoiser predicting J_0 from J_t,
conditioned through two distinct cross-attention layers in every encoder and decoder block -- phi_1 on the frame's
expression + pose coefficients (concatenated, linearly projected; eq. 6) and phi_2 on the reference latent
x = E(I) as a sequence with positional encoding (eq. 7) -- and its DDIM sampler (eq. 5, through
ops/noise_schedule.py). `condition="concat"` is the Table 2 ablation: one cross-attention on the concatenated
motion and appearance tokens.

Built from diffusers' ResnetBlock2D, Downsample2D, Upsample2D, Attention and timestep embeddings.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch import nn

from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig
from ..ops.noise_schedule import NoiseSchedule, sample_ddim
from ..progress import Progress

logger = logging.getLogger(__name__)

CONDITIONS = ("dual", "concat")
MOTION_DIM = 70  # FD2Talk: expression (64) + pose (3 angles + 3 translations)


@dataclasses.dataclass(frozen=True)
class FrameUNetConfig(JsonConfig):
    """Size of the frame UNet and its conditions (defaults: a small CPU model for 16 x 16 latents)."""

    latent_channels: int = 4  # d: channels of J_t, J_0 and the reference latent x
    sample_size: int = 16  # latent side h = w (the reference sequence has h * w tokens)
    block_out_channels: tuple[int, ...] = (32, 64)  # widths of the encoder levels (one halving between levels)
    layers_per_block: int = 1  # resnet (+ cross-attention) layers per encoder level; the decoder has one more
    norm_num_groups: int = 8  # GroupNorm groups (must divide every width)
    attention_head_dim: int = 16  # channels per attention head
    motion_dim: int = MOTION_DIM  # coefficients of one frame: exp (64) then pose (6)
    motion_tokens: int = 4  # tokens the linear projection of the coefficients makes (1 = one vector, a bias)
    condition_dim: int = 64  # width of the motion and reference tokens (keys / values of phi_1, phi_2)
    condition: str = "dual"  # "dual" (phi_1 then phi_2, the paper) or "concat" (one attention, Table 2 ablation)

    def __post_init__(self):
        blocks = tuple(self.block_out_channels)
        object.__setattr__(self, "block_out_channels", blocks)
        if not blocks or any(c < 1 or c % self.norm_num_groups or c % self.attention_head_dim for c in blocks):
            raise ValueError(f"FrameUNetConfig: every width must be a positive multiple of norm_num_groups "
                             f"({self.norm_num_groups}) and attention_head_dim ({self.attention_head_dim}), "
                             f"got {blocks}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"FrameUNetConfig: condition must be one of {CONDITIONS}, got {self.condition!r}")
        for name in ("latent_channels", "sample_size", "layers_per_block", "motion_dim", "motion_tokens",
                     "condition_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FrameUNetConfig: {name} must be a positive integer, got {value!r}")
        if self.sample_size % 2 ** (len(blocks) - 1):
            raise ValueError(f"FrameUNetConfig: sample_size {self.sample_size} must be divisible by "
                             f"{2 ** (len(blocks) - 1)} ({len(blocks) - 1} halvings)")


def sincos_positions_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """(height * width, dim) fixed 2D sine-cosine positional encoding (half the channels per axis), row-major."""
    if dim % 4:
        raise ValueError(f"sincos_positions_2d: dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    frequencies = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for axis in (rows, cols):
        angle = axis.reshape(-1, 1) * frequencies
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


class DualCrossAttention(nn.Module):
    """phi_1 then phi_2 (eqs. 6-7) on a feature map, each a pre-norm residual cross-attention, then a
    feed-forward; with condition="concat" one cross-attention on [motion tokens, reference tokens].

    Args:
        channels: C of the feature map (queries).
        config: the FrameUNetConfig (heads, token width, condition mode).
    """

    def __init__(self, channels: int, config: FrameUNetConfig):
        super().__init__()
        from diffusers.models.attention_processor import Attention

        heads = channels // config.attention_head_dim
        self.concat = config.condition == "concat"
        self.norm_in = nn.GroupNorm(config.norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.phi1 = Attention(channels, cross_attention_dim=config.condition_dim, heads=heads,
                              dim_head=config.attention_head_dim)
        if not self.concat:
            self.norm2 = nn.LayerNorm(channels)
            self.phi2 = Attention(channels, cross_attention_dim=config.condition_dim, heads=heads,
                                  dim_head=config.attention_head_dim)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, hidden: torch.Tensor, motion: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """hidden (B, C, h, w); motion (B, M, D_c) tokens; reference (B, N, D_c) tokens -> (B, C, h, w)."""
        batch, channels, height, width = hidden.shape
        # 1. feature map -> query sequence
        tokens = self.proj_in(self.norm_in(hidden).flatten(2).transpose(1, 2))
        if self.concat:
            # 2'. ablation: one cross-attention on the concatenated conditions
            tokens = tokens + self.phi1(self.norm1(tokens), encoder_hidden_states=torch.cat([motion, reference], 1))
        else:
            # 2. m_1 = phi_1({beta, p}, J_t): Q from the latent, K/V from the motion tokens (eq. 6)
            tokens = tokens + self.phi1(self.norm1(tokens), encoder_hidden_states=motion)
            # 3. m_2 = phi_2(x, m_1): Q from m_1, K/V from the reference-latent sequence (eq. 7)
            tokens = tokens + self.phi2(self.norm2(tokens), encoder_hidden_states=reference)
        # 4. feed-forward, back to a map, residual
        tokens = tokens + self.ff(self.norm3(tokens))
        return hidden + self.proj_out(tokens).transpose(1, 2).reshape(batch, channels, height, width)


class FrameUNet(nn.Module, PretrainedMixin):
    """theta_unet of FD2Talk: (J_t, t, coefficients, x) -> J_0 estimate (x0 prediction, eq. 16).

    Encoder: conv_in, per level `layers_per_block` x (ResnetBlock2D + DualCrossAttention), a Downsample2D
    between levels; middle: resnet, DualCrossAttention, resnet; decoder: the mirror with skip connections
    (layers_per_block + 1 per level) and Upsample2D; GroupNorm, SiLU, conv_out. Motion coefficients are
    standardised with stored training statistics (set_normalization) before the linear projection.

    Args:
        config: a FrameUNetConfig.
    """

    config_class = FrameUNetConfig
    infinite_ok_keys = ("motion_std",)  # +inf: a coefficient that never moved in training is ignored

    def __init__(self, config: FrameUNetConfig):
        super().__init__()
        from diffusers.models.downsampling import Downsample2D
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.resnet import ResnetBlock2D
        from diffusers.models.upsampling import Upsample2D

        self.config = config
        widths, groups = config.block_out_channels, config.norm_num_groups
        time_dim = 4 * widths[0]
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(widths[0], time_dim)
        # conditions: phi_1's linear projection of [beta, p]; phi_2's reference sequence with positions
        self.motion_proj = nn.Linear(config.motion_dim, config.motion_tokens * config.condition_dim)
        self.reference_proj = nn.Linear(config.latent_channels, config.condition_dim)
        self.register_buffer("motion_mean", torch.zeros(config.motion_dim))
        self.register_buffer("motion_std", torch.ones(config.motion_dim))

        def resnet(cin: int, cout: int) -> nn.Module:
            return ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=time_dim, groups=groups, eps=1e-6)

        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        self.down_resnets, self.down_attentions, self.downsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skips, channels = [widths[0]], widths[0]
        for level, width in enumerate(widths):
            for _ in range(config.layers_per_block):
                self.down_resnets.append(resnet(channels, width))
                self.down_attentions.append(DualCrossAttention(width, config))
                channels = width
                skips.append(channels)
            if level + 1 < len(widths):
                self.downsamplers.append(Downsample2D(channels, use_conv=True, out_channels=channels, padding=1))
                skips.append(channels)
        self.mid_resnet1, self.mid_attention, self.mid_resnet2 = (resnet(channels, channels),
                                                                  DualCrossAttention(channels, config),
                                                                  resnet(channels, channels))
        self.up_resnets, self.up_attentions, self.upsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(config.layers_per_block + 1):
                self.up_resnets.append(resnet(channels + skips.pop(), width))
                self.up_attentions.append(DualCrossAttention(width, config))
                channels = width
            if level > 0:
                self.upsamplers.append(Upsample2D(channels, use_conv=True, out_channels=channels))
        self.norm_out = nn.GroupNorm(groups, channels, eps=1e-6)
        self.conv_out = nn.Conv2d(channels, config.latent_channels, 3, padding=1)

    # ---- conditions -------------------------------------------------------------------------------
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor, min_std: float = 1e-3) -> None:
        """Store per-coefficient statistics (motion_dim,) of the training motion. A coefficient whose std is below
        min_std never moves in the training data, so the UNet cannot learn what it does: its std is stored as
        +inf and it is ignored (normalised to 0) -- a motion model trained on other data may move it, and a
        clamped tiny std would turn that into huge, never-seen inputs."""
        for name, value in (("motion_mean", mean), ("motion_std", std)):
            value = torch.as_tensor(value, dtype=torch.float32)
            if tuple(value.shape) != (self.config.motion_dim,) or not bool(torch.isfinite(value).all()):
                raise ValueError(f"FrameUNet.set_normalization: {name} must be finite and shaped "
                                 f"({self.config.motion_dim},), got {tuple(value.shape)}")
            if name == "motion_std":
                value = torch.where(value < min_std, torch.full_like(value, math.inf), value)
            getattr(self, name).copy_(value)

    def condition_tokens(self, motion: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """motion (B, motion_dim) raw [exp, angle, trans]; reference (B, d, h, w) latent x ->
        (motion tokens (B, motion_tokens, D_c), reference tokens (B, h*w, D_c)). Compute once per frame and
        pass to forward(..., tokens=) to reuse them over the DDIM steps."""
        config = self.config
        if motion.ndim != 2 or motion.shape[1] != config.motion_dim:
            raise ValueError(f"FrameUNet: motion must be (B, {config.motion_dim}) [exp 64, angle 3, trans 3], got "
                             f"{tuple(motion.shape)}")
        if reference.ndim != 4 or reference.shape[1] != config.latent_channels:
            raise ValueError(f"FrameUNet: reference must be (B, {config.latent_channels}, h, w), got "
                             f"{tuple(reference.shape)}")
        normalized = (motion.to(self.motion_mean) - self.motion_mean) / self.motion_std
        motion_tokens = self.motion_proj(normalized).view(motion.shape[0], config.motion_tokens, config.condition_dim)
        height, width = reference.shape[2:]
        positions = sincos_positions_2d(height, width, config.condition_dim).to(reference)
        reference_tokens = self.reference_proj(reference.flatten(2).transpose(1, 2)) + positions
        return motion_tokens, reference_tokens

    # ---- forward ----------------------------------------------------------------------------------
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, motion: torch.Tensor | None = None,
                reference: torch.Tensor | None = None, *,
                tokens: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """J_0 estimate of each frame.

        Args:
            sample: (B, d, h, w) noisy latents J_t (h, w divisible by 2 ** (levels - 1)).
            timestep: () or (B,) integer timesteps.
            motion: (B, motion_dim) the frame's raw coefficients [exp 64, angle 3, trans 3].
            reference: (B, d, h', w') reference latent x = E(I) (usually h' = h).
            tokens: precomputed condition_tokens(motion, reference) (then motion / reference are ignored).

        Returns:
            (B, d, h, w) predicted J_0.
        """
        if sample.ndim != 4 or sample.shape[1] != self.config.latent_channels:
            raise ValueError(f"FrameUNet: sample must be (B, {self.config.latent_channels}, h, w), got "
                             f"{tuple(sample.shape)}")
        factor = 2 ** (len(self.config.block_out_channels) - 1)
        if sample.shape[2] % factor or sample.shape[3] % factor:
            raise ValueError(f"FrameUNet: latent sides {tuple(sample.shape[2:])} must be divisible by {factor}")
        if tokens is None:
            if motion is None or reference is None:
                raise ValueError("FrameUNet: give motion and reference (or precomputed tokens=)")
            tokens = self.condition_tokens(motion, reference)
        motion_tokens, reference_tokens = tokens
        batch = sample.shape[0]
        # 1. timestep embedding
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        temb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        # 2. encoder: resnet + phi_1/phi_2 per layer, downsample between levels
        hidden = self.conv_in(sample)
        skips, layer = [hidden], 0
        for level in range(len(self.config.block_out_channels)):
            for _ in range(self.config.layers_per_block):
                hidden = self.down_resnets[layer](hidden, temb)
                hidden = self.down_attentions[layer](hidden, motion_tokens, reference_tokens)
                skips.append(hidden)
                layer += 1
            if level < len(self.downsamplers):
                hidden = self.downsamplers[level](hidden)
                skips.append(hidden)
        # 3. middle
        hidden = self.mid_resnet1(hidden, temb)
        hidden = self.mid_attention(hidden, motion_tokens, reference_tokens)
        hidden = self.mid_resnet2(hidden, temb)
        # 4. decoder: skip concatenation, resnet + phi_1/phi_2, upsample between levels
        layer = 0
        for level in range(len(self.config.block_out_channels)):
            for _ in range(self.config.layers_per_block + 1):
                hidden = self.up_resnets[layer](torch.cat([hidden, skips.pop()], dim=1), temb)
                hidden = self.up_attentions[layer](hidden, motion_tokens, reference_tokens)
                layer += 1
            if level < len(self.upsamplers):
                hidden = self.upsamplers[level](hidden)
        # 5. output
        return self.conv_out(torch.nn.functional.silu(self.norm_out(hidden)))


@torch.no_grad()
def sample_frame_latents(unet: FrameUNet, motion: torch.Tensor, reference: torch.Tensor, *,
                         schedule: NoiseSchedule | None = None, steps: int = 50, eta: float = 0.0,
                         seed: int | torch.Generator = 0, frame_batch: int = 16,
                         progress: Progress | None = None) -> torch.Tensor:
    """Denoise every frame's latent J_0 from noise with DDIM (eq. 5), one frame per motion row (Sec. 3.3).

    Args:
        unet: a FrameUNet (x0 prediction).
        motion: (F, motion_dim) raw coefficients of each frame [exp, angle, trans].
        reference: (1, d, h, w) or (F, d, h, w) reference latent x = E(I).
        schedule: the training schedule (default NoiseSchedule.fd2talk(): linear 1e-4..0.02, x0 prediction).
        steps: DDIM steps (the paper: 50).
        eta: DDIM eta.
        seed: int or CPU generator; all initial noise (F frames in order) is drawn first, then the eta noise.
        frame_batch: frames denoised per UNet call (bounds memory on long songs).
        progress: progress(done, total) over frame batches x steps; may raise to stop.

    Returns:
        (F, d, h, w) latents J_0 in the UNet's dtype.
    """
    schedule = schedule or NoiseSchedule.fd2talk()
    frames = motion.shape[0]
    if reference.ndim != 4 or reference.shape[0] not in (1, frames):
        raise ValueError(f"sample_frame_latents: reference must be (1 or F={frames}, d, h, w), got "
                         f"{tuple(reference.shape)}")
    if frame_batch < 1:
        raise ValueError(f"sample_frame_latents: frame_batch must be >= 1, got {frame_batch}")
    param = next(unet.parameters())
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    shape = (frames, *reference.shape[1:])
    noise = torch.randn(shape, generator=generator).to(device=param.device, dtype=param.dtype)
    reference = reference.to(device=param.device, dtype=param.dtype).expand(frames, -1, -1, -1)
    motion = motion.to(device=param.device, dtype=param.dtype)
    timesteps = schedule.timesteps(steps)
    chunks = list(range(0, frames, frame_batch))
    out = []
    for number, start in enumerate(chunks):
        stop = min(frames, start + frame_batch)
        tokens = unet.condition_tokens(motion[start:stop], reference[start:stop])

        def report(done: int, total: int, number: int = number) -> None:
            if progress is not None:
                progress(number * total + done, len(chunks) * total)

        out.append(sample_ddim(lambda x, t, tokens=tokens: unet(x, t, tokens=tokens), noise[start:stop], timesteps,
                               schedule=schedule, eta=eta, generator=generator, callback=report))
    return torch.cat(out)
