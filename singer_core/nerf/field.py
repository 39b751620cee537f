"""Audio-conditioned tri-plane radiance field F_H(x, d, a; H_3) -> (c, sigma) of DAMC §2.4, laid out as
ER-NeRF's head network (tri-plane hash grids, region-attended audio, sigma MLP, SH-encoded colour MLP with
per-frame latent codes).

Per point x in the box [-bound, bound]^3 (ER-NeRF names in brackets):
  1. f_g = H_XY(x, y) ⊕ H_YZ(y, z) ⊕ H_XZ(x, z)                              [encoder_xy/yz/xz], 3*L*F
  2. region-aware audio: a_x = a * MLP_att(f_g) (when audio_attention)      [aud_ch_att_net]
     optional eye feature e_x = e * sigmoid(MLP_eye(f_g))                     [eye_att_net]
  3. h = MLP_sigma(f_g ⊕ a_x [⊕ e_x]); sigma = exp(h_0), geo = h_1..h_G     [sigma_net]
     (h_0 is clamped at 15 before exp so a diverging step cannot overflow to inf)
  4. c = sigmoid(MLP_color(SH_4(d) ⊕ geo ⊕ z_frame)) * (1 + 2e-3) - 1e-3     [color_net, individual_codes]
MLPs are bias-free with ReLU between layers, as ER-NeRF's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import PretrainedMixin
from ..io.config import JsonConfig
from ..ops.hashgrid import TriPlaneConfig, TriPlaneEncoder

logger = logging.getLogger(__name__)

# Real spherical harmonics up to degree 4 (l = 0..3), the ordering and signs of Instant-NGP / tiny-cuda-nn /
# torch-ngp: index l*l + l + m; Y_lm = sqrt(2) Im(Y_l^|m|) (m < 0), Y_l0, sqrt(2) Re(Y_l^m) (m > 0) of the
# complex harmonics with the Condon-Shortley phase.
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.48860251190291987
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.94617469575755997, -0.31539156525251999,
          -1.0925484305920792, 0.54627421529603959)
_SH_C3 = (0.59004358992664352, 2.8906114426405538, 0.45704579946446572, 0.3731763325901154,
          1.4453057213202769)


def spherical_harmonics(directions: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real SH basis of unit directions.

    Args:
        directions: (..., 3) unit vectors (x, y, z).
        degree: number of bands, 1..4 (4 = l up to 3, 16 values; ER-NeRF's encoder_dir).
    Returns:
        (..., degree**2).
    """
    if directions.shape[-1] != 3:
        raise ValueError(f"spherical_harmonics: directions have shape {tuple(directions.shape)}; need (..., 3)")
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical_harmonics: degree={degree}; supported 1..4")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, _SH_C0)]
    if degree > 1:
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [_SH_C2[0] * x * y, _SH_C2[1] * y * z, _SH_C2[2] * zz + _SH_C2[3], _SH_C2[4] * x * z,
                _SH_C2[5] * (xx - yy)]
    if degree > 3:
        out += [_SH_C3[0] * y * (3 * xx - yy) * -1.0, _SH_C3[1] * x * y * z, _SH_C3[2] * y * (1 - 5 * zz),
                _SH_C3[3] * z * (5 * zz - 3), _SH_C3[2] * x * (1 - 5 * zz), _SH_C3[4] * z * (xx - yy),
                _SH_C3[0] * x * (3 * yy - xx)]
    return torch.stack(out, dim=-1)


class MLP(nn.Module):
    """Bias-free MLP with ReLU between layers (ER-NeRF's): parameters net.{i}.weight.

    Args:
        dim_in, dim_out, dim_hidden: widths; num_layers: number of Linear layers (>= 1).
    """

    def __init__(self, dim_in: int, dim_out: int, dim_hidden: int, num_layers: int):
        super().__init__()
        dims = [dim_in] + [dim_hidden] * (num_layers - 1) + [dim_out]
        self.net = nn.ModuleList(nn.Linear(dims[i], dims[i + 1], bias=False) for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i != len(self.net) - 1:
                x = F.relu(x)
        return x


@dataclass(frozen=True)
class AudioFieldConfig(JsonConfig):
    """AudioConditionedField hyper-parameters (defaults: ER-NeRF's head network, audio dim 64 as DAMC)."""

    bound: float = 1.0                      # the field lives in the box [-bound, bound]^3
    num_levels: int = 12                    # hash-grid levels per plane
    features_per_level: int = 1             # features per level
    log2_table_size: int = 14               # per-level hash table size 2**log2_table_size
    base_resolution: int = 64               # coarsest grid resolution
    max_resolution: float | None = None     # finest resolution; None = 512 * bound (ER-NeRF)
    audio_dim: int = 64                     # f_a: fused audio feature per frame
    audio_attention: bool = True            # region-aware audio (a * MLP(f_g)), ER-NeRF aud_ch_att_net
    eye_dim: int = 0                        # 0: no eye feature; 1: ER-NeRF's blink ratio
    num_layers: int = 3                     # sigma MLP layers
    hidden_dim: int = 64                    # sigma MLP width
    geo_feat_dim: int = 64                  # geometry features passed to the colour MLP
    color_num_layers: int = 2               # colour MLP layers
    color_hidden_dim: int = 64              # colour MLP width
    sh_degree: int = 4                      # spherical-harmonics bands of the view direction (16 values)
    latent_dim: int = 4                     # per-frame latent code size (0 = none)
    num_frames: int = 1                     # latent codes stored (training frames)

    def __post_init__(self):
        if self.bound <= 0:
            raise ValueError(f"AudioFieldConfig: bound={self.bound} must be > 0")
        if self.eye_dim not in (0, 1):
            raise ValueError(f"AudioFieldConfig: eye_dim={self.eye_dim}; use 0 (no eye) or 1")
        if min(self.num_layers, self.color_num_layers) < 1 or self.num_frames < 1 or self.audio_dim < 0:
            raise ValueError("AudioFieldConfig: num_layers and color_num_layers must be >= 1, num_frames >= 1, "
                             f"audio_dim >= 0 (got {self.num_layers}, {self.color_num_layers}, {self.num_frames}, "
                             f"{self.audio_dim})")

    @property
    def aabb(self) -> tuple[float, ...]:
        b = float(self.bound)
        return (-b, -b, -b, b, b, b)

    def triplane_config(self) -> TriPlaneConfig:
        top = self.max_resolution if self.max_resolution is not None else 512.0 * self.bound
        return TriPlaneConfig(aabb=self.aabb, num_levels=self.num_levels,
                              features_per_level=self.features_per_level, log2_table_size=self.log2_table_size,
                              base_resolution=self.base_resolution, max_resolution=top)


class AudioConditionedField(nn.Module, PretrainedMixin):
    """DAMC / ER-NeRF head radiance field (module docstring for the equations).

    Args:
        config: AudioFieldConfig.
    Call:
        field(points (N, 3), directions (N, 3) unit, audio (A,) or (N, A), frame_index, eye=None)
        -> (sigma (N,), rgb (N, 3)); frame_index: int, (N,) long, or None (zero latent code).
    """

    config_class = AudioFieldConfig

    def __init__(self, config: AudioFieldConfig | None = None):
        super().__init__()
        self.config = config = config or AudioFieldConfig()
        self.encoder = TriPlaneEncoder(config.triplane_config())
        in_dim = self.encoder.output_dim
        self.sigma_net = MLP(in_dim + config.audio_dim + config.eye_dim, 1 + config.geo_feat_dim,
                             config.hidden_dim, config.num_layers)
        self.color_net = MLP(config.sh_degree ** 2 + config.geo_feat_dim + config.latent_dim, 3,
                             config.color_hidden_dim, config.color_num_layers)
        self.aud_ch_att_net = MLP(in_dim, config.audio_dim, 64, 2) if config.audio_attention else None
        self.eye_att_net = MLP(in_dim, 1, 16, 2) if config.eye_dim else None
        self.individual_codes = nn.Parameter(torch.randn(config.num_frames, config.latent_dim) * 0.1)

    @property
    def aabb(self) -> tuple[float, ...]:
        return self.config.aabb

    def _per_point(self, value: torch.Tensor, num: int, width: int, name: str) -> torch.Tensor:
        if value.dim() == 1:
            value = value[None]
        if value.shape[-1] != width or value.shape[0] not in (1, num):
            raise ValueError(f"AudioConditionedField: {name} has shape {tuple(value.shape)}; need ({width},), "
                             f"(1, {width}) or ({num}, {width})")
        return value.expand(num, width)

    def density(self, points: torch.Tensor, audio: torch.Tensor, eye: torch.Tensor | None = None,
                encoded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma and geometry features.

        Args:
            points: (N, 3) world; audio: (A,) or (N, A); eye: (1,) / (N, 1) or None;
            encoded: precomputed tri-plane features (N, 3*L*F) (else computed here).
        Returns:
            sigma (N,), geo (N, geo_feat_dim).
        """
        cfg = self.config
        num = points.shape[0]
        # 1. tri-plane features
        enc = self.encoder(points) if encoded is None else encoded
        # 2. region-aware audio and eye features
        parts = [enc]
        if cfg.audio_dim:
            audio = self._per_point(audio.to(enc.dtype), num, cfg.audio_dim, "audio")
            if self.aud_ch_att_net is not None:
                audio = audio * self.aud_ch_att_net(enc)
            parts.append(audio)
        if cfg.eye_dim:
            if eye is None:
                raise ValueError("AudioConditionedField: the config has eye_dim=1; pass eye (the blink ratio)")
            eye = self._per_point(eye.to(enc.dtype), num, 1, "eye")
            parts.append(eye * torch.sigmoid(self.eye_att_net(enc)))
        # 3. sigma MLP: sigma = exp(h_0) (clamped to avoid overflow), geometry features h_1..
        h = self.sigma_net(torch.cat(parts, dim=-1))
        sigma = torch.exp(h[:, 0].clamp(max=15.0))
        return sigma, h[:, 1:]

    def frame_codes(self, frame_index, num: int, device, dtype) -> torch.Tensor:
        """(N, latent_dim) per-frame latent codes: int / (N,) long index, or None for zeros."""
        if frame_index is None:
            return torch.zeros(num, self.config.latent_dim, device=device, dtype=dtype)
        index = torch.as_tensor(frame_index, device=self.individual_codes.device).long().reshape(-1)
        if int(index.min()) < 0 or int(index.max()) >= self.config.num_frames:
            raise ValueError(f"AudioConditionedField: frame_index {int(index.min())}..{int(index.max())} is outside "
                             f"0..{self.config.num_frames - 1} (num_frames); pass None for an unseen frame")
        return self.individual_codes[index].to(device=device, dtype=dtype).expand(num, -1)

    def color(self, directions: torch.Tensor, geo: torch.Tensor, frame_index) -> torch.Tensor:
        """(N, 3) colour in [-1e-3, 1 + 1e-3] from view directions (N, 3), geometry features, frame codes."""
        parts = [spherical_harmonics(directions.to(geo.dtype), self.config.sh_degree), geo]
        if self.config.latent_dim:
            parts.append(self.frame_codes(frame_index, geo.shape[0], geo.device, geo.dtype))
        return torch.sigmoid(self.color_net(torch.cat(parts, dim=-1))) * (1 + 2e-3) - 1e-3

    def forward(self, points: torch.Tensor, directions: torch.Tensor, audio: torch.Tensor, frame_index=None,
                eye: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if points.dim() != 2 or points.shape[-1] != 3 or directions.shape != points.shape:
            raise ValueError(f"AudioConditionedField: points {tuple(points.shape)} and directions "
                             f"{tuple(directions.shape)} must both be (N, 3)")
        sigma, geo = self.density(points, audio, eye)
        return sigma, self.color(directions, geo, frame_index)
