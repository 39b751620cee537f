"""Vocal isolation, embedded DSP default: STFT soft masks from stereo centre extraction (Avendano &
Jot 2004 inter-channel similarity), median-filter harmonic/percussive separation (FitzGerald 2010) and
a vocal-band emphasis. No weights; long audio runs in overlapping blocks with flat memory.

The trained alternative (MDX-Net ONNX, e.g. Hallo's Kim_Vocal_2) lives in ``separation_mdx.py``
(`MdxNetSeparator`, `MdxNetParams`, `KIM_VOCAL_2`), which builds on this module; both return a
`Separation` whose accompaniment is exactly input - vocals.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..io.config import JsonConfig
from ..progress import Progress

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Separation:
    """Vocals and accompaniment of one recording; accompaniment == input - vocals exactly."""

    vocals: torch.Tensor  # (C, T) float32
    accompaniment: torch.Tensor  # (C, T) float32
    sample_rate: int  # Hz, the input's rate


@dataclasses.dataclass(frozen=True)
class DspSeparationConfig(JsonConfig):
    """Parameters of `separate_vocals_dsp`; times and frequencies are converted per sample rate."""

    window_seconds: float = 0.064  # STFT window; n_fft = the power of two nearest window_seconds * rate
    hop_divisor: int = 4  # hop = n_fft // hop_divisor: 4 or 8 (squared Hann windows then sum to a constant)
    harmonic_seconds: float = 0.3  # span of the median along time (sustained partials pass it)
    percussive_hz: float = 400.0  # span of the median along frequency (broadband hits pass it)
    mask_power: float = 2.0  # exponent p of the soft mask H^p / (H^p + P^p) (2: Wiener-like)
    percussive_weight: float = 2.0  # scales P in that mask; > 1 removes more drums (and consonants)
    centre_power: float = 6.0  # exponent on the L/R similarity (1 = centred, 0 = one-sided); 0 disables
    centre_smoothing: int = 3  # frames over which the similarity's terms are averaged (odd; 1 = none)
    low_hz: float = 120.0  # vocal band: high-pass corner in Hz (smooth roll-off below)
    high_hz: float = 8000.0  # vocal band: low-pass corner in Hz (smooth roll-off above)
    band_order: int = 2  # Butterworth-like order of both band edges (slope 6 dB/octave per order)
    block_seconds: float = 10.0  # audio per processing block (memory is flat in the song's length)
    median: str = (
        "auto"  # median filter kernel: "torch" (unfold + median), "numba", or "auto" (numba if it imports)
    )

    def __post_init__(self):
        checks = [
            (
                0.008 <= self.window_seconds <= 0.5,
                f"window_seconds must be in [0.008, 0.5], got {self.window_seconds}",
            ),
            (self.hop_divisor in (4, 8), f"hop_divisor must be 4 or 8, got {self.hop_divisor}"),
            (self.harmonic_seconds > 0, f"harmonic_seconds must be positive, got {self.harmonic_seconds}"),
            (self.percussive_hz > 0, f"percussive_hz must be positive, got {self.percussive_hz}"),
            (self.mask_power > 0, f"mask_power must be positive, got {self.mask_power}"),
            (self.percussive_weight >= 0, f"percussive_weight must be >= 0, got {self.percussive_weight}"),
            (self.centre_power >= 0, f"centre_power must be >= 0, got {self.centre_power}"),
            (
                self.centre_smoothing >= 1 and self.centre_smoothing % 2 == 1,
                f"centre_smoothing must be an odd number >= 1, got {self.centre_smoothing}",
            ),
            (
                0 <= self.low_hz < self.high_hz,
                f"need 0 <= low_hz < high_hz, got {self.low_hz}, {self.high_hz}",
            ),
            (self.band_order >= 1, f"band_order must be >= 1, got {self.band_order}"),
            (self.block_seconds >= 1.0, f"block_seconds must be >= 1, got {self.block_seconds}"),
            (
                self.median in ("auto", "torch", "numba"),
                f"median must be 'auto', 'torch' or 'numba', got {self.median!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"DspSeparationConfig: {message}")



# ---------------------------------------------------------------------------------------------
# median filters: (N, L) rows, a centred window of odd size k, "valid" output (N, L - k + 1)
# ---------------------------------------------------------------------------------------------


def median_filter_valid_torch(rows: torch.Tensor, size: int) -> torch.Tensor:
    """Sliding median along the last axis without padding. rows: (N, L) float32 -> (N, L - size + 1)."""
    return rows.unfold(-1, size, 1).median(dim=-1).values


@functools.lru_cache(maxsize=1)
def _numba_median():
    """Compile the numba sliding-median kernel on first use; None when numba is unavailable.

    Serial on purpose, like the Haar kernels (see ``ops/haar_kernels.py``): a ``parallel=True`` kernel
    runs on numba's "omp" threading layer, whose threads keep spinning after the region and slow the
    torch ops that follow on a 2-core machine. Serial, it releases the GIL and is re-entrant."""
    try:
        from numba import njit
    except Exception as error:  # ImportError, or a broken llvmlite install
        logger.info("numba unavailable (%s); median filters use torch", error)
        return None

    @njit(cache=False, nogil=True)
    def kernel(rows, size, out):  # pragma: no cover - compiled
        # a sorted copy of the window slides along each row: drop the outgoing value, insert the
        # incoming one by shifting its neighbours (O(size) per output instead of a sort)
        half = size // 2
        for r in range(rows.shape[0]):
            window = np.sort(rows[r, :size])
            out[r, 0] = window[half]
            for j in range(1, out.shape[1]):
                old, new = rows[r, j - 1], rows[r, j + size - 1]
                position = np.searchsorted(window, old)
                if new >= old:
                    while position + 1 < size and window[position + 1] < new:
                        window[position] = window[position + 1]
                        position += 1
                else:
                    while position > 0 and window[position - 1] > new:
                        window[position] = window[position - 1]
                        position -= 1
                window[position] = new
                out[r, j] = window[half]

    return kernel


def median_filter_valid_numba(rows: torch.Tensor, size: int) -> torch.Tensor:
    """Same as `median_filter_valid_torch`, with a compiled kernel (CPU float32)."""
    kernel = _numba_median()
    if kernel is None:
        return median_filter_valid_torch(rows, size)
    source = np.ascontiguousarray(rows.detach().cpu().numpy(), dtype=np.float32)
    out = np.empty((source.shape[0], source.shape[1] - size + 1), dtype=np.float32)
    kernel(source, size, out)
    return torch.from_numpy(out)


def _median_valid(rows: torch.Tensor, size: int, how: str) -> torch.Tensor:
    if how == "torch" or rows.device.type != "cpu" or (how == "auto" and _numba_median() is None):
        return median_filter_valid_torch(rows, size)
    return median_filter_valid_numba(rows, size)


# ---------------------------------------------------------------------------------------------
# the separator
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Geometry:
    n_fft: int
    hop: int
    time_half: int  # half-length (frames) of the median along time
    freq_half: int  # half-length (bins) of the median along frequency
    centre_half: int  # half-length (frames) of the similarity smoothing
    band: torch.Tensor  # (bins,) vocal-band gain in [0, 1]
    window: torch.Tensor  # (n_fft,) periodic Hann (analysis)
    synthesis_window: torch.Tensor  # (n_fft,) Hann / sum over frames of Hann^2 (constant for these hops)


def _geometry(config: DspSeparationConfig, sample_rate: int, device: torch.device) -> _Geometry:
    n_fft = 2 ** max(6, round(math.log2(config.window_seconds * sample_rate)))
    hop = n_fft // config.hop_divisor
    bins = n_fft // 2 + 1
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate, dtype=torch.float64)
    order = 2 * config.band_order
    band = 1.0 / torch.sqrt(1.0 + (freqs / config.high_hz) ** order)
    if config.low_hz > 0:
        band = band / torch.sqrt(1.0 + (config.low_hz / freqs.clamp(min=1e-3)) ** order)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    overlap_gain = float((window**2).sum() / hop)  # sum_j w^2(t - j hop): constant for hop <= n_fft / 4
    return _Geometry(
        n_fft=n_fft,
        hop=hop,
        time_half=max(1, round(config.harmonic_seconds * sample_rate / hop / 2)),
        freq_half=min(bins - 1, max(1, round(config.percussive_hz * n_fft / sample_rate / 2))),
        centre_half=config.centre_smoothing // 2,
        band=band.float().to(device),
        window=window.float().to(device),
        synthesis_window=(window / overlap_gain).float().to(device),
    )


def _frames(waveform: torch.Tensor, first: int, count: int, geo: _Geometry) -> torch.Tensor:
    """Spectra of frames first .. first+count-1 (frame j is centred on sample j * hop; zeros outside
    the signal). waveform: (C, T) -> complex (C, count, bins)."""
    start = first * geo.hop - geo.n_fft // 2
    stop = (first + count - 1) * geo.hop + geo.n_fft // 2
    total = waveform.shape[-1]
    piece = waveform[:, max(0, start) : min(total, stop)]
    piece = F.pad(piece, (max(0, -start), max(0, stop - total)))
    return torch.fft.rfft(piece.unfold(-1, geo.n_fft, geo.hop) * geo.window, dim=-1)


def _vocal_mask(
    spectra: torch.Tensor, geo: _Geometry, config: DspSeparationConfig, margin: int
) -> torch.Tensor:
    """Soft vocal mask of the inner frames.

    spectra: complex (C, N + 2 * margin, bins) -> mask (N, bins) in [0, 1].
    """
    frames = spectra.shape[1]
    inner = slice(margin, frames - margin)
    parts = torch.view_as_real(spectra)  # (C, frames, bins, 2)
    power = parts.square().sum(dim=-1)  # (C, frames, bins) = |X|^2
    magnitude = power.sqrt().mean(dim=0)  # (frames, bins): one mask for all channels keeps the image
    # 1. harmonic / percussive: medians along time (sustained) and frequency (broadband);
    #    mask = H^p / (H^p + (w P)^p) = 1 / (1 + (w P / H)^p)
    shift = margin - geo.time_half
    by_time = magnitude[shift : frames - shift].T.contiguous()  # (bins, N + 2 * time_half)
    harmonic = _median_valid(by_time, 2 * geo.time_half + 1, config.median).T
    padded = F.pad(magnitude[inner][None], (geo.freq_half, geo.freq_half), mode="reflect")[0]
    percussive = _median_valid(padded, 2 * geo.freq_half + 1, config.median)
    mask = percussive.mul_(config.percussive_weight).div_(harmonic.clamp(min=1e-12))
    mask = mask.pow_(config.mask_power).add_(1.0).reciprocal_()
    # 2. stereo centre: similarity 2 Re(L conj R) / (|L|^2 + |R|^2), summed over a few frames, is 1 for
    #    centred bins and falls towards 0 for one-sided ones
    if spectra.shape[0] == 2 and config.centre_power > 0:
        cross = (parts[0] * parts[1]).sum(dim=-1)  # Re(L conj R), (frames, bins)
        energy = power.sum(dim=0)
        width = geo.centre_half
        cross_sum = sum(cross[margin + d : frames - margin + d] for d in range(-width, width + 1))
        energy_sum = sum(energy[margin + d : frames - margin + d] for d in range(-width, width + 1))
        similarity = cross_sum.mul_(2.0).div_(energy_sum.clamp_(min=1e-12)).clamp_(0.0, 1.0)
        mask = mask.mul_(similarity.pow_(config.centre_power))
    # 3. vocal band
    return mask.mul_(geo.band)


def separate_vocals_dsp(
    waveform: torch.Tensor,
    sample_rate: int,
    *,
    config: DspSeparationConfig | None = None,
    progress: Progress | None = None,
) -> Separation:
    """Split a recording into vocals and accompaniment with STFT soft masks (no weights).

    The vocal mask is the product of a harmonic/percussive mask (median along time vs along
    frequency), a centre mask from the L/R similarity (stereo only) and a vocal-band gain. Blocks of
    `config.block_seconds` are processed with enough overlap that the result does not depend on the
    block size.

    Args:
        waveform: (C, T) float audio, C = 1 (mono) or 2 (stereo; centre extraction) or more (one
            mask from the mean magnitude, no centre extraction).
        sample_rate: Hz (>= 8000).
        config: DspSeparationConfig (default: DspSeparationConfig()).
        progress: optional callback (done_blocks, total_blocks); may raise to stop.

    Returns:
        Separation(vocals (C, T), accompaniment (C, T) = waveform - vocals, sample_rate).
    """
    config = config or DspSeparationConfig()
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 2 or waveform.shape[0] == 0:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(
            f"separate_vocals_dsp: expected a (channels, samples) tensor, got {shape}; "
            "take one item of a batch (waveform[0]) first"
        )
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 8000:
        raise ValueError(
            f"separate_vocals_dsp: sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}"
        )
    waveform = waveform.float()
    if waveform.shape[-1] == 0:
        raise ValueError("separate_vocals_dsp: the audio is empty (0 samples)")
    if not torch.isfinite(waveform).all():
        raise ValueError("separate_vocals_dsp: the audio contains NaN or infinite samples")
    geo = _geometry(config, sample_rate, waveform.device)
    total = waveform.shape[-1]
    half = geo.n_fft // 2
    block = max(geo.hop, int(config.block_seconds * sample_rate) // geo.hop * geo.hop)
    vocals = torch.zeros_like(waveform)
    blocks = math.ceil(total / block)
    margin = geo.time_half + geo.centre_half  # extra frames each side that the medians / smoothing need
    for index in range(blocks):
        # 1. the frames that touch this block's samples, plus context frames for the filters
        s0, s1 = index * block, min(total, (index + 1) * block)
        j_lo = (s0 - half) // geo.hop + 1
        j_hi = -((-(s1 + half)) // geo.hop)  # ceil
        spectra = _frames(waveform, j_lo - margin, j_hi - j_lo + 2 * margin, geo)
        # 2. masks, applied to every channel
        mask = _vocal_mask(spectra, geo, config, margin)
        masked = spectra[:, margin : spectra.shape[1] - margin] * mask
        # 3. inverse STFT by weighted overlap-add; keep the block's own samples
        pieces = torch.fft.irfft(masked, n=geo.n_fft, dim=-1).mul_(geo.synthesis_window)  # (C, N, n_fft)
        count, parts = pieces.shape[1], geo.n_fft // geo.hop
        out = torch.zeros(pieces.shape[0], count + parts - 1, geo.hop, device=pieces.device)
        pieces = pieces.view(pieces.shape[0], count, parts, geo.hop)
        for part in range(parts):  # frame i's part-th hop-long piece lands on hop slot i + part
            out[:, part : part + count] += pieces[:, :, part]
        origin = j_lo * geo.hop - half
        vocals[:, s0:s1] = out.view(out.shape[0], -1)[:, s0 - origin : s1 - origin]
        if progress is not None:
            progress(index + 1, blocks)
    return Separation(vocals=vocals, accompaniment=waveform - vocals, sample_rate=sample_rate)
