"""The formant song synthesiser: determinism, timelines, spectral content."""

import math

import pytest
import torch

from singer_core.audio.synth import VOWEL_ORDER, sing


def test_deterministic_under_seed():
    a, b, c = sing(2.0, seed=7), sing(2.0, seed=7), sing(2.0, seed=8)
    torch.testing.assert_close(a.waveform, b.waveform)
    assert not torch.equal(a.waveform, c.waveform)


def test_timelines_are_consistent():
    song = sing(3.0, seed=1, sample_rate=16000)
    assert song.waveform.shape == song.f0.shape == song.vowel.shape == song.energy.shape == (48000,)
    voiced = song.vowel >= 0
    assert voiced.any() and (song.f0[voiced] > 0).all() and (song.f0[~voiced] == 0).all()
    assert song.vowel.max() < len(VOWEL_ORDER)
    assert float(song.waveform.abs().max()) <= 0.9 + 1e-6
    assert float(song.energy.min()) >= 0 and float(song.energy.max()) <= 1


def test_pitch_of_a_note_is_in_the_spectrum():
    """The strongest low harmonic of a held note sits at its f0 (within one FFT bin)."""
    song = sing(3.0, seed=2, vibrato_cents=0.0)
    voiced = (song.energy > 0.99).nonzero().flatten()
    start = int(voiced[0])
    f0 = float(song.f0[start])
    stop = start + 4096
    assert float(song.f0[stop - 1]) == f0, "the test needs 4096 samples of one note"
    segment = song.waveform[start:stop] * torch.hann_window(4096)
    spectrum = torch.fft.rfft(segment).abs()
    freqs = torch.fft.rfftfreq(4096, 1 / song.sample_rate)
    band = (freqs > 0.5 * f0) & (freqs < 1.5 * f0)
    peak = float(freqs[band][spectrum[band].argmax()])
    assert math.isclose(peak, f0, abs_tol=song.sample_rate / 4096 + 1)


@pytest.mark.parametrize("kwargs", [dict(seconds=0.0), dict(seconds=1e4), dict(seconds=1.0, sample_rate=100)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        sing(**kwargs)
