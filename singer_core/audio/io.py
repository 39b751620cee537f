"""ComfyUI AUDIO conversions, input checks, loudness (ITU-R BS.1770-4 K-weighting and gating) and the
sample-level edits every audio node shares: mono, resample, normalise, trim, pad. File decoding lives in
``decode.py`` and encoding in ``encode.py``."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import wave
from pathlib import Path

import torch

from .dsp import iir_filter, sinc_resample

__all__ = [
    "AudioReport", "audio_from_comfy", "audio_to_comfy", "check_audio", "comfy_items",
    "duration_seconds", "integrated_loudness", "k_weighting_coefficients",
    "normalize_loudness", "normalize_peak", "pad", "resample", "to_mono", "trim", "trim_silence",
    "write_wav",
]

logger = logging.getLogger(__name__)


def audio_from_comfy(audio, who: str) -> tuple[torch.Tensor, int]:
    """Validate a ComfyUI AUDIO value.

    Args:
        audio: {"waveform": (B, C, T) float tensor, "sample_rate": int}.
        who: the caller's name, used in error messages.

    Returns:
        waveform (B, C, T) float32 and the sample rate.
    """
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(f"{who}: expected an AUDIO input (a dict with 'waveform' and 'sample_rate'); "
                         "connect it to a Load Audio node")
    waveform, sample_rate = audio["waveform"], audio["sample_rate"]
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"{who}: AUDIO waveform must be a (batch, channels, samples) tensor, got {shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"{who}: AUDIO sample_rate must be a positive integer, got {sample_rate!r}")
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"{who}: the audio has no channels or no batch items (shape {tuple(waveform.shape)})")
    if waveform.shape[-1] == 0:
        raise ValueError(f"{who}: the audio is empty (0 samples); load a file that contains sound")
    check_channels_first(waveform, who)
    waveform = waveform.float()
    if not torch.isfinite(waveform).all():
        raise ValueError(f"{who}: the audio contains NaN or infinite samples; the file is corrupt or an "
                         "upstream node overflowed: re-export the file, or check the node that made this audio")
    return waveform, sample_rate


def comfy_items(audio, who: str) -> tuple[torch.Tensor, ...]:
    """The items of a ComfyUI AUDIO batch, validated by audio_from_comfy.

    Args:
        audio: {"waveform": (B, C, T) float tensor, "sample_rate": int}.
        who: the caller's name, used in error messages.

    Returns:
        B views of shape (C, T), float32; the rate is audio["sample_rate"].
    """
    waveform, _ = audio_from_comfy(audio, who)
    return tuple(waveform.unbind(0))


def audio_to_comfy(waveform: torch.Tensor, sample_rate: int) -> dict:
    """(C, T) or (B, C, T) float tensor -> ComfyUI AUDIO dict."""
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim == 2:
        waveform = waveform[None]
    return {"waveform": waveform.float().cpu(), "sample_rate": int(sample_rate)}


def write_wav(path: str | Path, waveform: torch.Tensor, sample_rate: int) -> Path:
    """Write (T,) or (C, T) float audio in [-1, 1] as 16-bit PCM WAV (standard library only)."""
    from ..io.fs import fs_error, remove_quietly

    path = Path(path)
    if waveform.ndim == 1:
        waveform = waveform[None]
    pcm = (waveform.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).T.contiguous()
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:  # written under a temporary name and renamed: no partial file on a full disk or an interrupt
        with wave.open(str(temporary), "wb") as handle:
            handle.setnchannels(waveform.shape[0])
            handle.setsampwidth(2)
            handle.setframerate(int(sample_rate))
            handle.writeframes(pcm.numpy().tobytes())
        os.replace(temporary, path)
    except OSError as error:
        raise fs_error(error, path, who="write_wav") from error
    finally:
        remove_quietly(temporary)
    return path


def duration_seconds(waveform: torch.Tensor, sample_rate: int) -> float:
    return waveform.shape[-1] / float(sample_rate) if sample_rate > 0 else math.nan


def check_channels_first(waveform: torch.Tensor, who: str) -> None:
    """Refuse a channels-last (samples, channels) array, e.g. soundfile's (T, 2), naming the transpose.

    A (C, T) waveform has few channels and many samples; a 2-D array whose first axis is longer than its last
    and whose last axis is a plausible channel count (1..8) is (T, C), which would otherwise be averaged over
    the wrong axis (a 2 s stereo song becomes 2 samples long, or reads as silent).
    """
    if waveform.ndim < 2:
        return
    channels, samples = waveform.shape[-2], waveform.shape[-1]
    if channels > samples and samples <= 8:
        fix = "waveform.T" if waveform.ndim == 2 else "waveform.transpose(-1, -2)"
        raise ValueError(f"{who}: the audio has shape {tuple(waveform.shape)}: {channels} channels of {samples} "
                         f"samples, i.e. it is channels-last (samples, channels); pass {fix} (channels, samples) "
                         "instead (soundfile and scipy return (samples, channels))")


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """(C, T) -> (1, T): the mean of the channels (ComfyUI and torchaudio convention)."""
    if waveform.ndim != 2 or waveform.shape[0] == 0:
        raise ValueError(f"to_mono: expected a (channels, samples) tensor with at least one channel, "
                         f"got shape {tuple(waveform.shape)}")
    check_channels_first(waveform, "to_mono")
    return waveform.mean(dim=0, keepdim=True) if waveform.shape[0] > 1 else waveform


_RESAMPLING_METHODS = ("sinc_interp_hann", "sinc_interp_kaiser")


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int, *, lowpass_filter_width: int = 6,
             rolloff: float = 0.99, method: str = "sinc_interp_hann",
             beta: float | None = None) -> torch.Tensor:
    """(..., T) at orig_rate -> (..., T') at new_rate with the windowed-sinc resampler (torchaudio's, computed
    by audio/dsp.py, so no torchaudio is needed).

    Args:
        waveform: (..., T) float audio.
        orig_rate, new_rate: sample rates in Hz (> 0); equal rates return the input unchanged.
        lowpass_filter_width: zero crossings of the sinc on each side (6; larger is sharper and slower).
        rolloff: cut-off as a fraction of the lower Nyquist frequency (0.99; lower reduces aliasing).
        method: "sinc_interp_hann" or "sinc_interp_kaiser" (window of the sinc).
        beta: Kaiser window shape (None: torchaudio's 14.77), only with "sinc_interp_kaiser".

    Returns:
        (..., ceil(T * new_rate / orig_rate)) audio.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {orig_rate} -> {new_rate}")
    if method not in _RESAMPLING_METHODS:
        raise ValueError(f"resample: method must be one of {_RESAMPLING_METHODS}, got {method!r}")
    if lowpass_filter_width < 1 or not 0.0 < rolloff <= 1.0:
        raise ValueError(f"resample: need lowpass_filter_width >= 1 and 0 < rolloff <= 1, got "
                         f"{lowpass_filter_width} and {rolloff}")
    if orig_rate == new_rate:
        return waveform
    return sinc_resample(waveform, int(orig_rate), int(new_rate), lowpass_filter_width=int(lowpass_filter_width),
                         rolloff=float(rolloff), method=method, beta=beta)


# --------------------------------------------------------------------------------------------------------
# Level measurement: sample peak, RMS, ITU-R BS.1770-4 integrated loudness

SILENCE_DBFS = -60.0  # a waveform whose sample peak is below this is reported as silent
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped (-0.009 dBFS)
_CHUNK = 1 << 16  # samples per step of the chunked scans (small temporaries: no page-fault churn)
_LOUDNESS_CHUNK = 1 << 18  # samples per K-weighting step (each is preceded by _FILTER_WARMUP samples)
# BS.1770-4 K-weighting as analog prototypes matched to the standard's 48 kHz coefficients (the same
# parametrisation as libebur128): a high shelf (f0 Hz, gain dB, Q) and a second-order high-pass (f0 Hz, Q).
_SHELF = (1681.974450955533, 3.999843853973347, 0.7071752369554196)
_SHELF_BAND_EXPONENT = 0.4996667741545416
_HIGHPASS = (38.13547087602444, 0.5003270373238773)
_ABSOLUTE_GATE_LUFS = -70.0  # BS.1770-4 gating thresholds
_RELATIVE_GATE_LU = -10.0
_FILTER_WARMUP = 1 << 14  # samples re-filtered before each chunk (slowest pole 0.995: 0.995**16384 ~ 1e-36)


@dataclasses.dataclass(frozen=True)
class AudioReport:
    """Levels of a waveform, as measured by check_audio."""

    seconds: float  # duration
    channels: int  # C
    sample_rate: int  # Hz
    peak_dbfs: float  # sample peak over all channels, dB re full scale (-inf for digital silence)
    rms_dbfs: float  # RMS over all samples, dB re full scale (a full-scale sine reads -3.01)
    loudness_lufs: float | None  # BS.1770-4 integrated loudness; None when < 0.4 s or fully gated (silence)
    silent: bool  # sample peak below SILENCE_DBFS
    clipped_fraction: float  # share of samples with |x| >= CLIP_LEVEL
    dc_offset: float  # the largest per-channel mean, signed

    def summary(self) -> str:
        """One line for a node's UI text, e.g. '12.50 s, 2 ch, 44100 Hz, peak -1.0 dBFS, ... -16.2 LUFS'."""
        loudness = "loudness n/a" if self.loudness_lufs is None else f"{self.loudness_lufs:.1f} LUFS"
        text = (f"{self.seconds:.2f} s, {self.channels} ch, {self.sample_rate} Hz, peak {self.peak_dbfs:.1f} "
                f"dBFS, RMS {self.rms_dbfs:.1f} dBFS, {loudness}")
        if self.silent:
            text += ", SILENT"
        if self.clipped_fraction > 0:
            text += f", clipped {100 * self.clipped_fraction:.3g} %"
        if abs(self.dc_offset) >= 0.01:
            text += f", DC offset {self.dc_offset:+.3f}"
        return text


def check_audio(waveform: torch.Tensor, sample_rate: int, who: str) -> AudioReport:
    """Validate a waveform and measure its levels; silence is allowed but logged as a warning.

    Args:
        waveform: (C, T) float audio.
        sample_rate: Hz (> 0).
        who: the caller's name, used in errors and the silence warning.

    Returns:
        AudioReport.
    """
    _check_waveform(waveform, sample_rate, who)
    channels, total = waveform.shape
    peak, square_sum, clipped, dc = 0.0, 0.0, 0, 0.0
    for channel in range(channels):
        channel_sum = 0.0
        for offset in range(0, total, _CHUNK):
            chunk = waveform[channel, offset:offset + _CHUNK].double()
            if not torch.isfinite(chunk).all():
                raise ValueError(f"{who}: the audio contains NaN or infinite samples (channel {channel}, "
                                 f"near {offset / sample_rate:.2f} s); the source is corrupt: re-export "
                                 "the file, or check the node that made this audio")
            peak = max(peak, float(chunk.abs().max()))
            square_sum += float(chunk.square().sum())
            channel_sum += float(chunk.sum())
            clipped += int((chunk.abs() >= CLIP_LEVEL).sum())
        mean = channel_sum / total
        dc = mean if abs(mean) > abs(dc) else dc
    report = AudioReport(seconds=total / sample_rate, channels=channels, sample_rate=int(sample_rate),
                         peak_dbfs=_db(peak), rms_dbfs=0.5 * _db(square_sum / (channels * total)),
                         loudness_lufs=_gated_loudness(waveform, sample_rate)[0],
                         silent=_db(peak) < SILENCE_DBFS, clipped_fraction=clipped / (channels * total),
                         dc_offset=dc)
    if report.silent:
        logger.warning("%s: the audio is silent (peak %.1f dBFS); check the source or the gain", who,
                       report.peak_dbfs)
    return report


def k_weighting_coefficients(sample_rate: int) -> tuple[tuple[list[float], list[float]], ...]:
    """The two BS.1770-4 K-weighting biquads at `sample_rate`: ((b_shelf, a_shelf), (b_highpass, a_highpass)),
    each b = [b0, b1, b2], a = [1, a1, a2], by the bilinear transform of the analog prototypes (at 48 kHz
    they reproduce the coefficient tables of the Recommendation)."""
    frequency, gain_db, quality = _SHELF
    k = math.tan(math.pi * frequency / sample_rate)
    high_gain = 10.0 ** (gain_db / 20.0)
    band_gain = high_gain ** _SHELF_BAND_EXPONENT
    a0 = 1.0 + k / quality + k * k
    shelf_b = [(high_gain + band_gain * k / quality + k * k) / a0, 2.0 * (k * k - high_gain) / a0,
               (high_gain - band_gain * k / quality + k * k) / a0]
    shelf_a = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / quality + k * k) / a0]
    frequency, quality = _HIGHPASS
    k = math.tan(math.pi * frequency / sample_rate)
    a0 = 1.0 + k / quality + k * k
    highpass_a = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / quality + k * k) / a0]
    return (shelf_b, shelf_a), ([1.0, -2.0, 1.0], highpass_a)


def integrated_loudness(waveform: torch.Tensor, sample_rate: int, who: str = "integrated_loudness") -> float:
    """ITU-R BS.1770-4 integrated loudness in LUFS (K-weighting, 400 ms blocks every 100 ms, absolute gate
    -70 LUFS, relative gate -10 LU). Channel weights follow FFmpeg's order: 1.41 for the surround pair of
    5.0 (channels 4, 5) and 5.1 (5, 6), 0 for the 5.1 LFE, 1 otherwise. At rates that are not a multiple of
    10 Hz the step is round(0.1 s) and the block four steps (11025 Hz: 399.8 ms instead of 400 ms).

    Args:
        waveform: (C, T) float audio, at least 0.4 s long.
        sample_rate: Hz (> 0).
        who: the caller's name, used in errors.

    Returns:
        loudness in LUFS.
    """
    _check_waveform(waveform, sample_rate, who)
    _peak(waveform, who)  # rejects NaN / inf
    loudness, reason = _gated_loudness(waveform, sample_rate)
    if loudness is None:
        raise ValueError(f"{who}: cannot measure loudness: {reason}; check the source (a wrong track or a "
                         "failed separation), or use peak normalisation for clips shorter than 0.4 s")
    return loudness


def _gated_loudness(waveform: torch.Tensor, sample_rate: int) -> tuple[float | None, str]:
    """(loudness in LUFS, "") or (None, why not) for a valid (C, T) waveform."""
    channels, total = waveform.shape
    step = round(0.1 * sample_rate)
    steps = total // step
    if steps < 4:
        return None, (f"the audio is {total / sample_rate:.3f} s long; BS.1770 needs at least one 0.4 s "
                      "block")
    weights = {5: (1.0, 1.0, 1.0, 1.41, 1.41), 6: (1.0, 1.0, 1.0, 0.0, 1.41, 1.41)}.get(channels,
                                                                                      (1.0,) * channels)
    (shelf_b, shelf_a), (highpass_b, highpass_a) = k_weighting_coefficients(sample_rate)
    coefficients = [(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
                    for b, a in ((shelf_b, shelf_a), (highpass_b, highpass_a))]
    # 1. K-weighted energy per 100 ms step, weighted and summed over channels (chunked with filter warm-up)
    energy = torch.zeros(steps, dtype=torch.float64)
    chunk = step * max(1, _LOUDNESS_CHUNK // step)
    for channel, weight in enumerate(weights):
        if weight == 0.0:
            continue
        for offset in range(0, steps * step, chunk):
            lead = min(offset, _FILTER_WARMUP)
            filtered = waveform[channel, offset - lead:min(offset + chunk, steps * step)].double()
            for a_coeffs, b_coeffs in coefficients:
                filtered = iir_filter(filtered, a_coeffs, b_coeffs)
            energy[offset // step:offset // step + (filtered.numel() - lead) // step] += \
                weight * filtered[lead:].square().reshape(-1, step).sum(1)
    # 2. mean square of each 400 ms block (four steps, 75 % overlap) and its loudness
    block_energy = (energy[:-3] + energy[1:-2] + energy[2:-1] + energy[3:]) / (4 * step)
    block_loudness = -0.691 + 10.0 * torch.log10(block_energy)
    # 3. absolute then relative gate
    gated = block_loudness > _ABSOLUTE_GATE_LUFS
    if not gated.any():
        return None, "the audio is silent (no 0.4 s block above -70 LUFS)"
    relative = -0.691 + 10.0 * math.log10(float(block_energy[gated].mean())) + _RELATIVE_GATE_LU
    gated &= block_loudness > relative
    return -0.691 + 10.0 * math.log10(float(block_energy[gated].mean())), ""


# --------------------------------------------------------------------------------------------------------
# Level changes


def normalize_peak(waveform: torch.Tensor, target_dbfs: float = -1.0) -> torch.Tensor:
    """Scale so the sample peak over all channels is `target_dbfs` (<= 0).

    Args:
        waveform: (C, T) float audio.
        target_dbfs: the peak after scaling, dB re full scale.

    Returns:
        (C, T) scaled copy.
    """
    if not math.isfinite(target_dbfs) or target_dbfs > 0:
        raise ValueError(f"normalize_peak: target_dbfs must be <= 0 dBFS (above clips), got {target_dbfs}")
    peak = _peak(waveform, "normalize_peak")
    if peak == 0.0:
        raise ValueError("normalize_peak: the audio is digital silence (all samples 0); there is no level to "
                         "normalise; check the source")
    return waveform * (10.0 ** (target_dbfs / 20.0) / peak)


def normalize_loudness(waveform: torch.Tensor, sample_rate: int, target_lufs: float = -23.0, *,
                       peak_limit_dbfs: float | None = -1.0) -> torch.Tensor:
    """Scale to a BS.1770-4 integrated loudness (EBU R 128: -23 LUFS; streaming services: about -14).

    A plain gain: when reaching the target would push the sample peak above `peak_limit_dbfs`, the gain is
    lowered to meet the limit instead and a warning says the loudness reached (no limiter is applied).

    Args:
        waveform: (C, T) float audio, at least 0.4 s long, not silent.
        sample_rate: Hz (> 0).
        target_lufs: loudness after scaling (-70 .. 0 LUFS).
        peak_limit_dbfs: the most the sample peak may reach, dBFS, or None for no limit.

    Returns:
        (C, T) scaled copy.
    """
    if not math.isfinite(target_lufs) or not -70.0 <= target_lufs <= 0.0:
        raise ValueError(f"normalize_loudness: target_lufs must be between -70 and 0 LUFS, got {target_lufs}")
    loudness = integrated_loudness(waveform, sample_rate, "normalize_loudness")
    gain_db = target_lufs - loudness
    if peak_limit_dbfs is not None:
        headroom = peak_limit_dbfs - _db(_peak(waveform, "normalize_loudness"))
        if gain_db > headroom:
            logger.warning("normalize_loudness: %.1f LUFS would put the peak above %.1f dBFS; reaching "
                           "%.1f LUFS instead", target_lufs, peak_limit_dbfs, loudness + headroom)
            gain_db = headroom
    return waveform * (10.0 ** (gain_db / 20.0))


# --------------------------------------------------------------------------------------------------------
# Cuts


def trim(waveform: torch.Tensor, sample_rate: int, start_seconds: float,
         end_seconds: float | None = None) -> torch.Tensor:
    """The span [start, end) of a waveform (sample indices rounded to the nearest sample).

    Args:
        waveform: (C, T) audio.
        sample_rate: Hz (> 0).
        start_seconds: first second kept (0 <= start < duration).
        end_seconds: end of the kept span (start < end <= duration), or None for the end.

    Returns:
        (C, T') view of the input.
    """
    _check_waveform(waveform, sample_rate, "trim")
    length = waveform.shape[-1] / sample_rate
    begin = round(start_seconds * sample_rate)
    if not math.isfinite(start_seconds) or start_seconds < 0 or begin >= waveform.shape[-1]:
        raise ValueError(f"trim: start_seconds={start_seconds} must be >= 0 and before the end of the "
                         f"{length:.3f} s audio")
    end = waveform.shape[-1] if end_seconds is None else round(end_seconds * sample_rate)
    if end_seconds is not None and not (math.isfinite(end_seconds) and begin < end <= waveform.shape[-1]):
        raise ValueError(f"trim: end_seconds={end_seconds} must be after start_seconds={start_seconds} "
                         f"and at most the duration {length:.3f} s (None keeps everything to the end)")
    return waveform[:, begin:end]


def pad(waveform: torch.Tensor, sample_rate: int, *, to_seconds: float | None = None,
        to_multiple_of: int | None = None, where: str = "end") -> torch.Tensor:
    """Pad with zeros to at least `to_seconds`, then up to a multiple of `to_multiple_of` samples.

    Args:
        waveform: (C, T) audio.
        sample_rate: Hz (> 0).
        to_seconds: minimum length in seconds (longer audio is left as it is), or None.
        to_multiple_of: the length in samples is rounded up to a multiple of this (e.g. 640 = one 25 fps
            video frame at 16 kHz), or None.
        where: "end", "start" or "both" (the odd sample goes to the end).

    Returns:
        (C, T') with T' >= T; the input itself when nothing is added.
    """
    _check_waveform(waveform, sample_rate, "pad")
    if where not in ("end", "start", "both"):
        raise ValueError(f"pad: where must be 'end', 'start' or 'both', got {where!r}")
    length = waveform.shape[-1]
    if to_seconds is not None:
        if not math.isfinite(to_seconds) or to_seconds < 0:
            raise ValueError(f"pad: to_seconds must be a finite number >= 0, got {to_seconds}")
        length = max(length, math.ceil(to_seconds * sample_rate - 1e-9))
    if to_multiple_of is not None:
        if isinstance(to_multiple_of, bool) or not isinstance(to_multiple_of, int) or to_multiple_of < 1:
            raise ValueError(f"pad: to_multiple_of must be a positive whole number of samples, "
                             f"got {to_multiple_of!r}")
        length = -(-length // to_multiple_of) * to_multiple_of
    extra = length - waveform.shape[-1]
    if extra == 0:
        return waveform
    before = {"end": 0, "start": extra, "both": extra // 2}[where]
    return torch.nn.functional.pad(waveform, (before, extra - before))


def trim_silence(waveform: torch.Tensor, sample_rate: int, threshold_db: float = -50.0, *,
                 keep_seconds: float = 0.0) -> tuple[torch.Tensor, int, int]:
    """Cut leading and trailing silence: samples whose magnitude stays below `threshold_db` in every channel.

    Args:
        waveform: (C, T) audio.
        sample_rate: Hz (> 0).
        threshold_db: level in dBFS (< 0) a sample must reach to count as sound.
        keep_seconds: silence kept before the first and after the last sound sample.

    Returns:
        (waveform[:, start:end] as a view, start, end) in samples of the input.
    """
    _check_waveform(waveform, sample_rate, "trim_silence")
    if not math.isfinite(threshold_db) or threshold_db >= 0:
        raise ValueError(f"trim_silence: threshold_db must be below 0 dBFS, got {threshold_db}")
    if not math.isfinite(keep_seconds) or keep_seconds < 0:
        raise ValueError(f"trim_silence: keep_seconds must be >= 0, got {keep_seconds}")
    threshold = 10.0 ** (threshold_db / 20.0)
    total = waveform.shape[-1]
    first = last = None
    for offset in range(0, total, _CHUNK):  # first sound sample, scanning forward
        loud = (waveform[:, offset:offset + _CHUNK].abs() >= threshold).any(0).nonzero()
        if loud.numel():
            first = offset + int(loud[0])
            break
    if first is None:
        raise ValueError(f"trim_silence: the whole audio is below {threshold_db} dBFS; nothing would remain; "
                         "lower threshold_db or check the source")
    for stop in range(total, first, -_CHUNK):  # last sound sample, scanning backward
        offset = max(first, stop - _CHUNK)
        loud = (waveform[:, offset:stop].abs() >= threshold).any(0).nonzero()
        if loud.numel():
            last = offset + int(loud[-1])
            break
    margin = round(keep_seconds * sample_rate)
    start, end = max(0, first - margin), min(total, (last if last is not None else first) + 1 + margin)
    return waveform[:, start:end], start, end


# --------------------------------------------------------------------------------------------------------
# Helpers


def _check_waveform(waveform: torch.Tensor, sample_rate: int, who: str) -> None:
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 2:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"{who}: expected a (channels, samples) tensor, got {shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"{who}: sample_rate must be a positive integer, got {sample_rate!r}")
    if waveform.shape[0] == 0:
        raise ValueError(f"{who}: the audio has zero channels (shape {tuple(waveform.shape)})")
    if waveform.shape[1] == 0:
        raise ValueError(f"{who}: the audio is empty (0 samples); give audio that contains sound")


def _peak(waveform: torch.Tensor, who: str) -> float:
    if waveform.ndim != 2 or waveform.numel() == 0:
        raise ValueError(f"{who}: expected a non-empty (channels, samples) tensor, got "
                         f"{tuple(waveform.shape)}")
    peak = float(waveform.abs().max())
    if not math.isfinite(peak):
        raise ValueError(f"{who}: the audio contains NaN or infinite samples; the source is corrupt: "
                         "re-export the file, or check the node that made this audio")
    return peak


def _db(power_or_amplitude: float) -> float:
    """20 log10 of an amplitude (callers halve it for powers); -inf for 0."""
    return 20.0 * math.log10(power_or_amplitude) if power_or_amplitude > 0 else -math.inf
