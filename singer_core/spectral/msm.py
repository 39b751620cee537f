"""Multi-scale Spectral Module (SINGER paper §3.2, eqs. 2-4; official `MultiSpectralAttentionLayer`).

What the official code computes (github yl4467/singer, `models/models/audio_spectral_embed.py`, read for
behaviour, not copied). Built as `MultiSpectralAttentionLayer(batchsize=1, nframes=14, channel=4, 64, 64)`
and stored under `audioembed.` in `net.pth`:

* `dct_layer.weight` (1, 4, 14, 64, 64) is a *buffer* (never trained; random normal from init). Its
  forward is `einsum('b c f w h, d c e w h -> b c f w h', z, weight)`: the buffer's batch (d) and frame (e)
  axes are summed, so the latent is multiplied by `W = weight.sum((0, 2))` of shape (4, 64, 64).
* The product (B, 4, F, 64, 64) is cut into 4 chunks along dim 3 -- the latent *height* (16 rows each;
  the paper says width) -- and each chunk is summed over its rows and columns: s (4 chunks, B, C=4, F).
* `fc` = Linear(4 -> 2, no bias), ReLU, Linear(2 -> 1, no bias), Sigmoid acts on the *latent channel*
  axis (its 4 inputs are the 4 latent channels, not the 4 chunks); the sigmoids are then **summed over
  the F frames**: one weight per chunk and batch element, in (0, F).
* Chunk k's weight scales sub-band k of the audio embedding. The audio embedding is Hallo's
  `AudioProjModel` output (B, F, 32, 768); it is transposed to (B, 768, 32, F) and given one level of the
  WaveCNet Haar DWT on its last two axes (height = the 32 context tokens, width = the F frames), bands
  in WaveCNet order (LL, LH, HL, HH) where the first letter is the filter along the height. That is
  PyWavelets' (cA, cV, cH, cD), convolution sign (detail = (x0 - x1)/sqrt 2) -- exactly
  `haar_dwt2(order="singer")` of :mod:`singer_core.ops.wavelet`; no sign needs flipping (nor
  could a sign matter here: a band scaled by a scalar and inverted is unchanged by flipping its sign in
  both transforms -- only the band order matters, and the tests pin it).
* The weighted bands go through the inverse transform and are transposed back to (B, F, 32, 768).
* Call sites: training applies it once per step to the noisy latents z_t (`audioembed(audioproj(a), z_t)`);
  the inference pipeline applies it ONCE per clip, before the denoising loop, to the initial noise
  latents z_T (B=1, 4, 16, 64, 64), then appends a zero audio tensor for classifier-free guidance.
  Training clips have 14 frames (the buffer's 14), inference clips 16, so the official weights lie in
  (0, 14) in training and (0, 16) at inference.
* Its forward also saves the product to `res.pt` on every call; we write nothing.

Generalisation (form="official"), exact at the official shapes:
* batch: every latent batch element gets its own four weights; the latent batch must equal the audio
  batch or be 1 (broadcast), as in the official broadcast.
* frames: the buffer's frame axis is summed (as officially), so any latent frame count F works; with
  `gate="official"` the weights are sums of F sigmoids, exactly as the official code (so they grow with F).
* latent size: a latent whose (H, W) differs from the buffer's (64, 64) is first average-pooled to it
  with `adaptive_avg_pool2d` -- the line the official code carries commented out (from FcaNet, where
  this layer comes from); at 64x64 no pooling happens and the computation is the official one.
* odd audio sizes (officially an error: WaveCNet's matrices need even sizes): the odd axis is extended with PyWavelets' `mode`
  (default symmetric) and the inverse is cropped back, so equal band weights still give a scaled copy.

form="paper" follows eqs. 2-4 literally: a tunable parameter w the size of z_t (F, C, H, W) (eq. 2,
trilinearly resampled when z_t has another size), four chunks along the *width*, each chunk reduced to
its per-channel mean over its positions (per frame), the concatenation (4*C) through a two-layer FC to
four sigmoids per frame (eq. 3), reduced over frames by `gate`; the four weights scale the Haar
LL/LH/HL/HH of the audio embedding (eq. 4), then the inverse. Means (not sums) keep the FC input
independent of the latent size.

`gate`: "official" uses sigmoid (summed over frames for the official form); "unit" uses
2*sigmoid (averaged over frames), so a zero FC output gives band weight exactly 1. `identity_init`
(needs gate="unit") zeroes the last FC layer, so the module starts as the identity on the audio.
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

FORMS = ("official", "paper")
GATES = ("official", "unit")
NUM_BANDS = 4


@dataclasses.dataclass(frozen=True)
class MSMConfig(JsonConfig):
    """Shape and behaviour of the Multi-scale Spectral Module. Defaults load the official `audioembed.`."""

    form: Literal["official", "paper"] = "official"  # official net.pth layout, or the paper's eqs. 2-4
    latent_channels: int = 4  # c of z_t (SD VAE: 4); the official FC's input width
    latent_height: int = 64  # spatial size of the buffer / of w (official: 64 = 512 px / 8)
    latent_width: int = 64  # as latent_height
    buffer_batch: int = 1  # official buffer's batch axis (summed in forward; net.pth: 1)
    frames: int = 14  # official buffer's frame axis (summed; net.pth: 14) / frames of w in the paper form
    hidden: int = 2  # FC hidden width (official: chunk // 2 = 2)
    gate: Literal["official", "unit"] = "official"  # sigmoid (summed over frames) or 2*sigmoid (averaged)
    identity_init: bool = False  # start as the identity on the audio (needs gate="unit")
    mode: str = "symmetric"  # extension of odd audio axes before the DWT (PyWavelets names)

    def __post_init__(self):
        name = type(self).__name__
        if self.form not in FORMS:
            raise ValueError(f"{name}.form must be one of {FORMS}, got {self.form!r}")
        if self.gate not in GATES:
            raise ValueError(f"{name}.gate must be one of {GATES}, got {self.gate!r}")
        for field in ("latent_channels", "latent_height", "latent_width", "buffer_batch", "frames", "hidden"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{field} must be an integer >= 1, got {value!r}")
        if self.form == "official" and self.latent_height % NUM_BANDS:
            raise ValueError(
                f"{name}.latent_height must be a multiple of {NUM_BANDS} (one chunk per band) "
                f"for form='official', got {self.latent_height}"
            )
        if self.form == "paper" and self.latent_width < NUM_BANDS:
            raise ValueError(
                f"{name}.latent_width must be >= {NUM_BANDS} for form='paper' (four chunks along "
                f"the width), got {self.latent_width}"
            )
        if self.identity_init and self.gate != "unit":
            raise ValueError(
                f"{name}: identity_init=True needs gate='unit' (a sigmoid gate never equals 1; "
                "'unit' uses 2*sigmoid, which is exactly 1 at a zero FC output)"
            )
        if self.mode not in wavelet.MODES:
            raise ValueError(f"{name}.mode must be one of {wavelet.MODES}, got {self.mode!r}")


class _LatentBuffer(nn.Module):
    """Holds the official `dct_layer.weight` buffer (B0, C, F0, H, W); its batch and frame axes are summed."""

    def __init__(self, shape: tuple[int, int, int, int, int]):
        super().__init__()
        self.register_buffer("weight", torch.randn(shape))


class MultiScaleSpectralModule(nn.Module, PretrainedMixin):
    """SINGER's MSM: latent-driven weights for the Haar sub-bands of the audio embedding.

    Args:
        config: MSMConfig (form, sizes, gate, identity_init).

    State dict (form="official"): `dct_layer.weight` (buffer_batch, C, frames, H, W) buffer,
    `fc.0.weight` (hidden, C), `fc.2.weight` (1, hidden) -- the keys and shapes of `audioembed.` in net.pth.
    (form="paper"): `latent_weight` (frames, C, H, W) parameter, `fc.0.weight` (hidden, 4*C),
    `fc.2.weight` (4, hidden).
    """

    config_class = MSMConfig

    def __init__(self, config: MSMConfig | None = None):
        super().__init__()
        self.config = config = config or MSMConfig()
        channels = config.latent_channels
        if config.form == "official":
            self.dct_layer = _LatentBuffer(
                (config.buffer_batch, channels, config.frames, config.latent_height, config.latent_width)
            )
            fc_in, fc_out = channels, 1
        else:
            self.latent_weight = nn.Parameter(
                torch.ones(config.frames, channels, config.latent_height, config.latent_width)
            )
            fc_in, fc_out = NUM_BANDS * channels, NUM_BANDS
        self.fc = nn.Sequential(
            nn.Linear(fc_in, config.hidden, bias=False),
            nn.ReLU(),
            nn.Linear(config.hidden, fc_out, bias=False),
            nn.Sigmoid(),
        )
        if config.identity_init:
            nn.init.zeros_(self.fc[2].weight)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_official(
        cls, state: dict[str, torch.Tensor], *, prefix: str = "audioembed.", **overrides
    ) -> MultiScaleSpectralModule:
        """Build the official form from a net.pth-style state dict (keys under `prefix`).

        Args:
            state: mapping of tensor names to tensors (e.g. the whole net.pth, loaded with weights_only=True).
            prefix: where the MSM lives in `state`.
            overrides: other MSMConfig fields (e.g. gate); sizes come from the buffer's shape.
        """
        sub = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        if "dct_layer.weight" not in sub:
            raise ValueError(
                f"MultiScaleSpectralModule.from_official: no '{prefix}dct_layer.weight' in the "
                "state dict; give SINGER's net.pth (or pass the prefix its MSM is stored under)"
            )
        batch, channels, frames, height, width = sub["dct_layer.weight"].shape
        hidden = sub["fc.0.weight"].shape[0] if "fc.0.weight" in sub else 2
        config = MSMConfig(
            form="official",
            latent_channels=channels,
            latent_height=height,
            latent_width=width,
            buffer_batch=batch,
            frames=frames,
            hidden=hidden,
            **overrides,
        )
        module = cls(config)
        check_state_dict(module, sub, source=f"MultiScaleSpectralModule.from_official(prefix={prefix!r})")
        module.load_state_dict({key: value.float() for key, value in sub.items()}, strict=True)
        return module

    # ------------------------------------------------------------------ forward

    def band_weights(self, latents: torch.Tensor) -> torch.Tensor:
        """Per-band weights from the latents (eqs. 2-3).

        Args:
            latents: (B, C, F, H, W) noisy latents z_t in the UNet3D layout (b c f h w).

        Returns:
            (B, 4) weights for the bands (LL, LH, HL, HH) in WaveCNet order (= order="singer").
        """
        config = self.config
        if latents.ndim != 5 or latents.shape[1] != config.latent_channels:
            raise ValueError(
                f"MultiScaleSpectralModule: latents must be (B, {config.latent_channels}, F, H, W), "
                f"got shape {tuple(latents.shape)}"
            )
        batch, channels, frames, height, width = latents.shape
        if config.form == "official":
            # 1. official einsum: the buffer's batch and frame axes are summed
            weight = self.dct_layer.weight.sum(dim=(0, 2)).to(latents.dtype)  # (C, Hb, Wb)
            size = (config.latent_height, config.latent_width)
            if (height, width) != size:
                # documented rule: pool the latent to the buffer's size (FcaNet's adaptive pooling)
                latents = F.adaptive_avg_pool2d(
                    latents.reshape(batch, channels * frames, height, width), size
                )
                latents = latents.view(batch, channels, frames, *size)
            # 2. chunks along dim 3 (the latent height), each summed over its rows and columns
            product = latents * weight[None, :, None]
            chunk_sums = product.view(batch, channels, frames, NUM_BANDS, -1).sum(-1)  # (B, C, F, 4)
            # 3. FC over the latent channels, per chunk and frame
            gates = self.fc(chunk_sums.permute(0, 3, 2, 1)).squeeze(-1)  # (B, 4, F)
        else:
            # 1. eq. 2: w * z_t, w resampled (trilinear) if z_t has another (F, H, W)
            weight = self.latent_weight.to(latents.dtype)  # (Fw, C, Hw, Ww)
            if tuple(weight.shape[-2:]) != (height, width) or weight.shape[0] != frames:
                weight = F.interpolate(
                    weight.permute(1, 0, 2, 3)[None],
                    size=(frames, height, width),
                    mode="trilinear",
                    align_corners=False,
                )[0].permute(1, 0, 2, 3)
            product = latents * weight.permute(1, 0, 2, 3)[None]  # (B, C, F, H, W)
            # 2. four chunks along the width, each reduced to its per-channel, per-frame mean
            chunks = torch.tensor_split(product, NUM_BANDS, dim=-1)
            means = torch.stack([chunk.mean(dim=(-2, -1)) for chunk in chunks], dim=1)  # (B, 4, C, F)
            # 3. eq. 3: FC on the concatenation of the four chunk descriptors -> four weights per frame
            gates = self.fc(means.permute(0, 3, 1, 2).reshape(batch, frames, NUM_BANDS * channels))
            gates = gates.transpose(1, 2)  # (B, 4, F)
        # 4. reduce over frames: official = sum of sigmoids; unit = 2 * mean (exactly 1 at zero FC output)
        if config.gate == "official":
            return gates.sum(dim=-1)
        return 2.0 * gates.mean(dim=-1)

    def forward(self, audio: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Reweight the Haar sub-bands of the audio embedding (eq. 4) and invert the transform.

        Args:
            audio: (B_a, F_a, T, D) audio embedding (Hallo AudioProjModel output: (B, F, 32, 768)).
            latents: (B, C, F, H, W) noisy latents (z_t in training, z_T once per clip at inference).
                B must equal B_a or be 1.

        Returns:
            (max(B, B_a), F_a, T, D) reweighted audio embedding, dtype of `audio`.
        """
        if audio.ndim != 4:
            raise ValueError(
                f"MultiScaleSpectralModule: audio must be (B, F, tokens, dim), got shape {tuple(audio.shape)}"
            )
        weights = self.band_weights(latents)  # (B, 4)
        if weights.shape[0] not in (audio.shape[0], 1) and audio.shape[0] != 1:
            raise ValueError(
                f"MultiScaleSpectralModule: latent batch {weights.shape[0]} does not match audio "
                f"batch {audio.shape[0]}; give equal batches or a batch of 1 for either"
            )
        # 1. (B, F, T, D) -> (B, D, T, F): DWT height = tokens, width = frames, as officially
        planes = audio.permute(0, 3, 2, 1)
        size = tuple(planes.shape[-2:])
        bands = wavelet.haar_dwt2(planes, mode=self.config.mode, order="singer")  # (B, D, 4, t, f)
        # 2. eq. 4: one weight per band and batch element
        bands = bands * weights.to(bands.dtype)[:, None, :, None, None]
        # 3. inverse transform, back to (B, F, T, D)
        return wavelet.haar_idwt2(bands, size=size, order="singer").permute(0, 3, 2, 1)
