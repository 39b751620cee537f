"""singer_core.audio.dsp (the pack's own resampler, mel filterbanks, mel spectrogram and IIR filter) against
torchaudio where it imports, a float64 closed form where it does not, and the audio suite run with
torchaudio made unimportable."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from singer_core.audio.dsp import iir_filter, mel_filterbank, mel_power_spectrogram, sinc_resample

ROOT = Path(__file__).resolve().parents[2]


def _torchaudio():
    try:
        import torchaudio.functional
    except Exception as exc:  # noqa: BLE001 - a torchaudio that does not load beside this torch is "absent"
        pytest.skip(f"torchaudio does not import here ({type(exc).__name__}); the other tests cover dsp alone")
    return torchaudio


@pytest.mark.parametrize("rates", [(44100, 16000), (16000, 44100), (48000, 16000), (22050, 16000), (8000, 12000)])
@pytest.mark.parametrize("method", ["sinc_interp_hann", "sinc_interp_kaiser"])
def test_resample_matches_torchaudio(rates, method):
    torchaudio = _torchaudio()
    waveform = torch.randn(2, 3001, generator=torch.Generator().manual_seed(0))
    ours = sinc_resample(waveform, *rates, method=method)
    theirs = torchaudio.functional.resample(waveform, *rates, resampling_method=method)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=2e-6, rtol=0)
    ours64 = sinc_resample(waveform.double(), *rates, method=method, rolloff=0.9, lowpass_filter_width=9)
    theirs64 = torchaudio.functional.resample(waveform.double(), *rates, resampling_method=method, rolloff=0.9,
                                              lowpass_filter_width=9)
    torch.testing.assert_close(ours64, theirs64, atol=1e-12, rtol=0)


def test_resample_keeps_a_band_limited_sine_and_its_timing():
    """Closed form: a 440 Hz sine sampled at 44.1 kHz is the same sine at 16 kHz (away from the zero-padded
    ends), sample k at time k / 16000."""
    t = np.arange(44100) / 44100
    out = sinc_resample(torch.from_numpy(np.sin(2 * np.pi * 440 * t)), 44100, 16000)
    assert out.shape == (16000,)
    want = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(out.numpy()[400:-400] - want[400:-400]).max() < 2e-3


@pytest.mark.parametrize("scale,norm", [("slaney", "slaney"), ("htk", None), ("htk", "slaney"), ("slaney", None)])
def test_mel_filterbank_matches_torchaudio(scale, norm):
    torchaudio = _torchaudio()
    ours = mel_filterbank(401, 55.0, 7600.0, 80, 16000, norm=norm, mel_scale=scale)
    theirs = torchaudio.functional.melscale_fbanks(401, 55.0, 7600.0, 80, 16000, norm=norm, mel_scale=scale)
    torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=1e-6)


def test_mel_filterbank_is_triangles_on_the_slaney_scale():
    """Closed form: Slaney's scale is linear (200/3 Hz per mel) below 1 kHz and logarithmic above; each
    filter peaks at its centre edge, and with Slaney norm has area 1 (in Hz) up to the bin spacing."""
    bank = mel_filterbank(2049, 0.0, 8000.0, 40, 16000, norm="slaney", mel_scale="slaney").double()
    spacing = 8000.0 / 2048
    areas = bank.sum(0) * spacing
    assert torch.allclose(areas, torch.ones(40, dtype=torch.float64), atol=0.02)
    top = (8000.0 / 1000.0)
    mel_top = 15.0 + math.log(top) / (math.log(6.4) / 27.0)
    centre = [m * mel_top / 41 for m in range(1, 41)]
    hz = [m * 200 / 3 if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27) for m in centre]
    peaks = bank.argmax(0).double() * spacing
    assert (peaks - torch.tensor(hz)).abs().max() <= spacing


def test_mel_power_spectrogram_matches_torchaudio():
    torchaudio = _torchaudio()
    waveform = torch.randn(16000, generator=torch.Generator().manual_seed(1))
    ours = mel_power_spectrogram(waveform, 16000, n_fft=512, hop_length=200, n_mels=64, norm="slaney",
                                 mel_scale="slaney")
    theirs = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, hop_length=200, n_mels=64,
                                                  f_min=0.0, f_max=8000.0, power=2.0, norm="slaney",
                                                  mel_scale="slaney")(waveform)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_iir_filter_is_the_difference_equation():
    """Float64 loop of a[0] y[n] = sum b[k] x[n-k] - sum a[k] y[n-k]; and torchaudio's lfilter where present."""
    x = torch.randn(500, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    b, a = [0.2, -0.1, 0.05], [1.5, -0.4, 0.1]
    y = np.zeros(500)
    for n in range(500):
        acc = sum(b[k] * float(x[n - k]) for k in range(3) if n - k >= 0)
        acc -= sum(a[k] * y[n - k] for k in range(1, 3) if n - k >= 0)
        y[n] = acc / a[0]
    ours = iir_filter(x, torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    np.testing.assert_allclose(ours.numpy(), y, atol=1e-12)
    try:
        import torchaudio.functional
    except Exception:  # noqa: BLE001
        return
    theirs = torchaudio.functional.lfilter(x, torch.tensor(a, dtype=torch.float64),
                                           torch.tensor(b, dtype=torch.float64), clamp=False)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)


def test_audio_suite_runs_with_torchaudio_unimportable():
    """The audio I/O, dsp, encoder and spectral-plot tests in a child pytest where `import torchaudio` fails."""
    files = ["tests/audio/test_decode.py", "tests/audio/test_encode.py", "tests/audio/test_io.py",
             "tests/audio/test_dsp.py", "tests/audio/test_encoders.py", "tests/spectral/test_visualize.py"]
    env = {**os.environ, "SINGER_TEST_BLOCK_TORCHAUDIO": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-x",
                             "-k", "not unimportable", *files], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
    assert result.returncode == 0, tail
    assert "torchaudio does not import here (ImportError)" in result.stdout, tail   # the block was in force
    assert " passed" in tail and " failed" not in tail, tail
