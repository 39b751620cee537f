"""Synthetic media the file reading and writing tests share: video frames that spell their own index (exact
through H.264 after rounding), a moving smooth colour field (what natural video looks like to a codec), and
analytic stereo sines, on the 16-bit grid where a lossless round trip must return them bit-exactly."""

from __future__ import annotations

import numpy as np
import torch


def coded_frame(index: int, height: int = 32, width: int = 48) -> np.ndarray:
    """A frame whose flat halves spell its index (survives H.264 exactly after rounding)."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:, : width // 2] = 20 + 12 * (index // 15)
    frame[:, width // 2:] = 20 + 14 * (index % 15)
    return frame


def decode_index(image: np.ndarray) -> int:
    """The index coded_frame spelled into `image` (H, W, 3), read from the means of its two halves."""
    width = image.shape[1]
    left = image[4:-4, 4: width // 2 - 4].astype(np.float64).mean()
    right = image[4:-4, width // 2 + 4: -4].astype(np.float64).mean()
    return int(round((left - 20) / 12)) * 15 + int(round((right - 20) / 14))


def smooth_frames(count: int, height: int, width: int) -> np.ndarray:
    """A moving smooth colour field (what natural video looks like to a codec)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for t in range(count):
        red = 128 + 90 * np.sin(xx / 9.0 + t / 4.0) * np.cos(yy / 13.0)
        green = 128 + 80 * np.cos((xx + yy) / 15.0 - t / 6.0)
        blue = 100 + 60 * np.sin(yy / 7.0 + t / 5.0)
        frames.append(np.stack([red, green, blue], -1))
    return np.clip(np.rint(np.stack(frames)), 0, 255).astype(np.uint8)


RATE = 44100  # Hz of the audio file tests
FREQS = (440.0, 1000.0)  # left, right: a swapped channel order moves the spectral peaks
AMPS = (0.5, 0.4)


def sines(rate: int, seconds: float, freqs=FREQS, amps=AMPS, phase: float = 0.0) -> np.ndarray:
    """(C, T) float64 analytic sines, sample n at time n / rate."""
    n = np.arange(round(seconds * rate))
    return np.stack([a * np.sin(2 * np.pi * f * n / rate + phase) for f, a in zip(freqs, amps, strict=True)])


def pcm16_grid(x: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Round to the 16-bit grid: (float32 tensor exactly on it, int16 reference)."""
    pcm = np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)
    return torch.from_numpy(pcm.astype(np.float32) / 32768), pcm


def peak_hz(channel: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the largest bin of the Hann-windowed spectrum of `channel` (T,)."""
    spectrum = np.abs(np.fft.rfft(channel * np.hanning(channel.size)))
    return float(np.fft.rfftfreq(channel.size, 1 / rate)[spectrum.argmax()])


def check_lossy(decoded, seconds: float, min_corr: float = 0.99):
    """Rate-independent: compare each channel with the analytic sine at the decoded rate, away from edges."""
    ref = sines(decoded.sample_rate, seconds)
    got = decoded.waveform.double().numpy()
    assert got.shape == ref.shape, (got.shape, ref.shape)
    edge = decoded.sample_rate // 20
    for channel, freq in enumerate(FREQS):
        a, b = got[channel, edge:-edge], ref[channel, edge:-edge]
        assert np.corrcoef(a, b)[0, 1] > min_corr
        assert abs(peak_hz(a, decoded.sample_rate) - freq) < 2 * decoded.sample_rate / a.size
