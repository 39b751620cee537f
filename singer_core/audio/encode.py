"""Encode audio files through PyAV (FFmpeg): .wav, .flac, .mp3, .ogg, .opus and .m4a chosen by extension,
integer codecs quantised on the grid decode_audio reads back (so lossless formats round-trip bit-exactly),
written under a temporary name and renamed, so an error or an interruption leaves no partial file."""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..io.av_errors import ffmpeg_reason
from ..io.fs import FILE_SYSTEM_ERRNOS, fs_error, remove_quietly
from ..progress import Progress

logger = logging.getLogger(__name__)

# extension -> (FFmpeg muxer, default codec, codecs allowed there)
_CONTAINERS = {
    ".wav": ("wav", "pcm_s16le", ("pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le")),
    ".flac": ("flac", "flac", ("flac",)),
    ".mp3": ("mp3", "mp3", ("mp3",)),
    ".ogg": ("ogg", "vorbis", ("vorbis", "opus", "flac")),
    ".opus": ("ogg", "opus", ("opus",)),
    ".m4a": ("ipod", "aac", ("aac", "alac")),
}
# codec -> (FFmpeg encoder, sample format handed to it, integer bits or 0 for float, default bit rate)
_ENCODERS = {
    "pcm_s16le": ("pcm_s16le", "s16", 16, None),
    "pcm_s24le": ("pcm_s24le", "s32", 24, None),
    "pcm_s32le": ("pcm_s32le", "s32", 32, None),
    "pcm_f32le": ("pcm_f32le", "flt", 0, None),
    "flac": ("flac", "s16", 16, None),
    "alac": ("alac", "s16p", 16, None),
    "mp3": ("libmp3lame", "fltp", 0, 192_000),
    "vorbis": ("libvorbis", "fltp", 0, None),
    "opus": ("libopus", "flt", 0, 128_000),
    "aac": ("aac", "fltp", 0, 192_000),
}
_MAX_CHANNELS = {"mp3": 2}
_ENCODE_CHUNK = 1 << 15  # samples handed to the encoder per frame


def write_audio(path: str | Path, waveform: torch.Tensor, sample_rate: int, *, codec: str | None = None,
                bit_rate: int | None = None, progress: Progress | None = None) -> Path:
    """Encode (C, T) float audio to a file chosen by extension: .wav, .flac, .mp3, .ogg, .opus, .m4a.

    Integer codecs get samples rounded to the nearest step of 1/2**(bits-1) and clipped (x * 32768 for 16
    bits), which is exactly what decode_audio divides by, so audio on that grid round-trips bit-exactly
    through wav/flac/alac. Rates a codec cannot store are converted by FFmpeg (opus always stores 48 kHz;
    mp3 at most 48 kHz). The file is written under a temporary name and renamed when complete, so a
    failure or an interruption by `progress` never leaves a partial file.

    Args:
        path: output file; its extension picks the container.
        waveform: (C, T) or (T,) float audio, nominally in [-1, 1].
        sample_rate: Hz of the waveform.
        codec: None for the container's default (wav: pcm_s16le, flac, mp3, ogg: vorbis, or opus where PyAV
            lacks libvorbis, as PyAV 18's wheels do; opus, m4a: aac) or
            one allowed there: wav: pcm_s16le | pcm_s24le | pcm_s32le | pcm_f32le; ogg: vorbis | opus | flac;
            m4a: aac | alac.
        bit_rate: bits per second for lossy codecs (None: 192 k for mp3/aac, 128 k for opus, the
            encoder's default for vorbis).
        progress: optional callback(done_samples, total_samples) per chunk; may raise to stop.

    Returns:
        the written path.
    """
    # 1. check arguments
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CONTAINERS:
        raise ValueError(f"write_audio: cannot tell the format of '{path.name}' from its extension; use one "
                         f"of {', '.join(_CONTAINERS)}")
    muxer, default_codec, allowed = _CONTAINERS[suffix]
    if codec is not None and codec not in allowed:
        raise ValueError(f"write_audio: codec {codec!r} cannot be written to a {suffix} file; use one of "
                         f"{', '.join(allowed)} (or change the extension)")
    codec = _available_codec(codec, default_codec, allowed, path.name)
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"write_audio: waveform must be a non-empty (channels, samples) tensor, got shape "
                         f"{tuple(waveform.shape)}")
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"write_audio: sample_rate must be a positive integer, got {sample_rate!r}")
    channels, total = waveform.shape
    if channels > _MAX_CHANNELS.get(codec, 8):
        raise ValueError(f"write_audio: {codec} stores at most {_MAX_CHANNELS.get(codec, 8)} channels, the "
                         f"waveform has {channels}; downmix it (to_mono) or write .flac/.wav")
    if not torch.isfinite(waveform).all():
        raise ValueError("write_audio: the waveform contains NaN or infinite samples; fix the audio first")
    if not path.parent.is_dir():
        raise ValueError(f"write_audio: the folder '{path.parent}' does not exist; create it first")
    try:
        import av
    except ImportError as exc:
        raise RuntimeError("write_audio needs PyAV: pip install av") from exc
    encoder, sample_format, bits, default_rate = _ENCODERS[codec]
    rate = _stored_rate(av.codec.Codec(encoder, "w").audio_rates, int(sample_rate))
    if rate != sample_rate:
        logger.info("write_audio: %s cannot store %d Hz; FFmpeg converts to %d Hz", codec, sample_rate, rate)
    peak = float(waveform.abs().max())
    if bits and peak > 1.0:
        logger.warning("write_audio: samples up to %.3f exceed full scale and are clipped in '%s'",
                       peak, path.name)
    layout = av.AudioLayout(f"{channels}c").name  # FFmpeg's default for the count: mono, stereo, ..., 5.1

    # 2. encode chunk by chunk into a temporary file, then rename it
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        with av.open(str(temporary), "w", format=muxer) as container:
            stream = container.add_stream(encoder, rate=rate, layout=layout)
            if bit_rate or default_rate:
                stream.bit_rate = int(bit_rate or default_rate)
            for offset in range(0, total, _ENCODE_CHUNK):
                chunk = waveform[:, offset:offset + _ENCODE_CHUNK].detach().cpu().float().numpy()
                frame = av.AudioFrame.from_ndarray(_to_sample_format(chunk, sample_format, bits),
                                                   format=sample_format, layout=layout)
                frame.sample_rate = int(sample_rate)
                frame.pts, frame.time_base = offset, Fraction(1, int(sample_rate))
                for packet in stream.encode(frame):
                    container.mux(packet)
                if progress is not None:
                    progress(min(total, offset + _ENCODE_CHUNK), total)
            for packet in stream.encode(None):
                container.mux(packet)
        os.replace(temporary, path)
    except OSError as exc:  # PyAV's errno errors are OSErrors too: a read-only folder, a full disk
        if exc.errno in FILE_SYSTEM_ERRNOS or not isinstance(exc, av.error.FFmpegError):
            raise fs_error(exc, path, who="write_audio") from exc
        raise _codec_error(exc, codec, channels, rate, path) from exc
    except av.error.FFmpegError as exc:
        raise _codec_error(exc, codec, channels, rate, path) from exc
    finally:
        remove_quietly(temporary)  # never masks the error being raised (e.g. EROFS from its own cleanup)
    return path


def _available_codec(codec: str | None, default: str, allowed: tuple[str, ...], name: str) -> str:
    """The codec to write: the one asked for, or the container's default; where this PyAV build lacks the
    default's encoder (PyAV 18's wheels ship no libvorbis), the next allowed codec it has."""
    try:
        import av
    except ImportError as exc:
        raise RuntimeError("write_audio needs PyAV: pip install av") from exc
    have = av.codecs_available
    if codec is not None:
        if _ENCODERS[codec][0] not in have:
            others = [c for c in allowed if _ENCODERS[c][0] in have]
            raise ValueError(f"write_audio: this PyAV build (av {av.__version__}) has no {codec} encoder "
                             f"({_ENCODERS[codec][0]}) for '{name}'; use codec="
                             f"{' or '.join(repr(c) for c in others) or 'None'} or write .flac / .wav")
        return codec
    for candidate in (default, *allowed):
        if _ENCODERS[candidate][0] in have:
            if candidate != default:
                logger.info("write_audio: PyAV %s has no %s encoder; '%s' is written as %s", av.__version__,
                            default, name, candidate)
            return candidate
    raise ValueError(f"write_audio: this PyAV build (av {av.__version__}) can encode none of "
                     f"{', '.join(allowed)} for '{name}'; write .flac or .wav instead")


def _codec_error(exc, codec: str, channels: int, rate: int, path: Path) -> ValueError:
    return ValueError(f"write_audio: FFmpeg could not write {codec} ({channels} channels, {rate} Hz) to "
                      f"'{path.name}': {ffmpeg_reason(exc)}; try another codec or format (.flac and .wav take "
                      "any rate and up to 8 channels)")


def _stored_rate(supported, rate: int) -> int:
    """`rate` if the encoder stores it, else the smallest supported rate above it (or the largest)."""
    if not supported or rate in supported:
        return rate
    higher = [r for r in supported if r > rate]
    return min(higher) if higher else max(supported)


def _to_sample_format(chunk: np.ndarray, sample_format: str, bits: int) -> np.ndarray:
    """(C, n) float32 -> the array PyAV expects for `sample_format` (planar (C, n), packed (1, n*C))."""
    if bits:
        scale = float(1 << (bits - 1))
        dtype = np.int16 if sample_format.startswith("s16") else np.int32
        quantised = np.clip(np.rint(chunk.astype(np.float64) * scale), -scale, scale - 1)
        if bits == 24:
            quantised *= 256  # pcm_s24le takes the top 24 bits of 32-bit samples
        chunk = quantised.astype(dtype)
    if sample_format.endswith("p"):
        return np.ascontiguousarray(chunk)
    return np.ascontiguousarray(chunk.T).reshape(1, -1)
