"""Formant-synthesised vowel singing: the audio half of the embedded SynthSinger default.

A melody (MIDI notes with rests) is sung on a vowel sequence: the voice is a band-limited
harmonic series at f0 (with vibrato) whose harmonic amplitudes follow the vowel's formant
resonances; notes have attack/release envelopes. Deterministic under a seed. Returns the
waveform and the ground-truth timelines (f0, vowel index, voiced energy) that later drive
the synthetic face.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch

logger = logging.getLogger(__name__)

# (F1, F2, F3) in Hz and bandwidths, for a neutral adult voice (Peterson & Barney averages).
VOWELS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "a": ((730.0, 1090.0, 2440.0), (90.0, 110.0, 170.0)),
    "e": ((530.0, 1840.0, 2480.0), (70.0, 100.0, 160.0)),
    "i": ((270.0, 2290.0, 3010.0), (50.0, 100.0, 170.0)),
    "o": ((570.0, 840.0, 2410.0), (70.0, 90.0, 160.0)),
    "u": ((300.0, 870.0, 2240.0), (50.0, 80.0, 150.0)),
}
VOWEL_ORDER = tuple(VOWELS)


@dataclasses.dataclass(frozen=True)
class SongTimeline:
    """Per-sample ground truth of a synthesised song."""

    waveform: torch.Tensor  # (T,) float32 in [-1, 1]
    sample_rate: int  # samples per second
    f0: torch.Tensor  # (T,) Hz, 0 during rests
    vowel: torch.Tensor  # (T,) int64 index into VOWEL_ORDER, -1 during rests
    energy: torch.Tensor  # (T,) note envelope in [0, 1]


def sing(
    seconds: float = 4.0,
    *,
    sample_rate: int = 16000,
    tempo_bpm: float = 96.0,
    seed: int = 0,
    vibrato_hz: float = 5.5,
    vibrato_cents: float = 40.0,
) -> SongTimeline:
    """Synthesise a short sung melody.

    Args:
        seconds: duration (0.1 .. 600 s).
        sample_rate: output rate in Hz.
        tempo_bpm: beats per minute; notes last one or two beats, rests half a beat.
        seed: random seed for melody, vowels and rests.
        vibrato_hz, vibrato_cents: pitch vibrato rate and depth.
    """
    if not 0.1 <= seconds <= 600.0:
        raise ValueError(f"sing: seconds must be in [0.1, 600], got {seconds}")
    if not 8000 <= sample_rate <= 192000:
        raise ValueError(f"sing: sample_rate must be in [8000, 192000], got {sample_rate}")
    generator = torch.Generator().manual_seed(seed)
    total = int(round(seconds * sample_rate))
    beat = 60.0 / tempo_bpm
    scale = torch.tensor([0, 2, 4, 5, 7, 9, 11, 12])  # major scale degrees

    # 1. note list: (start, end, midi, vowel) with occasional rests
    f0 = torch.zeros(total, dtype=torch.float64)
    vowel = torch.full((total,), -1, dtype=torch.int64)
    energy = torch.zeros(total, dtype=torch.float64)
    t, degree = 0.0, 2
    while t < seconds:
        length = beat * float(1 + torch.randint(0, 2, (1,), generator=generator))
        if float(torch.rand(1, generator=generator)) < 0.15:
            t += beat / 2  # rest
            continue
        degree = int(max(0, min(len(scale) - 1, degree + int(torch.randint(-2, 3, (1,), generator=generator)))))
        midi = 57 + int(scale[degree])
        start, end = int(t * sample_rate), min(total, int((t + length) * sample_rate))
        if end > start:
            n = end - start
            f0[start:end] = 440.0 * 2.0 ** ((midi - 69) / 12.0)
            vowel[start:end] = int(torch.randint(0, len(VOWEL_ORDER), (1,), generator=generator))
            ramp = torch.arange(n, dtype=torch.float64) / sample_rate
            attack = (ramp / 0.04).clamp(max=1.0)
            release = ((n / sample_rate - ramp) / 0.08).clamp(max=1.0)
            energy[start:end] = (attack * release).clamp(min=0.0)
        t += length

    # 2. vibrato and phase
    time = torch.arange(total, dtype=torch.float64) / sample_rate
    vib = 2.0 ** (vibrato_cents / 1200.0 * torch.sin(2 * math.pi * vibrato_hz * time))
    inst_f0 = f0 * vib
    phase = 2 * math.pi * torch.cumsum(inst_f0, 0) / sample_rate

    # 3. harmonics shaped by the formants of the current vowel (additive, band-limited)
    voice = torch.zeros(total, dtype=torch.float64)
    nyquist = sample_rate / 2
    for index, name in enumerate(VOWEL_ORDER):
        mask = vowel == index
        if not mask.any():
            continue
        formants, bandwidths = VOWELS[name]
        for k in range(1, 40):
            freq = k * inst_f0
            audible = mask & (freq < nyquist) & (freq > 0)
            if not audible.any():
                continue
            gain = torch.zeros_like(freq)
            for fc, bw in zip(formants, bandwidths):
                gain = gain + 1.0 / (1.0 + ((freq - fc) / (bw / 2)) ** 2)
            gain = gain / k**0.5  # glottal source tilt
            voice = voice + torch.where(audible, gain * torch.sin(k * phase), torch.zeros_like(voice))
    voice = voice * energy
    breath = 0.003 * torch.randn(total, generator=generator, dtype=torch.float64)
    waveform = voice + breath * (energy > 0)
    peak = float(waveform.abs().max())
    if peak > 0:
        waveform = 0.9 * waveform / peak
    return SongTimeline(
        waveform=waveform.float(), sample_rate=sample_rate, f0=f0.float(), vowel=vowel, energy=energy.float()
    )
