"""singer_core.audio.io against independent references: analytic sines at the resampled rate, the coefficient
tables and closed forms of ITU-R BS.1770-4, EBU Tech 3341 test signal 1, and a float64 loop implementation of
BS.1770-4 gating."""

from __future__ import annotations

import cmath
import logging
import math

import numpy as np
import pytest
import torch

from singer_core.audio.decode import DecodedAudio
from singer_core.audio.io import (
    audio_from_comfy,
    check_audio,
    comfy_items,
    integrated_loudness,
    k_weighting_coefficients,
    normalize_loudness,
    normalize_peak,
    pad,
    resample,
    to_mono,
    trim,
    trim_silence,
)
from tests.media_patterns import RATE, sines

# ITU-R BS.1770-4, Annex 1, Tables 1 and 2: K-weighting coefficients at 48 kHz.
BS1770_SHELF = ([1.53512485958697, -2.69169618940638, 1.19839281085285],
                [1.0, -1.69065929318241, 0.73248077421585])
BS1770_HIGHPASS = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("orig", [8000, 11025, 22050, 44100, 48000, 96000])
def test_resample_matches_the_analytic_sine_at_the_new_rate(orig):
    for new in (8000, 11025, 22050, 44100, 48000, 96000):
        if new == orig:
            continue
        x = torch.from_numpy(sines(orig, 0.3, freqs=(440.0,), amps=(1.0,), phase=0.3))
        y = resample(x.float(), orig, new)
        ref = sines(new, y.shape[-1] / new, freqs=(440.0,), amps=(1.0,), phase=0.3)
        assert y.shape == (1, math.ceil(x.shape[-1] * new / orig)) == ref.shape
        edge = new // 50  # 20 ms: the filter's reach at the edges
        assert np.abs(y.double().numpy() - ref)[:, edge:-edge].max() < 2e-3
        sharp = resample(x, orig, new, lowpass_filter_width=64, method="sinc_interp_kaiser")
        assert np.abs(sharp.numpy() - ref)[:, edge:-edge].max() < 1e-6
    same = torch.zeros(1, 10)
    assert resample(same, orig, orig) is same
    with pytest.raises(ValueError, match="method"):
        resample(same, orig, 16000, method="linear")


# ----------------------------------------------------------------------------- loudness


def _response(coefficients, freq: float, rate: int) -> complex:
    (b, a) = coefficients
    z = cmath.exp(-2j * math.pi * freq / rate)
    return (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)


def _reference_loudness(x: np.ndarray, gate: bool = True) -> float:
    """BS.1770-4 at 48 kHz in float64 loops, straight from the Recommendation's equations and tables."""
    z = []
    for channel in x:
        y = channel.tolist()
        for b, a in (BS1770_SHELF, BS1770_HIGHPASS):
            out, x1, x2, y1, y2 = [], 0.0, 0.0, 0.0, 0.0
            for value in y:
                result = b[0] * value + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
                x2, x1, y2, y1 = x1, value, y1, result
                out.append(result)
            y = out
        y = np.asarray(y)
        z.append([np.mean(y[j * 4800:j * 4800 + 19200] ** 2) for j in range((len(y) - 19200) // 4800 + 1)])
    blocks = np.sum(z, axis=0)  # channel weights 1 (mono / stereo)
    loudness = -0.691 + 10 * np.log10(blocks)
    gated = loudness > (-70 if gate else -np.inf)
    relative = -0.691 + 10 * np.log10(blocks[gated].mean()) - 10
    return float(-0.691 + 10 * np.log10(blocks[gated & (loudness > (relative if gate else -np.inf))].mean()))


def test_k_weighting_reproduces_the_recommendation_tables():
    shelf, highpass = k_weighting_coefficients(48000)
    np.testing.assert_allclose(shelf[0] + shelf[1], BS1770_SHELF[0] + BS1770_SHELF[1], atol=1e-12)
    np.testing.assert_allclose(highpass[0] + highpass[1], BS1770_HIGHPASS[0] + BS1770_HIGHPASS[1], atol=1e-12)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_loudness_of_a_997_hz_sine_has_a_closed_form(rate):
    """A steady sine of amplitude A has mean square A^2/2; K-weighting scales its power by |H(997 Hz)|^2
    (+0.691 dB, which the -0.691 offset cancels: BS.1770-4 Annex 1 defines the offset so a 0 dBFS
    997 Hz sine in one front channel reads -3.01 LKFS). So L = -0.691 + 10 log10(sum_c |H|^2 A_c^2 / 2)."""
    gain = abs(_response(BS1770_SHELF, 997, 48000) * _response(BS1770_HIGHPASS, 997, 48000)) ** 2
    amps = (0.5, 0.25)
    x = torch.from_numpy(sines(rate, 5.0, freqs=(997.0, 997.0), amps=amps)).float()
    expected = -0.691 + 10 * math.log10(sum(gain * a * a / 2 for a in amps))
    assert abs(integrated_loudness(x, rate) - expected) < 0.01
    mono_full_scale = torch.from_numpy(sines(rate, 5.0, freqs=(997.0,), amps=(1.0,))).float()
    assert abs(integrated_loudness(mono_full_scale, rate) - (-3.01)) < 0.01


@pytest.mark.parametrize("rate", [48000, 44100])
def test_ebu_tech_3341_test_signal_1(rate):
    """EBU Tech 3341, Table 1, case 1: stereo 1 kHz sine at -23 dBFS reads -23.0 +- 0.1 LUFS."""
    amp = 10 ** (-23 / 20)
    x = torch.from_numpy(sines(rate, 20.0, freqs=(1000.0, 1000.0), amps=(amp, amp))).float()
    assert abs(integrated_loudness(x, rate) + 23.0) < 0.1


def test_gating_matches_a_float64_reference_of_the_recommendation():
    rate = 48000
    loud = sines(rate, 1.5, freqs=(997.0,), amps=(0.5,))
    quiet = sines(rate, 1.5, freqs=(200.0,), amps=(0.5 * 10 ** (-15 / 20),))  # below the relative gate
    silence = sines(rate, 1.0, freqs=(997.0,), amps=(1e-5,))  # below the absolute gate
    x = np.concatenate([loud, quiet, silence], axis=1)
    expected = _reference_loudness(x)
    assert abs(integrated_loudness(torch.from_numpy(x), rate) - expected) < 1e-6
    assert expected - _reference_loudness(x, gate=False) > 1.0, "the signal must exercise the gates"


def test_normalize_loudness_hits_the_target_and_respects_the_peak_limit(caplog):
    rate = 48000
    noise = torch.randn(2, 2 * rate, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.05
    out = normalize_loudness(noise, rate, -23.0)
    assert abs(_reference_loudness(out.numpy()) + 23.0) < 0.1
    with caplog.at_level(logging.WARNING):
        limited = normalize_loudness(noise, rate, -5.0, peak_limit_dbfs=-1.0)
    assert abs(20 * math.log10(float(limited.abs().max())) + 1.0) < 1e-9
    assert "peak above -1.0 dBFS" in caplog.text
    assert _reference_loudness(limited.numpy()) < -6.0
    unlimited = normalize_loudness(noise, rate, -5.0, peak_limit_dbfs=None)
    assert abs(_reference_loudness(unlimited.numpy()) + 5.0) < 0.1
    with pytest.raises(ValueError, match="silent"):
        normalize_loudness(torch.zeros(2, rate), rate)
    with pytest.raises(ValueError, match="0.4 s"):
        normalize_loudness(noise[:, :rate // 5], rate)
    with pytest.raises(ValueError, match="target_lufs"):
        normalize_loudness(noise, rate, 3.0)


# ----------------------------------------------------------------------------- check_audio


def test_check_audio_measures_levels(caplog):
    x = torch.from_numpy(sines(RATE, 2.0, freqs=(997.0, 997.0), amps=(0.5, 0.5))).float() + 0.02
    report = check_audio(x, RATE, "SingerTest")
    assert abs(report.peak_dbfs - 20 * math.log10(0.52)) < 1e-3
    assert abs(report.rms_dbfs - 10 * math.log10(0.125 + 0.02 ** 2)) < 1e-3
    assert abs(report.dc_offset - 0.02) < 1e-4 and report.clipped_fraction == 0 and not report.silent
    assert (report.seconds, report.channels, report.sample_rate) == (2.0, 2, RATE)
    assert abs(report.loudness_lufs - integrated_loudness(x, RATE)) < 1e-9
    assert "2.00 s, 2 ch, 44100 Hz" in report.summary() and "LUFS" in report.summary()
    square = torch.sign(torch.from_numpy(sines(RATE, 1.0, freqs=(100.0,), amps=(1.0,)))).float()
    assert check_audio(square, RATE, "t").clipped_fraction > 0.99
    short = check_audio(torch.full((1, 1000), 0.1), RATE, "t")
    assert short.loudness_lufs is None and "loudness n/a" in short.summary()
    with caplog.at_level(logging.WARNING):
        silent = check_audio(torch.zeros(2, RATE), RATE, "SingerTest")
    assert silent.silent and silent.peak_dbfs == -math.inf and silent.loudness_lufs is None
    assert "SingerTest" in caplog.text and "silent" in caplog.text and "SILENT" in silent.summary()


@pytest.mark.parametrize("waveform,rate,words", [
    (torch.zeros(2, 0), RATE, "empty"), (torch.zeros(0, 10), RATE, "zero channels"),
    (torch.tensor([[0.0, math.nan]]), RATE, "NaN"),
    (torch.tensor([[0.0, math.inf]]), RATE, "NaN or infinite"),
    (torch.zeros(1, 10), 0, "sample_rate"), (torch.zeros(10), RATE, "channels, samples"),
])
def test_check_audio_rejects_bad_input(waveform, rate, words):
    with pytest.raises(ValueError, match=f"^SingerTest: .*{words}"):
        check_audio(waveform, rate, "SingerTest")


# ----------------------------------------------------------------------------- conversions


def test_normalize_peak():
    x = torch.tensor([[0.1, -0.25], [0.2, 0.0]])
    out = normalize_peak(x, -6.0)
    assert abs(float(out.abs().max()) - 10 ** (-6 / 20)) < 1e-7
    torch.testing.assert_close(out / out.abs().max(), x / 0.25)
    with pytest.raises(ValueError, match="silence"):
        normalize_peak(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="<= 0 dBFS"):
        normalize_peak(x, 1.0)


def test_trim_and_pad():
    x = torch.arange(20, dtype=torch.float32).reshape(2, 10)
    torch.testing.assert_close(trim(x, 10, 0.2, 0.7), x[:, 2:7])
    torch.testing.assert_close(trim(x, 10, 0.5), x[:, 5:])
    for start, end in ((1.0, None), (-0.1, None), (0.5, 0.5), (0.2, 1.2)):
        with pytest.raises(ValueError, match="trim"):
            trim(x, 10, start, end)
    assert pad(x, 10, to_seconds=0.5) is x
    padded = pad(x, 10, to_seconds=1.3, where="start")
    assert padded.shape == (2, 13) and torch.equal(padded[:, 3:], x) and padded[:, :3].abs().sum() == 0
    both = pad(x, 10, to_multiple_of=4, where="both")  # 10 -> 12: one before, one after
    assert both.shape == (2, 12) and torch.equal(both[:, 1:11], x) and both[:, 0].abs().sum() == 0
    assert pad(x, 10, to_seconds=1.1, to_multiple_of=4).shape == (2, 12)
    with pytest.raises(ValueError, match="where"):
        pad(x, 10, to_seconds=2.0, where="middle")
    with pytest.raises(ValueError, match="to_multiple_of"):
        pad(x, 10, to_multiple_of=0)


def test_trim_silence_returns_the_offsets():
    x = torch.zeros(2, 10000)
    x[1, 1234:5678] = 0.3 * torch.sign(torch.randn(4444, generator=torch.Generator().manual_seed(0)))
    x[0, 2000] = 0.001  # -60 dBFS: below the threshold
    trimmed, start, end = trim_silence(x, 1000, -50.0)
    assert (start, end) == (1234, 5678) and torch.equal(trimmed, x[:, 1234:5678])
    _, start, end = trim_silence(x, 1000, -50.0, keep_seconds=0.5)
    assert (start, end) == (734, 6178)
    _, start, _ = trim_silence(x, 1000, -70.0)
    assert start == 1234  # 0.001 at 2000 is after the first sound
    with pytest.raises(ValueError, match="below -50"):
        trim_silence(torch.full((1, 100), 1e-4), 1000, -50.0)


def test_comfy_helpers_and_mono():
    batch = {"waveform": torch.randn(3, 2, 50), "sample_rate": 16000}
    items = comfy_items(batch, "SingerTest")
    assert len(items) == 3 and all(torch.equal(item, batch["waveform"][i]) for i, item in enumerate(items))
    with pytest.raises(ValueError, match="SingerTest"):
        comfy_items({"waveform": torch.randn(2, 50), "sample_rate": 16000}, "SingerTest")
    item = batch["waveform"][0]
    decoded = DecodedAudio(item, 16000, "pcm_f32le", "wav", "x.wav", 2, item.shape[1] / 16000)
    waveform, rate = audio_from_comfy(decoded.to_comfy(), "SingerTest")
    assert rate == 16000 and torch.equal(waveform, item[None])
    torch.testing.assert_close(to_mono(item), item.mean(0, keepdim=True))
