"""Audio-to-video frame alignment in exact arithmetic: frame counts (Hallo's ceil(T / 16000 * 25)),
align-corners linear interpolation (Hallo's ``Wav2VecModel``), the +-2 frame window (Hallo's
``process_audio_emb``), Wav2Lip/SyncNet mel windows, and overlapping chunk plans for long songs.

Rates
-----
Frame rates and other rates are handled as :class:`fractions.Fraction`. ints, Fractions and strings
such as ``"30000/1001"`` are taken exactly. A float is converted to the simplest fraction with a
denominator up to 10**6 (``Fraction(x).limit_denominator(10**6)``): the float literal ``29.97``
becomes 2997/100, ``30000 / 1001`` computed in floating point becomes 30000/1001 again, ``23.976``
becomes 2997/125. (Two fractions with denominators <= 10**6 differ by at least 1e-12, far more than
a double's rounding error at frame-rate magnitudes, so this recovers exactly the rational the float
was computed from whenever its denominator is <= 10**6.) Give the exact rate as
``Fraction(30000, 1001)`` or ``"30000/1001"`` when the video is NTSC: 29.97 and 30000/1001 differ by
one frame after about 9 minutes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from fractions import Fraction

import torch

logger = logging.getLogger(__name__)

_MAX_DENOMINATOR = 10**6


def as_fraction(value, name: str = "fps") -> Fraction:
    """A positive, finite rate as an exact Fraction (see the module docstring for floats).

    Args:
        value: int, Fraction, float, numpy scalar or a string like "25", "29.97", "30000/1001".
        name: what the value is, used in error messages.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if isinstance(value, Fraction):
        result = value
    elif isinstance(value, numbers.Integral):
        result = Fraction(int(value))
    elif isinstance(value, str):
        try:
            result = Fraction(value.strip())
        except (ValueError, ZeroDivisionError) as error:
            raise ValueError(
                f"{name} must be a positive number like 25, 29.97 or 30000/1001, got {value!r}"
            ) from error
    elif isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        result = Fraction(number).limit_denominator(_MAX_DENOMINATOR)
    else:
        raise ValueError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return result


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _rate(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer (Hz), got {value!r}")
    return int(value)


def samples_per_frame(sample_rate: int, fps) -> Fraction:
    """Audio samples per video frame, exactly: 16000 Hz at 25 fps -> 640; at 29.97 fps -> 1600000/2997."""
    return Fraction(_rate(sample_rate, "sample_rate")) / as_fraction(fps)


def frame_count(num_samples: int, sample_rate: int, fps) -> int:
    """Video frames that cover ``num_samples`` of audio: ceil(num_samples / sample_rate * fps), exact.

    Hallo computes ``math.ceil(len / 16000 * 25)`` in floating point, where an exact multiple of a
    frame can round up by one: 70400 samples (4.4 s) are exactly 110 frames at 25 fps, but
    70400 / 16000 * 25 = 110.00000000000001 gives 111. Here the product is a Fraction, so a whole
    number of frames is never rounded up. 0 samples -> 0 frames.
    """
    num_samples = _count(num_samples, "num_samples")
    rate = as_fraction(fps) / _rate(sample_rate, "sample_rate")
    return -((-num_samples * rate.numerator) // rate.denominator)


def interpolation_positions(n_in: int, n_out: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Source positions of align-corners linear interpolation, for output indices [start, stop).

    Output j of a length-``n_out`` resampling of a length-``n_in`` sequence reads position
    j * (n_in - 1) / (n_out - 1) (0 when n_out == 1), as ``F.interpolate(..., align_corners=True)``.
    The product j * (n_in - 1) is an exact integer in float64 and the division is correctly rounded,
    so a chunk asking for [start, stop) gets bit-identical positions to a global call: a chunked
    encoder reproduces the global map.

    Returns:
        (stop - start,) float64 tensor on the CPU.
    """
    n_in, n_out = _count(n_in, "n_in"), _count(n_out, "n_out")
    stop = n_out if stop is None else _count(stop, "stop")
    start = _count(start, "start")
    if n_in < 1 or not 0 <= start <= stop <= n_out:
        raise ValueError(
            f"interpolation_positions: need n_in >= 1 and 0 <= start <= stop <= n_out, "
            f"got n_in={n_in}, n_out={n_out}, start={start}, stop={stop}"
        )
    index = torch.arange(start, stop, dtype=torch.float64)
    if n_out <= 1:
        return index * 0.0
    return index * float(n_in - 1) / float(n_out - 1)


def interpolate_at(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``features`` along dim 0 at fractional ``positions``.

    out[m] = (1 - w) * features[i] + w * features[min(i + 1, N - 1)] with i = floor(positions[m]),
    w = positions[m] - i (the formula of ``F.interpolate(mode="linear")``). Half-precision inputs
    are computed in float32 and returned in their own dtype.

    Args:
        features: (N, ...) tensor, N >= 1.
        positions: (M,) float tensor with values in [0, N - 1].

    Returns:
        (M, ...) tensor on features' device and dtype.
    """
    if features.ndim < 1 or features.shape[0] < 1:
        raise ValueError(
            f"interpolate_at: features must be (N, ...) with N >= 1, got {tuple(features.shape)}"
        )
    if positions.ndim != 1:
        raise ValueError(f"interpolate_at: positions must be 1-D, got {tuple(positions.shape)}")
    n = features.shape[0]
    positions = positions.to(device=features.device, dtype=torch.float64)
    if positions.numel() and (float(positions.min()) < 0.0 or float(positions.max()) > n - 1):
        raise ValueError(
            f"interpolate_at: positions must lie in [0, {n - 1}], got "
            f"[{float(positions.min())}, {float(positions.max())}]"
        )
    lower = positions.floor().long().clamp_(0, n - 1)
    upper = (lower + 1).clamp_(max=n - 1)
    compute = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    weight = (positions - lower.to(torch.float64)).to(compute).reshape((-1,) + (1,) * (features.ndim - 1))
    low, high = features[lower].to(compute), features[upper].to(compute)
    return (low * (1.0 - weight) + high * weight).to(features.dtype)


def interpolate_features(features: torch.Tensor, frames: int) -> torch.Tensor:
    """Resample ``features`` (N, ...) to ``frames`` steps along dim 0 with align-corners linear
    interpolation -- Hallo's ``linear_interpolation`` (F.interpolate(mode="linear", align_corners=True)
    on (B, D, N)), but for any trailing shape and with exact float64 positions.

    Returns:
        (frames, ...) tensor in features' dtype.
    """
    frames = _count(frames, "frames")
    if features.ndim < 1 or features.shape[0] < 1:
        raise ValueError(
            f"interpolate_features: features must be (N, ...) with N >= 1, got {tuple(features.shape)}"
        )
    return interpolate_at(features, interpolation_positions(features.shape[0], frames))


def frame_windows(x: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Per-frame windows of neighbouring frames, clamped at the edges (Hallo: i-2 .. i+2).

    Args:
        x: (F, ...) per-frame features, F >= 1.
        radius: frames on each side (Hallo uses 2).

    Returns:
        (F, 2 * radius + 1, ...): out[i, k] = x[clamp(i + k - radius, 0, F - 1)].
    """
    radius = _count(radius, "radius")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"frame_windows: x must be (F, ...) with F >= 1, got {tuple(x.shape)}")
    offsets = torch.arange(-radius, radius + 1, device=x.device)
    index = (torch.arange(x.shape[0], device=x.device)[:, None] + offsets[None]).clamp_(0, x.shape[0] - 1)
    return x[index]


def mel_window_starts(num_mel: int, frames: int, fps, mel_rate=80, width: int = 16) -> torch.Tensor:
    """First mel frame of each video frame's window, Wav2Lip/SyncNet's rule in exact arithmetic.

    start_i = floor(mel_rate * i / fps); a window that would run past the end of the mel takes the
    last ``width`` frames instead (Wav2Lip inference). When the mel is shorter than ``width`` it is
    padded to ``width`` frames (see :func:`mel_windows`) and every window starts at 0.

    Returns:
        (frames,) int64 tensor, non-decreasing.
    """
    num_mel, frames, width = _count(num_mel, "num_mel"), _count(frames, "frames"), _count(width, "width")
    if width < 1:
        raise ValueError("mel_window_starts: width must be >= 1")
    ratio = as_fraction(mel_rate, "mel_rate") / as_fraction(fps)
    starts = torch.arange(frames, dtype=torch.int64) * ratio.numerator // ratio.denominator
    return starts.clamp_(max=max(num_mel, width) - width)


def mel_windows(
    mel: torch.Tensor, frames: int, fps, mel_rate=80, width: int = 16, pad_value: float = -4.0
) -> torch.Tensor:
    """Wav2Lip/SyncNet mel windows: ``width`` mel frames per video frame.

    Args:
        mel: (M, n_mels) mel spectrogram, time first (Wav2Lip stores (n_mels, M): transpose it).
        frames: video frames F.
        fps: video frame rate.
        mel_rate: mel frames per second (16000 Hz / hop 200 = 80).
        width: mel frames per window (16 = 0.2 s).
        pad_value: value of the rows appended when M < width (-4 is silence in Wav2Lip's [-4, 4] scale).

    Returns:
        (F, width, n_mels): window i = mel[start_i : start_i + width] (see :func:`mel_window_starts`).
    """
    if mel.ndim != 2:
        raise ValueError(f"mel_windows: mel must be (M, n_mels), got {tuple(mel.shape)}")
    starts = mel_window_starts(mel.shape[0], frames, fps, mel_rate, width).to(mel.device)
    if mel.shape[0] < width:
        pad = mel.new_full((width - mel.shape[0], mel.shape[1]), pad_value)
        mel = torch.cat([mel, pad])
    return mel[starts[:, None] + torch.arange(width, device=mel.device)[None]]


@dataclasses.dataclass(frozen=True)
class AudioChunk:
    """One piece of a long song: core frames to keep, plus context frames on both sides."""

    index: int  # position in the plan, from 0
    frame_start: int  # first core output frame (inclusive)
    frame_stop: int  # last core output frame (exclusive); the cores of a plan tile [0, F) once
    context_start: int  # first frame the encoder sees: max(0, frame_start - context frames)
    context_stop: int  # frame after the last one the encoder sees: min(F, frame_stop + context frames)
    sample_start: int  # audio the context frames span, start rounded down to a multiple of the hop
    sample_stop: int  # end rounded up to a hop multiple, plus (receptive_field - hop), clamped to T

    @property
    def num_frames(self) -> int:
        return self.frame_stop - self.frame_start


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """How a song of ``num_samples`` is cut into overlapping chunks (see :func:`plan_chunks`)."""

    num_samples: int  # audio length T in samples
    sample_rate: int  # Hz
    fps: Fraction  # video frame rate
    num_frames: int  # output frames F
    chunk_frames: int  # core frames per chunk (the last chunk may have fewer)
    context_frames: int  # context frames on each side of a core
    chunks: tuple[AudioChunk, ...]  # in order; empty when F == 0

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        return iter(self.chunks)


def plan_chunks(
    num_samples: int,
    sample_rate: int,
    fps,
    chunk_seconds: float,
    context_seconds: float,
    hop: int = 320,
    receptive_field: int = 400,
    num_frames: int | None = None,
) -> ChunkPlan:
    """Overlapping chunks so an encoder's memory stays flat in song length.

    The F = frame_count(num_samples, sample_rate, fps) output frames (or ``num_frames``) are tiled by
    cores of floor(chunk_seconds * fps) frames (at least 1); each chunk also sees
    ceil(context_seconds * fps) frames on either side, clamped to [0, F). ``sample_start`` is the
    context's start time rounded down to a multiple of ``hop`` (320 samples at 16 kHz: the stride of
    wav2vec2/HuBERT's convolution stack, so the chunk's CNN frames coincide with the global ones), and
    ``sample_stop`` the end rounded up to a hop multiple plus the rest of the receptive field (400).
    The frame ranges are the contract: AudioEncoder maps them through the global align-corners
    positions to the exact CNN frames it needs (within a hop or two of this span), MelEncoder to the
    mel frames of its windows.

    Args:
        num_samples: song length T in samples.
        sample_rate: Hz.
        fps: video frame rate (see :func:`as_fraction`).
        chunk_seconds: core length in seconds (> 0; ``math.inf`` for one chunk).
        context_seconds: context on each side in seconds (>= 0).
        hop: encoder hop in samples (>= 1).
        receptive_field: encoder receptive field in samples (>= 1).
        num_frames: output frames, when not frame_count(...) (e.g. padded to a clip multiple).
    """
    num_samples = _count(num_samples, "num_samples")
    sample_rate = _rate(sample_rate, "sample_rate")
    hop, receptive_field = _rate(hop, "hop"), _rate(receptive_field, "receptive_field")
    rate = as_fraction(fps)
    frames = (
        frame_count(num_samples, sample_rate, rate)
        if num_frames is None
        else _count(num_frames, "num_frames")
    )
    if not isinstance(chunk_seconds, numbers.Real) or math.isnan(chunk_seconds) or chunk_seconds <= 0:
        raise ValueError(f"plan_chunks: chunk_seconds must be > 0, got {chunk_seconds!r}")
    if (
        not isinstance(context_seconds, numbers.Real)
        or not math.isfinite(context_seconds)
        or context_seconds < 0
    ):
        raise ValueError(
            f"plan_chunks: context_seconds must be a finite number >= 0, got {context_seconds!r}"
        )
    if math.isinf(chunk_seconds):
        chunk_frames = max(frames, 1)
    else:
        chunk_frames = max(1, math.floor(as_fraction(chunk_seconds, "chunk_seconds") * rate))
    context_frames = (
        math.ceil(as_fraction(context_seconds, "context_seconds") * rate) if context_seconds else 0
    )
    per_frame = Fraction(sample_rate) / rate
    chunks = []
    for index, start in enumerate(range(0, frames, chunk_frames)):
        stop = min(frames, start + chunk_frames)
        context_start, context_stop = max(0, start - context_frames), min(frames, stop + context_frames)
        sample_start = min(num_samples, math.floor(context_start * per_frame) // hop * hop)
        sample_stop = min(
            num_samples, -(-math.ceil(context_stop * per_frame) // hop) * hop + receptive_field - hop
        )
        chunks.append(AudioChunk(index, start, stop, context_start, context_stop, sample_start, sample_stop))
    return ChunkPlan(num_samples, sample_rate, rate, frames, chunk_frames, context_frames, tuple(chunks))
