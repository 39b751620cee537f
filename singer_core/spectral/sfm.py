"""Self-adaptive Filter Module (SINGER paper §3.3, eqs. 5-8; official `hidden_spectral_weighting`).

What the official code computes (github yl4467/singer, `models/models/unet_3d_revised.py`, read for
behaviour, not copied). Built as `hidden_spectral_weighting(chunks=4, block_out_channels[-1]=1280,
attention_head_dim[-1]=8)` and applied in `UNet3DConditionModel.forward` right after the mid-block and
before `mid_block_additional_residual` is added (every denoising step, every CFG branch):

* input (B, 1280, F, h, w) -> (B*F, 1280, h, w); one level of the WaveCNet Haar DWT (bands LL, LH, HL,
  HH with the first letter along the height = PyWavelets (cA, cV, cH, cD), convolution sign: our
  `haar_dwt2(order="singer")`, no sign flip; a sign could not matter anyway, since
  each band is only scaled by a scalar before the inverse -- the band order does, and is tested);
* eq. 6: `einsum('n b c h w, n m c s t -> n b c h w', bands, weight)` with the parameter `weight`
  (4, 1, 1280, 4, 4): the (m, s, t) axes are summed, so each band n and channel c is scaled by the
  scalar `weight[n, :, c].sum()` (the 4x4 is not a spatial map); then the inverse transform;
* eqs. 7-8: `fc` = Linear(8 -> 4, no bias), ReLU, Linear(4 -> 8, no bias), Sigmoid, applied to the
  *input* features (not the filtered ones) along their last axis, the mid-block *width* -- hence the
  official weights need width 8 (512 px images); the output is sigmoid(FC(H)) * IDWT(w * DWT(H)).

Generalisation, exact at width 8 (`fc_width`):
* other widths: the features are resampled along the width to `fc_width` (area averaging when
  narrower, linear interpolation with align_corners=False when wider), the FC gate is computed there,
  and the gate is resampled back to the true width by the same rule. Height, frames and
  batch are free (the official code has no constraint there).
* odd h or w: the DWT extends the odd axis with PyWavelets' `mode` and the inverse crops it back.

`gate`: "official" = sigmoid(FC(H)); "unit" = 2*sigmoid(FC(H)), exactly 1 at a zero FC output.
`identity_init` (needs gate="unit"): band weights 1 (every weight entry 1/16) and a zero last FC layer,
so the module starts as the identity (up to float rounding of the orthonormal transform pair).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import PretrainedMixin, check_state_dict
from ..io.config import JsonConfig
from ..ops import wavelet

logger = logging.getLogger(__name__)

GATES = ("official", "unit")
NUM_BANDS = 4


@dataclasses.dataclass(frozen=True)
class SFMConfig(JsonConfig):
    """Shape and behaviour of the Self-adaptive Filter Module. Defaults load the official weights."""

    channels: int = 1280  # mid-block channels (SD1.5 block_out_channels[-1])
    fc_width: int = (
        8  # width the FC acts on (official: attention_head_dim[-1] = 8 = mid-block width at 512 px)
    )
    fc_hidden: int = 4  # FC hidden width (official: fc_width // 2)
    weight_size: int = 4  # spatial extent of the official band weight, summed away (official: fc_width // 2)
    gate: Literal["official", "unit"] = "official"  # sigmoid(FC) or 2*sigmoid(FC)
    identity_init: bool = False  # start as the identity (needs gate="unit")
    mode: str = "symmetric"  # extension of odd axes before the DWT (PyWavelets names)

    def __post_init__(self):
        name = type(self).__name__
        for field in ("channels", "fc_width", "fc_hidden", "weight_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{field} must be an integer >= 1, got {value!r}")
        if self.gate not in GATES:
            raise ValueError(f"{name}.gate must be one of {GATES}, got {self.gate!r}")
        if self.identity_init and self.gate != "unit":
            raise ValueError(
                f"{name}: identity_init=True needs gate='unit' (a sigmoid gate never equals 1; "
                "'unit' uses 2*sigmoid, which is exactly 1 at a zero FC output)"
            )
        if self.mode not in wavelet.MODES:
            raise ValueError(f"{name}.mode must be one of {wavelet.MODES}, got {self.mode!r}")


def _resample_width(x: torch.Tensor, width: int) -> torch.Tensor:
    """Resample the last axis of x (N, C, h, w) to `width`: area when narrowing, linear when widening."""
    if x.shape[-1] == width:
        return x
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    if x.shape[-1] > width:
        flat = F.adaptive_avg_pool1d(flat, width)
    else:
        flat = F.interpolate(flat, size=width, mode="linear", align_corners=False)
    return flat.view(*x.shape[:-1], width)


class SelfAdaptiveFilterModule(nn.Module, PretrainedMixin):
    """SINGER's SFM: per-band, per-channel filtering of the mid-block features times a learned gate.

    Args:
        config: SFMConfig.

    State dict: `weight` (4, 1, channels, weight_size, weight_size), `fc.0.weight` (fc_hidden, fc_width),
    `fc.2.weight` (fc_width, fc_hidden) -- `denoising_unet.hidden_spectral_weighting.*` in net.pth.
    """

    config_class = SFMConfig

    def __init__(self, config: SFMConfig | None = None):
        super().__init__()
        self.config = config = config or SFMConfig()
        size = config.weight_size
        if config.identity_init:
            weight = torch.full((NUM_BANDS, 1, config.channels, size, size), 1.0 / (size * size))
        else:
            weight = torch.randn(NUM_BANDS, 1, config.channels, size, size)
        self.weight = nn.Parameter(weight)
        self.fc = nn.Sequential(
            nn.Linear(config.fc_width, config.fc_hidden, bias=False),
            nn.ReLU(),
            nn.Linear(config.fc_hidden, config.fc_width, bias=False),
            nn.Sigmoid(),
        )
        if config.identity_init:
            nn.init.zeros_(self.fc[2].weight)

    @classmethod
    def from_official(
        cls,
        state: dict[str, torch.Tensor],
        *,
        prefix: str = "denoising_unet.hidden_spectral_weighting.",
        **overrides,
    ) -> SelfAdaptiveFilterModule:
        """Build from a net.pth-style state dict (keys under `prefix`); sizes come from the tensors.

        Args:
            state: mapping of tensor names to tensors (e.g. net.pth loaded with weights_only=True).
            prefix: where the SFM lives in `state`.
            overrides: other SFMConfig fields (gate, mode).
        """
        sub = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        if "weight" not in sub or "fc.0.weight" not in sub:
            raise ValueError(
                f"SelfAdaptiveFilterModule.from_official: no '{prefix}weight' / '{prefix}fc.0.weight' "
                "in the state dict; give SINGER's net.pth (or the prefix its SFM is stored under)"
            )
        _, _, channels, size, _ = sub["weight"].shape
        hidden, width = sub["fc.0.weight"].shape
        module = cls(
            SFMConfig(channels=channels, fc_width=width, fc_hidden=hidden, weight_size=size, **overrides)
        )
        check_state_dict(module, sub, source=f"SelfAdaptiveFilterModule.from_official(prefix={prefix!r})")
        module.load_state_dict({key: value.float() for key, value in sub.items()}, strict=True)
        return module

    def band_scales(self) -> torch.Tensor:
        """(4, channels) effective scale of each band (LL, LH, HL, HH in order="singer") and channel."""
        return self.weight.sum(dim=(1, 3, 4))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Filter the mid-block output (eqs. 5-8).

        Args:
            hidden: (B, C, F, h, w) mid-block output in the UNet3D layout, or (N, C, h, w) frames.

        Returns:
            Same shape and dtype as `hidden`.
        """
        config = self.config
        if hidden.ndim not in (4, 5) or hidden.shape[1] != config.channels:
            raise ValueError(
                f"SelfAdaptiveFilterModule: expected (B, {config.channels}, F, h, w) or "
                f"(N, {config.channels}, h, w), got shape {tuple(hidden.shape)}"
            )
        video = hidden.ndim == 5
        if video:
            batch, channels, frames, height, width = hidden.shape
            frames_first = hidden.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
        else:
            frames_first = hidden
        size = tuple(frames_first.shape[-2:])
        # 1. eq. 5: Haar DWT, bands in the official (WaveCNet) order
        bands = wavelet.haar_dwt2(frames_first, mode=config.mode, order="singer")  # (N, C, 4, h/2, w/2)
        # 2. eq. 6: one scale per band and channel (the official 4x4 is summed), then the inverse
        scales = self.band_scales().to(bands.dtype).transpose(0, 1)  # (C, 4)
        filtered = wavelet.haar_idwt2(bands * scales[:, :, None, None], size=size, order="singer")
        # 3. eq. 7: gate from the unfiltered features, FC along the width (resampled to fc_width)
        gate = self.fc(_resample_width(frames_first, config.fc_width))
        gate = _resample_width(gate, size[1]) if size[1] != config.fc_width else gate
        if config.gate == "unit":
            gate = 2.0 * gate
        # 4. eq. 8: gate * filtered features, back to the input layout
        out = gate.to(filtered.dtype) * filtered
        if video:
            out = out.view(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)
        return out
