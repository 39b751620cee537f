"""Sub-band view of a 2D plane (SINGER paper §3.1, eqs. 1 and 5): the Haar LL/LH/HL/HH bands of
a log-mel spectrogram (or an audio embedding [d_a, l]) at every level, as a labelled image grid.

Layout: one row per level (level 1 at the top), one column per band in the chosen order;
every cell shows its band upsampled (nearest neighbour, so coarse levels look blocky) to a
common cell size, with low frequencies / first rows at the bottom as in a spectrogram.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Literal

import numpy as np
import torch

from ..io.config import JsonConfig
from ..ops import wavelet

logger = logging.getLogger(__name__)

COLORMAPS = ("viridis", "magma", "inferno", "plasma", "turbo", "twilight", "gray")
NORMALIZATIONS = ("band", "shared")
_LABEL_HEIGHT = 14
_GAP = 2


@dataclasses.dataclass(frozen=True)
class SubbandViewConfig(JsonConfig):
    """How to draw the sub-band grid."""

    levels: int = 2  # decomposition levels (rows of the grid), >= 1
    normalize: Literal["band", "shared"] = "band"  # per-cell range, or one range for all detail bands
    colormap: str = "viridis"  # one of COLORMAPS
    cell_height: int = 96  # pixels per cell; width follows the level-1 band's aspect ratio
    max_cell_width: int = 384  # cap on the cell width in pixels
    labels: bool = True  # draw "L1 LH (cH)" captions above each cell
    order: Literal["pywt", "singer"] = "pywt"  # band order (see singer_core.ops.wavelet)
    mode: str = "symmetric"  # odd-size extension (PyWavelets names)
    clip_percentile: float = 99.5  # detail bands: range = this percentile of |coef| (robust to spikes)

    def __post_init__(self):
        if not isinstance(self.levels, int) or self.levels < 1:
            raise ValueError(f"SubbandViewConfig.levels must be an integer >= 1, got {self.levels!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"SubbandViewConfig.normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.colormap not in COLORMAPS:
            raise ValueError(f"SubbandViewConfig.colormap must be one of {COLORMAPS}, got {self.colormap!r}")
        if self.order not in ("pywt", "singer"):
            raise ValueError(f"SubbandViewConfig.order must be 'pywt' or 'singer', got {self.order!r}")
        if self.mode not in wavelet.MODES:
            raise ValueError(f"SubbandViewConfig.mode must be one of {wavelet.MODES}, got {self.mode!r}")
        if not 16 <= self.cell_height <= 1024 or not 16 <= self.max_cell_width <= 4096:
            raise ValueError("SubbandViewConfig: cell_height must be 16..1024 and max_cell_width 16..4096")
        if not 50.0 <= self.clip_percentile <= 100.0:
            raise ValueError("SubbandViewConfig.clip_percentile must be in [50, 100]")



def log_mel_plane(
    waveform: torch.Tensor,
    sample_rate: int,
    *,
    n_mels: int = 80,
    hop_seconds: float = 0.0125,
    top_db: float = 80.0,
) -> torch.Tensor:
    """Log-mel spectrogram of a mono mix-down.

    Args:
        waveform: (T,) or (C, T) float audio in [-1, 1].
        sample_rate: samples per second (8 kHz .. 384 kHz).
        n_mels: mel bins (rows of the plane).
        hop_seconds: frame hop (12.5 ms = 80 frames/s, the mel rate of Wav2Lip-style encoders).
        top_db: dynamic range kept below the peak, in dB.

    Returns:
        (n_mels, frames) float32 plane in dB, row 0 = lowest mel band.
    """
    from ..audio.dsp import mel_power_spectrogram

    if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 384000:
        raise ValueError(f"log_mel_plane: sample_rate must be an integer in 8000..384000 Hz, got {sample_rate!r}")
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or waveform.shape[0] == 0:
        raise ValueError(f"log_mel_plane: expected audio of shape (T,) or (C, T), got {tuple(waveform.shape)}")
    if waveform.shape[-1] == 0:
        raise ValueError("log_mel_plane: the audio is empty (0 samples)")
    mono = waveform.float().mean(dim=0)
    if not torch.isfinite(mono).all():
        raise ValueError("log_mel_plane: the audio contains NaN or infinite samples")
    hop = max(1, round(hop_seconds * sample_rate))
    n_fft = 1 << max(8, math.ceil(math.log2(4 * hop)))
    mel = mel_power_spectrogram(mono, sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_min=0.0,
                                f_max=sample_rate / 2, norm="slaney", mel_scale="slaney")
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    return db.clamp_min(db.max() - top_db)


def _colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table."""
    import cv2

    ramp = np.arange(256, dtype=np.uint8)[:, None]
    if name == "gray":
        return np.repeat(ramp, 3, axis=1)
    code = getattr(cv2, f"COLORMAP_{name.upper()}")
    bgr = cv2.applyColorMap(ramp, code)[:, 0, :]
    return bgr[:, ::-1].copy()


def _to_unit(band: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.full(band.shape, 0.5, dtype=np.float32)
    return np.clip((band - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _detail_range(bands: list[np.ndarray], percentile: float) -> tuple[float, float]:
    values = np.concatenate([np.abs(b).ravel() for b in bands])
    peak = float(np.percentile(values, percentile)) if values.size else 0.0
    return -peak, peak


def _cell(band: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    flipped = band[::-1]  # row 0 (lowest frequency) at the bottom
    return cv2.resize(np.ascontiguousarray(flipped), (width, height), interpolation=cv2.INTER_NEAREST)


def _draw_label(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    import cv2

    cv2.putText(canvas, text, (x + 2, y + _LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_PLAIN, 0.8,
                (235, 235, 235), 1, cv2.LINE_AA)


def subband_grid(plane: torch.Tensor, config: SubbandViewConfig = SubbandViewConfig()) -> np.ndarray:
    """Draw the Haar sub-bands of ``plane`` at every level.

    Args:
        plane: (H, W) float tensor (e.g. a log-mel spectrogram, or an embedding [d_a, l]).
        config: drawing options.

    Returns:
        (rows, cols, 3) uint8 RGB image.
    """
    if not isinstance(plane, torch.Tensor) or plane.ndim != 2:
        shape = tuple(plane.shape) if isinstance(plane, torch.Tensor) else type(plane).__name__
        raise ValueError(f"subband_grid: expected a 2D tensor (H, W), got {shape}")
    if not torch.isfinite(plane).all():
        raise ValueError("subband_grid: the plane contains NaN or infinite values")
    deepest = min(wavelet.max_level(s) for s in plane.shape)
    if config.levels > deepest:
        raise ValueError(
            f"subband_grid: {config.levels} level(s) need at least {2 ** config.levels} samples on each "
            f"axis, the plane is {tuple(plane.shape)} (at most {deepest} level(s)); "
            "use fewer levels or a longer input"
        )
    plane64 = plane.detach().to("cpu", torch.float64)
    levels = []
    current = plane64
    for _ in range(config.levels):
        bands = wavelet.haar_dwt2(current, mode=config.mode, order=config.order)
        levels.append([b.numpy() for b in bands.unbind(0)])
        current = bands[0]

    # 1. ranges: the approximation is min-max scaled, details symmetric around zero
    shared = _detail_range([b for lv in levels for b in lv[1:]], config.clip_percentile)
    lut = _colormap_lut(config.colormap)
    names = wavelet.BAND_NAMES[config.order]
    pywt_names = wavelet.PYWT_NAMES[config.order]

    # 2. geometry
    first = levels[0][0]
    cell_h = config.cell_height
    cell_w = int(min(config.max_cell_width, max(16, round(cell_h * first.shape[1] / max(1, first.shape[0])))))
    label_h = _LABEL_HEIGHT if config.labels else 0
    rows = config.levels * (label_h + cell_h + _GAP) + _GAP
    cols = 4 * (cell_w + _GAP) + _GAP
    canvas = np.full((rows, cols, 3), 24, dtype=np.uint8)

    # 3. cells
    for level_index, bands in enumerate(levels):
        top = _GAP + level_index * (label_h + cell_h + _GAP)
        for band_index, band in enumerate(bands):
            left = _GAP + band_index * (cell_w + _GAP)
            if band_index == 0:
                lo, hi = float(band.min()), float(band.max())
            elif config.normalize == "shared":
                lo, hi = shared
            else:
                lo, hi = _detail_range([band], config.clip_percentile)
            unit = _to_unit(_cell(band, cell_h, cell_w), lo, hi)
            canvas[top + label_h : top + label_h + cell_h, left : left + cell_w] = lut[
                np.round(unit * 255).astype(np.uint8)
            ]
            if config.labels:
                _draw_label(canvas, f"L{level_index + 1} {names[band_index]} ({pywt_names[band_index]})", left, top)
    return canvas


def audio_subband_image(
    waveform: torch.Tensor,
    sample_rate: int,
    config: SubbandViewConfig = SubbandViewConfig(),
    *,
    n_mels: int = 80,
) -> np.ndarray:
    """Log-mel spectrogram of the audio -> sub-band grid (uint8 RGB)."""
    plane = log_mel_plane(waveform, sample_rate, n_mels=n_mels)
    deepest = min(wavelet.max_level(s) for s in plane.shape)
    if config.levels > deepest:
        need = 2**config.levels
        seconds = waveform.shape[-1] / sample_rate
        fixes = [f"lower 'levels' to {deepest}"] if deepest >= 1 else []
        if plane.shape[1] < need:
            fixes.append(f"use a clip of at least {need * 0.0125:.2f} s")
        if plane.shape[0] < need:
            fixes.append(f"raise 'n_mels' to at least {need}")
        raise ValueError(
            f"{config.levels} wavelet level(s) need at least {need} mel bins and {need} spectrogram frames, "
            f"but this {seconds:.2f} s clip gives {plane.shape[0]} bins x {plane.shape[1]} frames "
            f"(12.5 ms each); " + " or ".join(fixes)
        )
    if float(plane.max() - plane.min()) == 0.0:
        logger.warning("audio_subband_image: the audio is silent; every band will be flat")
    return subband_grid(plane, config)


def feature_plane(features: torch.Tensor, row: int = -1) -> torch.Tensor:
    """The d_a x l embedding the MSM transforms (SINGER §3.1): feature width x time.

    Args:
        features: (F, R, D) per-frame audio features (SingerAudioFeatures.features).
        row: which of the R rows per frame (a layer, or a sub-frame step); -1 = the last,
            and any index out of range is an error. Steps (R > 1 time steps per frame) can be
            laid out in time order instead with `row=None`.

    Returns:
        (D, F) float32 plane, or (D, F * R) for row=None.
    """
    if features.ndim != 3 or 0 in features.shape:
        raise ValueError(f"feature_plane: expected features of shape (frames, rows, width), got {tuple(features.shape)}")
    if row is None:
        return features.float().reshape(-1, features.shape[-1]).T.contiguous()
    if not -features.shape[1] <= row < features.shape[1]:
        raise ValueError(f"feature_plane: row {row} is out of range for {features.shape[1]} rows per frame")
    return features[:, row].float().T.contiguous()


def feature_subband_image(
    features: torch.Tensor,
    config: SubbandViewConfig = SubbandViewConfig(),
    *,
    row: int | None = -1,
    fps: float = 25.0,
) -> np.ndarray:
    """Per-frame audio features -> sub-band grid of their d_a x l plane (uint8 RGB)."""
    plane = feature_plane(features, row)
    deepest = min(wavelet.max_level(s) for s in plane.shape)
    if config.levels > deepest:
        need = 2**config.levels
        fixes = [f"lower 'levels' to {deepest}"] if deepest >= 1 else []
        if plane.shape[1] < need:
            fixes.append(f"use at least {need / fps:.2f} s of audio ({need} frames at {fps:g} fps)")
        raise ValueError(
            f"{config.levels} wavelet level(s) need a plane of at least {need} x {need}, but the features "
            f"give {plane.shape[0]} (width) x {plane.shape[1]} (frames); " + " or ".join(fixes)
        )
    return subband_grid(plane, config)
