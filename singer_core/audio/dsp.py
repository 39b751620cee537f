"""Audio signal-processing kernels that need no torchaudio: the windowed-sinc resampler, mel filterbanks
(Slaney / HTK), the mel power spectrogram and IIR filtering.

torchaudio's last release (2.11) may not load beside a newer torch, and ComfyUI users get whatever torch
ComfyUI installs, so the pack computes these itself, with the same definitions torchaudio documents (and
the tests compare against torchaudio wherever it imports):

- resampling: the band-limited windowed-sinc interpolation of Smith's resampling method as torchaudio
  applies it (rates reduced by their gcd, cut-off ``rolloff * min(orig, new)``, ``lowpass_filter_width``
  zero crossings each side, a Hann-squared-cosine or Kaiser window, one strided convolution);
- mel filterbanks: triangular filters evenly spaced on the HTK (2595 log10(1 + f / 700)) or Slaney
  (linear below 1 kHz, logarithmic above) mel scale, optionally area-normalised (Slaney);
- IIR filtering: the direct-form difference equation with zero initial state (``scipy.signal.lfilter``).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

KAISER_BETA = 14.769656459379492  # torchaudio's default Kaiser window shape for "sinc_interp_kaiser"
RESAMPLING_METHODS = ("sinc_interp_hann", "sinc_interp_kaiser")
MEL_SCALES = ("htk", "slaney")


# ---- resampling --------------------------------------------------------------------------------------
def sinc_resample_kernel(orig_rate: int, new_rate: int, *, lowpass_filter_width: int = 6, rolloff: float = 0.99,
                         method: str = "sinc_interp_hann", beta: float | None = None,
                         dtype: torch.dtype = torch.float32, device="cpu") -> tuple[torch.Tensor, int, int, int]:
    """The polyphase filter bank of the windowed-sinc resampler.

    Args:
        orig_rate, new_rate: integer rates in Hz.
        lowpass_filter_width: zero crossings of the sinc on each side.
        rolloff: cut-off as a fraction of the lower Nyquist frequency.
        method: "sinc_interp_hann" or "sinc_interp_kaiser".
        beta: Kaiser shape (None: 14.7697), only for "sinc_interp_kaiser".
        dtype, device: of the kernel (the dtype of the audio it filters).

    Returns:
        kernel (new, 1, 2 * width + orig), width, and the gcd-reduced orig and new rates.
    """
    if method not in RESAMPLING_METHODS:
        raise ValueError(f"resample: method must be one of {RESAMPLING_METHODS}, got {method!r}")
    gcd = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // gcd, int(new_rate) // gcd
    # 1. cut-off and half-length of the filter, in input samples
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    # 2. sinc argument for each output phase (rows) and input tap (columns), in units of the cut-off
    taps = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig
    phases = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new
    t = ((phases + taps) * base).clamp_(-lowpass_filter_width, lowpass_filter_width)
    # 3. window, then the windowed sinc scaled to unit DC gain per phase
    if method == "sinc_interp_hann":
        window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    else:
        shape = torch.tensor(float(KAISER_BETA if beta is None else beta))
        window = torch.i0(shape * torch.sqrt(1 - (t / lowpass_filter_width) ** 2)) / torch.i0(shape)
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones((), dtype=dtype, device=device), t.sin() / t)
    return kernel * window * (base / orig), width, orig, new


def sinc_resample(waveform: torch.Tensor, orig_rate: int, new_rate: int, *, lowpass_filter_width: int = 6,
                  rolloff: float = 0.99, method: str = "sinc_interp_hann",
                  beta: float | None = None) -> torch.Tensor:
    """(..., T) at orig_rate -> (..., ceil(T * new_rate / orig_rate)) by windowed-sinc interpolation.

    Output sample k sits at input time k * orig / new (gcd-reduced rates); the signal is zero outside
    [0, T). Matches torchaudio.functional.resample to float rounding.
    """
    if orig_rate == new_rate:
        return waveform
    kernel, width, orig, new = sinc_resample_kernel(orig_rate, new_rate, lowpass_filter_width=lowpass_filter_width,
                                                    rolloff=rolloff, method=method, beta=beta,
                                                    dtype=waveform.dtype, device=waveform.device)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    # 1. every output phase is one strided convolution over the zero-padded input
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel, stride=orig)                     # (B, new, frames)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    # 2. keep ceil(T * new / orig) samples
    target = -(-new * length // orig)
    return out[..., :target].reshape(*shape[:-1], -1)


# ---- mel filterbanks --------------------------------------------------------------------------------
def hz_to_mel(hz: float, scale: str = "htk") -> float:
    """Frequency in Hz -> mel on the HTK or Slaney scale."""
    if scale == "htk":
        return 2595.0 * math.log10(1.0 + hz / 700.0)
    step = 200.0 / 3
    if hz < 1000.0:
        return hz / step
    return 1000.0 / step + math.log(hz / 1000.0) / (math.log(6.4) / 27.0)


def mel_to_hz(mels: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Mel (tensor) -> Hz on the HTK or Slaney scale."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    step, knee = 200.0 / 3, 1000.0 / (200.0 / 3)
    logstep = math.log(6.4) / 27.0
    return torch.where(mels >= knee, 1000.0 * torch.exp(logstep * (mels - knee)), step * mels)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int, *,
                   norm: str | None = None, mel_scale: str = "htk") -> torch.Tensor:
    """(n_freqs, n_mels) float32 triangular mel filters over the STFT bins 0 .. sample_rate // 2.

    Args:
        n_freqs: STFT bins (n_fft // 2 + 1).
        f_min, f_max: band edges in Hz.
        n_mels: filters.
        sample_rate: Hz.
        norm: None, or "slaney" (each triangle divided by half its width in Hz: equal area).
        mel_scale: "htk" or "slaney".
    """
    if mel_scale not in MEL_SCALES:
        raise ValueError(f"mel_filterbank: mel_scale must be one of {MEL_SCALES}, got {mel_scale!r}")
    if norm not in (None, "slaney"):
        raise ValueError(f"mel_filterbank: norm must be None or 'slaney', got {norm!r}")
    # 1. bin centres and the n_mels + 2 band edges, evenly spaced in mel
    bins = torch.linspace(0, sample_rate // 2, n_freqs)
    edges = mel_to_hz(torch.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), n_mels + 2),
                      mel_scale)
    # 2. each filter rises from edge m to m + 1 and falls to m + 2
    widths = edges[1:] - edges[:-1]
    slopes = edges[None, :] - bins[:, None]                                  # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        bank = bank * (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[None]
    if (bank.max(dim=0).values == 0.0).any():
        logger.warning("mel_filterbank: some of the %d filters are empty (too many mels for %d bins)", n_mels,
                       n_freqs)
    return bank


def mel_power_spectrogram(waveform: torch.Tensor, sample_rate: int, *, n_fft: int, hop_length: int, n_mels: int,
                          f_min: float = 0.0, f_max: float | None = None, norm: str | None = None,
                          mel_scale: str = "htk") -> torch.Tensor:
    """(..., T) -> (..., n_mels, 1 + T // hop_length) mel power: centred (reflect-padded) Hann STFT of
    n_fft, |X|^2, mel filters (torchaudio.transforms.MelSpectrogram with power 2)."""
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    window = torch.hann_window(n_fft, dtype=flat.dtype, device=flat.device)
    spectrum = torch.stft(flat, n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
                          pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    power = spectrum.abs().pow(2.0)                                          # (B, n_fft // 2 + 1, frames)
    bank = mel_filterbank(n_fft // 2 + 1, f_min, sample_rate / 2 if f_max is None else f_max, n_mels,
                          sample_rate, norm=norm, mel_scale=mel_scale).to(power)
    mel = torch.matmul(power.transpose(-1, -2), bank).transpose(-1, -2)
    return mel.reshape(*shape[:-1], n_mels, -1)


# ---- IIR filtering -----------------------------------------------------------------------------------
def iir_filter(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(T,) -> (T,) y with a[0] y[n] = sum_k b[k] x[n-k] - sum_{k>=1} a[k] y[n-k], zero initial state, in
    float64 (scipy.signal.lfilter; torchaudio's lfilter with clamp=False)."""
    from scipy.signal import lfilter

    out = lfilter(np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64),
                  x.detach().cpu().double().numpy())
    return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)
