"""Frame alignment: exact frame counts, align-corners interpolation, Hallo windows, Wav2Lip mel
windows and chunk plans, each against an independent reference (integer arithmetic, F.interpolate,
plain loops)."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from singer_core.audio.frames import (
    as_fraction,
    frame_count,
    frame_windows,
    interpolate_at,
    interpolate_features,
    interpolation_positions,
    mel_window_starts,
    mel_windows,
    plan_chunks,
    samples_per_frame,
)

# fps as written by a user -> (numerator, denominator) for the integer-only reference
FPS = {24: (24, 1), 25: (25, 1), 29.97: (2997, 100), 30: (30, 1), 50: (50, 1), 60: (60, 1)}
RATES = (16000, 22050, 44100, 48000)


def _reference_count(num_samples, sample_rate, fps):
    numerator, denominator = FPS[fps]
    return -(-num_samples * numerator // (sample_rate * denominator))  # integer ceil


def _durations(sample_rate, fps):
    """Sample counts around exact frame boundaries plus arbitrary ones."""
    numerator, denominator = FPS[fps]
    counts = {0, 1, 2, 399, 400, 401, 12345, 10 * 60 * sample_rate, 10 * 60 * sample_rate + 1}
    for frames in (1, 2, 3, 110, 111, 997, 1000, 2997, 15000, 17982, 17983):
        exact = Fraction(frames * sample_rate * denominator, numerator)
        for delta in (-1, 0, 1):
            counts.add(max(0, math.floor(exact) + delta))
            counts.add(max(0, math.ceil(exact) + delta))
    return sorted(counts)


@pytest.mark.parametrize("fps", list(FPS))
@pytest.mark.parametrize("sample_rate", RATES)
def test_frame_count_matches_integer_reference(sample_rate, fps):
    for num_samples in _durations(sample_rate, fps):
        assert frame_count(num_samples, sample_rate, fps) == _reference_count(
            num_samples, sample_rate, fps
        ), (num_samples, sample_rate, fps)


def test_frame_count_does_not_round_up_exact_multiples():
    # Hallo's float formula gives 111 for exactly 110 frames of 640 samples
    assert math.ceil(70400 / 16000 * 25) == 111
    assert frame_count(70400, 16000, 25) == 110
    assert frame_count(70401, 16000, 25) == 111
    # NTSC: 29.97 and 30000/1001 are different rates; all spellings of 30000/1001 agree
    ten_minutes = 600 * 48000
    assert frame_count(ten_minutes, 48000, 29.97) == 17982
    for ntsc in (Fraction(30000, 1001), "30000/1001", 30000 / 1001):
        assert frame_count(ten_minutes, 48000, ntsc) == 17983
    assert as_fraction(23.976) == Fraction(2997, 125) and as_fraction(24000 / 1001) == Fraction(24000, 1001)


def test_samples_per_frame():
    assert samples_per_frame(16000, 25) == 640
    assert samples_per_frame(16000, 29.97) == Fraction(1600000, 2997)
    assert samples_per_frame(44100, "30000/1001") == Fraction(44100 * 1001, 30000)


@pytest.mark.parametrize("bad", [0, -25, float("nan"), float("inf"), "fast", True, None, "1/0"])
def test_bad_rates_are_refused(bad):
    with pytest.raises(ValueError, match="fps"):
        frame_count(16000, 16000, bad)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="num_samples"):
        frame_count(-1, 16000, 25)
    with pytest.raises(ValueError, match="sample_rate"):
        frame_count(100, 0, 25)


def _loop_interpolation(x: np.ndarray, frames: int) -> np.ndarray:
    """Align-corners linear interpolation, one output at a time, positions as exact Fractions."""
    n = x.shape[0]
    out = np.empty((frames,) + x.shape[1:])
    for j in range(frames):
        position = Fraction(j * (n - 1), frames - 1) if frames > 1 else Fraction(0)
        i = math.floor(position)
        w = float(position - i)
        out[j] = (1 - w) * x[i] + w * x[min(i + 1, n - 1)]
    return out


@pytest.mark.parametrize(
    "n_in,n_out", [(1, 1), (1, 5), (5, 1), (2, 2), (7, 3), (149, 75), (150, 76), (3, 40)]
)
def test_interpolation_matches_f_interpolate_and_loop(n_in, n_out):
    generator = torch.Generator().manual_seed(n_in * 1000 + n_out)
    x = torch.randn(n_in, 6, dtype=torch.float64, generator=generator)
    ours = interpolate_features(x, n_out)
    torch_ref = F.interpolate(x.T[None], size=n_out, mode="linear", align_corners=True)[0].T
    torch.testing.assert_close(ours, torch_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.numpy(), _loop_interpolation(x.numpy(), n_out), rtol=0, atol=1e-12)
    # float32: torch rounds the scale and the position to float32 (|error| <= n_in * 2**-23 of a step)
    ours32 = interpolate_features(x.float(), n_out)
    torch_ref32 = F.interpolate(x.float().T[None], size=n_out, mode="linear", align_corners=True)[0].T
    step = float((x[1:] - x[:-1]).abs().max()) if n_in > 1 else 0.0
    torch.testing.assert_close(ours32, torch_ref32, rtol=0, atol=1e-6 + 2 * n_in * 2**-23 * step)


def test_interpolation_trailing_shape_and_half_precision():
    x = torch.randn(30, 3, 4, dtype=torch.float64)
    ours = interpolate_features(x, 47)
    assert ours.shape == (47, 3, 4)
    flat = F.interpolate(x.reshape(30, 12).T[None], size=47, mode="linear", align_corners=True)[0].T
    torch.testing.assert_close(ours, flat.reshape(47, 3, 4), rtol=0, atol=1e-12)
    half = interpolate_features(x.to(torch.bfloat16), 47)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), ours, rtol=0.02, atol=0.03)


def test_chunked_positions_are_bit_identical_to_global():
    for n_in, n_out in [(29999, 15000), (1001, 30000), (7, 7), (2, 99991)]:
        whole = interpolation_positions(n_in, n_out)
        cuts = sorted({0, 1, n_out // 3, min(n_out, n_out // 2 + 7), n_out - 1, n_out})
        pieces = torch.cat(
            [interpolation_positions(n_in, n_out, a, b) for a, b in zip(cuts, cuts[1:], strict=False)]
        )
        assert torch.equal(whole, pieces)
        assert whole.dtype == torch.float64 and float(whole[-1]) == n_in - 1


def test_interpolate_at_refuses_out_of_range_positions():
    with pytest.raises(ValueError, match="positions"):
        interpolate_at(torch.zeros(4, 2), torch.tensor([0.0, 3.5]))


@pytest.mark.parametrize("frames,radius", [(1, 2), (3, 2), (7, 2), (7, 0), (10, 3)])
def test_frame_windows_clamp_at_the_edges(frames, radius):
    x = torch.randn(frames, 2, 3)
    windows = frame_windows(x, radius)
    assert windows.shape == (frames, 2 * radius + 1, 2, 3)
    for i in range(frames):
        for k, offset in enumerate(range(-radius, radius + 1)):
            assert torch.equal(windows[i, k], x[min(max(i + offset, 0), frames - 1)])


def _wav2lip_loop(mel: np.ndarray, frames: int, fps_fraction: Fraction, width=16) -> np.ndarray:
    """Wav2Lip inference: windows start at int(80 i / fps) until one runs past the end, which takes
    the last 16 frames and stops; the remaining video frames reuse that last window."""
    chunks, i = [], 0
    while len(chunks) < frames:
        start = (80 * i * fps_fraction.denominator) // fps_fraction.numerator
        if start + width > mel.shape[0]:
            chunks.append(mel[mel.shape[0] - width :])
            break
        chunks.append(mel[start : start + width])
        i += 1
    chunks += [chunks[-1]] * (frames - len(chunks))
    return np.stack(chunks)


@pytest.mark.parametrize("fps", [25, 29.97, 30, 60])
@pytest.mark.parametrize("num_mel", [16, 17, 100, 401])
def test_mel_windows_follow_wav2lip(fps, num_mel):
    mel = np.random.default_rng(num_mel).standard_normal((num_mel, 80))
    frames = math.ceil((num_mel - 1) / 80 * as_fraction(fps)) + 2  # a little past the end, as in practice
    ours = mel_windows(torch.from_numpy(mel), frames, fps)
    assert ours.shape == (frames, 16, 80)
    np.testing.assert_array_equal(ours.numpy(), _wav2lip_loop(mel, frames, as_fraction(fps)))


def test_mel_window_rule_equals_wav2lip_float_rule_at_25_fps():
    starts = mel_window_starts(10**6, 5000, 25)
    assert starts.tolist() == [int(i * (80.0 / 25)) for i in range(5000)]


def test_short_mel_is_padded():
    mel = torch.randn(5, 80)
    windows = mel_windows(mel, 3, 25, pad_value=-4.0)
    assert windows.shape == (3, 16, 80)
    for window in windows:
        assert torch.equal(window[:5], mel) and bool((window[5:] == -4.0).all())


@pytest.mark.parametrize(
    "seconds,fps,chunk,context",
    [
        (0.01, 25, 30.0, 2.0),
        (3.0, 25, 30.0, 2.0),
        (61.3, 25, 30.0, 2.0),
        (600.0, 29.97, 30.0, 2.0),
        (10.0, 60, 0.5, 0.25),
        (7.0, 24, 1.0, 0.0),
        (5.0, 25, math.inf, 2.0),
        (1.0, 25, 0.001, 5.0),
    ],
)
def test_chunk_plans_cover_every_frame_once(seconds, fps, chunk, context):
    sample_rate, hop = 16000, 320
    num_samples = round(seconds * sample_rate)
    plan = plan_chunks(num_samples, sample_rate, fps, chunk, context, hop=hop)
    frames = frame_count(num_samples, sample_rate, fps)
    assert plan.num_frames == frames
    covered = [f for c in plan for f in range(c.frame_start, c.frame_stop)]
    assert covered == list(range(frames))
    per_frame = Fraction(sample_rate) / as_fraction(fps)
    context_frames = math.ceil(Fraction(context) * as_fraction(fps)) if context else 0
    for index, c in enumerate(plan):
        assert c.index == index and c.num_frames >= 1
        assert c.context_start == max(0, c.frame_start - context_frames)
        assert c.context_stop == min(frames, c.frame_stop + context_frames)
        assert c.sample_start % hop == 0 and c.sample_start <= c.context_start * per_frame
        assert c.sample_stop >= min(num_samples, c.context_stop * per_frame)
        assert 0 <= c.sample_start < c.sample_stop <= num_samples
    if math.isinf(chunk):
        assert len(plan) == 1


def test_chunk_plan_arguments_are_checked():
    with pytest.raises(ValueError, match="chunk_seconds"):
        plan_chunks(16000, 16000, 25, 0.0, 1.0)
    with pytest.raises(ValueError, match="context_seconds"):
        plan_chunks(16000, 16000, 25, 1.0, -1.0)
    assert len(plan_chunks(0, 16000, 25, 1.0, 1.0)) == 0
