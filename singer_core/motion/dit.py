"""FD2Talk motion Diffusion Transformer (Sec. 3.2): x0-prediction (eq. 3) with audio cross-attention under the
alignment mask (eq. 4)."""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MotionDiTConfig(JsonConfig):
    """Size of one motion DiT (FD2Talk's Exp Transformer or Pose Transformer)."""

    motion_dim: int = 64  # D: coefficients per frame (64 expression, 6 pose, 70 joint)
    audio_dim: int = 1280  # A: audio features per frame after the row reduction (mel-80 flatten: 16 x 80)
    frames: int = 25  # F the model is trained on; the sampler cuts longer sequences into windows of this size
    max_frames: int = 256  # longest F forward() accepts (sinusoidal frame positions have no table limit)
    width: int = 256  # hidden width of the transformer, also D_tau (width of tau(c), the cross-attn keys/values)
    layers: int = 6  # L transformer layers (self-attn + masked cross-attn + MLP)
    heads: int = 4  # attention heads; width must be divisible by heads
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * width
    mask_k: int | None = 3  # alignment mask radius k (eq. 4, FD2Talk uses 3); None = no mask (ablation)
    time_dim: int = 128  # sinusoidal timestep embedding width (also the timestep MLP output width)
    dropout: float = 0.0  # dropout in attention weights and MLP (training only)

    def __post_init__(self):
        for name in ("motion_dim", "audio_dim", "frames", "max_frames", "width", "layers", "heads", "time_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MotionDiTConfig: {name} must be a positive integer, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"MotionDiTConfig: width {self.width} is not divisible by heads {self.heads}; "
                             "pick a width that is a multiple of heads")
        if self.time_dim % 2:
            raise ValueError(f"MotionDiTConfig: time_dim must be even (sin + cos halves), got {self.time_dim}")
        if self.frames > self.max_frames:
            raise ValueError(f"MotionDiTConfig: frames {self.frames} exceeds max_frames {self.max_frames}")
        if self.mask_k is not None and (isinstance(self.mask_k, bool) or not isinstance(self.mask_k, int)
                                        or self.mask_k < 0):
            raise ValueError(f"MotionDiTConfig: mask_k must be None or an integer >= 0, got {self.mask_k!r}")
        if not (self.mlp_ratio > 0):
            raise ValueError(f"MotionDiTConfig: mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"MotionDiTConfig: dropout must be in [0, 1), got {self.dropout!r}")


def alignment_mask(frames: int, k: int | None, device=None) -> torch.Tensor:
    """FD2Talk eq. (4): motion frame i may attend to condition frame j iff j - k <= i <= j + k.

    Args:
        frames: F, the sequence length (queries and keys/values are both the F frames).
        k: radius; None gives an all-True mask (no alignment, the ablation).
        device: where to build the mask.

    Returns:
        (F, F) bool, True = may attend (the convention of F.scaled_dot_product_attention).
    """
    if frames < 1:
        raise ValueError(f"alignment_mask: frames must be >= 1, got {frames}")
    if k is None:
        return torch.ones(frames, frames, dtype=torch.bool, device=device)
    index = torch.arange(frames, device=device)
    return (index[:, None] - index[None, :]).abs() <= k


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding: positions (...,) float -> (..., dim) = [cos(p w_i), sin(p w_i)],
    w_i = max_period^(-i / (dim / 2)). Used for diffusion timesteps and for frame positions."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                                  device=positions.device) / half)
    angles = positions.float()[..., None] * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class _Attention(nn.Module):
    """Multi-head attention through F.scaled_dot_product_attention (query from x, keys/values from context)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, width = x.shape
        q = self.to_q(x).view(batch, frames, self.heads, -1).transpose(1, 2)
        k, v = self.to_kv(context).view(batch, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(batch, frames, width))


class _Block(nn.Module):
    """Pre-norm layer: self-attention over motion frames, masked cross-attention to tau(c), MLP."""

    def __init__(self, config: MotionDiTConfig):
        super().__init__()
        width = config.width
        self.norm_self = nn.LayerNorm(width)
        self.self_attention = _Attention(width, config.heads, config.dropout)
        self.norm_cross = nn.LayerNorm(width)
        self.cross_attention = _Attention(width, config.heads, config.dropout)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = max(1, int(round(config.mlp_ratio * width)))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(config.dropout),
                                 nn.Linear(hidden, width))

    def forward(self, h: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        normed = self.norm_self(h)
        h = h + self.self_attention(normed, normed, None)
        h = h + self.cross_attention(self.norm_cross(h), condition, mask)
        return h + self.mlp(self.norm_mlp(h))


class MotionDiT(nn.Module, PretrainedMixin):
    """Sequence-to-sequence denoiser theta(x_t, t, A) -> x0_hat (FD2Talk Sec. 3.2, Fig. 2).

    Condition c = [MLP(sinusoidal(t)), audio] per frame, projected by one linear layer to
    tau(c) (B, F, width); each layer attends x (queries) to tau(c) (keys/values) under the alignment mask.
    Frame positions use a sinusoidal encoding, so any F in 1..config.max_frames works (trained at
    config.frames; the sampler windows longer sequences).

    Args:
        config: a MotionDiTConfig.
    """

    config_class = MotionDiTConfig

    def __init__(self, config: MotionDiTConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.input = nn.Linear(config.motion_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(config.time_dim, config.time_dim), nn.SiLU(),
                                      nn.Linear(config.time_dim, config.time_dim))
        self.condition = nn.Linear(config.time_dim + config.audio_dim, width)  # tau(c)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(width)
        self.output = nn.Linear(width, config.motion_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Estimate the clean motion.

        Args:
            x_t: (B, F, D) noisy motion, D = config.motion_dim, 1 <= F <= config.max_frames.
            t: (B,) integer diffusion timesteps (0..999 for the default schedule).
            audio: (B, F, A) per-frame audio features, A = config.audio_dim.

        Returns:
            (B, F, D) x0_hat.
        """
        config = self.config
        if x_t.ndim != 3 or x_t.shape[-1] != config.motion_dim:
            raise ValueError(f"MotionDiT: x_t must be (B, F, {config.motion_dim}), got {tuple(x_t.shape)}")
        batch, frames, _ = x_t.shape
        if not 1 <= frames <= config.max_frames:
            raise ValueError(f"MotionDiT: {frames} frames; this model takes 1..{config.max_frames} at once "
                             "(use singer_core.motion.sampling.sample, which windows long sequences)")
        if tuple(audio.shape) != (batch, frames, config.audio_dim):
            raise ValueError(f"MotionDiT: audio must be (B, F, A) = ({batch}, {frames}, {config.audio_dim}), "
                             f"got {tuple(audio.shape)}; the model was built for audio_dim {config.audio_dim}")
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"MotionDiT: t must be (B,) = ({batch},), got {tuple(t.shape)}")
        # 1. frame positions, added to both the motion stream and tau(c) so that the cross-attention can
        #    tell the aligned audio frame from its neighbours inside the mask
        positions = sinusoidal_embedding(torch.arange(frames, device=x_t.device), config.width).to(x_t.dtype)
        # 2. condition c = [timestep embedding, audio] per frame -> tau(c)
        time = self.time_mlp(sinusoidal_embedding(t, config.time_dim).to(x_t.dtype))
        audio = audio.to(x_t.dtype)  # standardised by the caller (MotionModel.audio_vector)
        condition = self.condition(torch.cat([time[:, None].expand(-1, frames, -1), audio], dim=-1)) + positions
        # 3. project the noisy motion
        h = self.input(x_t) + positions
        # 4. L layers with the alignment mask on the cross-attention (eq. 4)
        mask = None if config.mask_k is None else alignment_mask(frames, config.mask_k, device=x_t.device)
        for block in self.blocks:
            h = block(h, condition, mask)
        # 5. x0 estimate (eq. 3)
        return self.output(self.norm_out(h))
