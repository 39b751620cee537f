"""Reading video files through PyAV (FFmpeg): probing, timestamp-exact decoding with FFmpeg-style fps
resampling (the ``fps`` filter's rule), seeking, and frame/audio streaming so long videos take flat memory.
Writing lives in ``video_write.py``."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..progress import Progress
from .av_errors import ffmpeg_reason

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")  # what preprocessors pick up in a folder
_AUDIO_ONLY = {"wav", "flac", "mp3", "ogg", "aac", "aiff", "w64", "caf"}  # demuxers named in errors
_TIME_TOLERANCE = 1e-6  # seconds: timestamps this close to a requested start count as at it
_FIX = "re-export or re-download the file, or convert it (e.g. `ffmpeg -i in.mov -c:v libx264 out.mp4`)"


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What probe_video reads from a file's header and first frame."""

    path: str  # the probed file
    width: int  # displayed width in pixels (after the rotation stored by phones)
    height: int  # displayed height in pixels
    fps: float  # the video stream's average frame rate
    frames: int | None  # frame count stored in the header (None when the container has none)
    seconds: float | None  # duration of the video stream (None when unknown)
    codec: str  # video codec, e.g. "h264"
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    rotation: int  # degrees the frames are turned counter-clockwise for display (0, 90, 180, 270)
    has_audio: bool  # whether the file has an audio stream
    sample_rate: int | None  # of the first audio stream
    audio_channels: int | None  # of the first audio stream
    audio_offset: float  # audio stream start minus video stream start, seconds


@dataclasses.dataclass(frozen=True)
class VideoData:
    """A decoded video span with its audio."""

    frames: torch.Tensor  # (T, H, W, 3) uint8 RGB
    fps: float  # frames per second of `frames` (the requested fps, or the stream's average rate)
    audio: torch.Tensor | None  # (C, S) float32 covering the same span as the frames; None without audio
    sample_rate: int | None  # Hz of `audio`
    path: str  # the decoded file
    seconds: float  # T / fps
    start_seconds: float = 0.0  # time of frames[0] from the start of the video stream


class VideoFrame(NamedTuple):
    """One frame yielded by iter_video_frames."""

    index: int  # 0, 1, 2, ... in the returned sequence
    time: float  # seconds from the start of the video stream (the output grid slot with fps resampling)
    image: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video file's header and first frame (size, rate, length, rotation, audio).

    Args:
        path: the video file.

    Returns:
        VideoInfo.
    """
    path = _check_path(path, "probe_video")
    import av

    with _open(path, "probe_video") as container:
        stream = _video_stream(container, path, "probe_video")
        width, height, rotation = stream.codec_context.width, stream.codec_context.height, 0
        for frame in _decoded(container, stream, path, "probe_video"):
            width, height, rotation = frame.width, frame.height, _rotation(frame)
            break
        else:
            raise ValueError(f"probe_video: '{path.name}' has a video stream with no frame that decodes "
                             f"(0 frames); {_FIX}")
        if rotation in (90, 270):
            width, height = height, width
        audio = next(iter(container.streams.audio), None)
        origin = _stream_start(stream)
        offset = (_stream_start(audio) - origin) if audio is not None else 0.0
        seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if seconds is None and container.duration:
            seconds = container.duration / av.time_base
        return VideoInfo(
            path=str(path), width=width, height=height, fps=float(_native_rate(stream)),
            frames=int(stream.frames) or None, seconds=seconds, codec=stream.codec_context.name,
            container=container.format.name, rotation=rotation, has_audio=audio is not None,
            sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            audio_channels=int(audio.codec_context.channels) if audio is not None else None,
            audio_offset=float(offset))


def iter_video_frames(path: str | Path, *, fps: float | None = None, start_seconds: float = 0.0,
                      duration_seconds: float | None = None, max_size: int | None = None,
                      progress: Progress | None = None) -> Iterator[VideoFrame]:
    """Stream the frames of a video one at a time (memory flat in the video's length).

    Resampling to ``fps`` follows FFmpeg's ``fps`` filter (rounding "near"): an input frame at time t
    belongs to output slot round(t * fps) (halves away from zero) and output slot n shows the latest frame
    whose slot is <= n, so frames are duplicated or dropped, never blended; slots before the first frame
    show the first frame and the output ends at round(end * fps), end = last frame time + its duration
    (a 6 s clip at 30 fps gives 150 frames at 25 fps). Frames that are dropped are never converted to RGB.
    Times count from the video stream's start; ``start_seconds`` seeks to the key frame before it.

    Args:
        path: the video file (mp4, mov, mkv, webm, avi, ...).
        fps: output frame rate (> 0), or None for the stream's own frames and timestamps.
        start_seconds: first time to return (>= 0); with fps the first slot at or after it.
        duration_seconds: seconds to return (> 0) or None for the rest; with fps exactly
            round(duration_seconds * fps) frames unless the video ends first.
        max_size: if given, frames larger than this on their longer side are scaled down (area filter).
        progress: optional callback(done_frames, estimated_total) per frame; may raise to stop.

    Yields:
        VideoFrame(index, time, image (H, W, 3) uint8 RGB), displayed upright (rotation applied).
    """
    # 1. check the request
    path = _check_path(path, "iter_video_frames")
    if fps is not None and (not math.isfinite(fps) or fps <= 0):
        raise ValueError(f"iter_video_frames: fps must be a positive number or None, got {fps!r}")
    if not math.isfinite(start_seconds) or start_seconds < 0:
        raise ValueError(f"iter_video_frames: start_seconds must be >= 0, got {start_seconds!r}")
    if duration_seconds is not None and (not math.isfinite(duration_seconds) or duration_seconds <= 0):
        raise ValueError(f"iter_video_frames: duration_seconds must be > 0 or None, got {duration_seconds!r}")
    if max_size is not None and (isinstance(max_size, bool) or int(max_size) != max_size or max_size < 2):
        raise ValueError(f"iter_video_frames: max_size must be an integer >= 2 or None, got {max_size!r}")
    out_rate = None if fps is None else Fraction(fps).limit_denominator(1_000_000)

    # 2. decode, after a seek when it lands early enough, else from the start
    with _open(path, "iter_video_frames") as container:
        stream = _video_stream(container, path, "iter_video_frames")
        native = _native_rate(stream)
        origin = _stream_start(stream)
        total = _estimate_frames(stream, container, native, out_rate, start_seconds, duration_seconds)
        lead = 1 / native + (1 / out_rate if out_rate else 0) + Fraction(1, 10)
        frames = _frames_from(container, stream, float(start_seconds - lead), origin, path, "iter_video_frames")
        emitted = 0
        for item in _select(frames, stream, origin, out_rate, start_seconds, duration_seconds, max_size, path):
            emitted += 1
            if progress is not None:
                progress(emitted, max(total, emitted))
            yield item
        _check_emitted(emitted, path, start_seconds)


def iter_audio_blocks(path: str | Path, *, sample_rate: int | None = None, mono: bool = False,
                      start_seconds: float = 0.0, duration_seconds: float | None = None
                      ) -> Iterator[np.ndarray]:
    """Stream the first audio stream of a video as contiguous float32 blocks, aligned to video time.

    The concatenated blocks are the audio from ``start_seconds`` (counted from the video stream's start,
    like iter_video_frames' times) at ``sample_rate``: audio starting after the video is preceded by
    silence, audio before it is dropped, so sample i sits at start_seconds + i / sample_rate. Resampling
    is FFmpeg's swresample (continuous across blocks). Timestamp gaps inside the stream are not filled.

    Args:
        path: the video (or audio) file.
        sample_rate: output rate in Hz, or None for the stream's own rate.
        mono: average the channels into one (the mean, as ComfyUI and torchaudio downmix).
        start_seconds: where to start (>= 0); the file is seeked when it is far in.
        duration_seconds: seconds to return at most (> 0), or None for the rest of the stream.

    Yields:
        (C, n) float32 arrays, C = 1 if mono else the stream's channel count.
    """
    path = _check_path(path, "iter_audio_blocks")
    if sample_rate is not None and (isinstance(sample_rate, bool) or int(sample_rate) != sample_rate
                                    or sample_rate <= 0):
        raise ValueError(f"iter_audio_blocks: sample_rate must be a positive integer or None, "
                         f"got {sample_rate!r}")
    if not math.isfinite(start_seconds) or start_seconds < 0:
        raise ValueError(f"iter_audio_blocks: start_seconds must be >= 0, got {start_seconds!r}")
    if duration_seconds is not None and (not math.isfinite(duration_seconds) or duration_seconds <= 0):
        raise ValueError(f"iter_audio_blocks: duration_seconds must be > 0 or None, got {duration_seconds!r}")
    import av

    with _open(path, "iter_audio_blocks") as container:
        audio = next(iter(container.streams.audio), None)
        if audio is None:
            raise ValueError(f"iter_audio_blocks: '{path.name}' has no audio stream; give a video with sound")
        video = next(iter(container.streams.video), None)
        origin = _stream_start(video) if video is not None else _stream_start(audio)
        native = int(audio.codec_context.sample_rate)
        rate = native if sample_rate is None else int(sample_rate)
        remaining = math.inf if duration_seconds is None else max(1, round(duration_seconds * rate))
        if container.format.name.startswith("mov") and audio.duration and audio.time_base:
            # MP4 audio ends with encoder padding that FFmpeg does not trim; the sample table says where
            declared_end = audio.duration * audio.time_base + _stream_start(audio) - origin
            remaining = min(remaining, max(0, round((declared_end - Fraction(start_seconds)) * rate)))
        layout, channels = audio.codec_context.layout.name, int(audio.codec_context.channels)
        resampler = None if rate == native else av.AudioResampler(format="fltp", layout=layout, rate=rate)
        skip = None  # native samples still to drop before start_seconds (None: first frame not seen yet)

        def emit(samples: np.ndarray):
            nonlocal remaining
            if mono and samples.shape[0] > 1:
                samples = samples.mean(axis=0, keepdims=True)
            samples = samples[:, :remaining] if remaining != math.inf else samples
            remaining -= samples.shape[1]
            return samples

        for frame in _frames_from(container, audio, start_seconds - 0.5, origin, path, "iter_audio_blocks"):
            samples = frame.to_ndarray()
            if not frame.format.is_planar:  # packed (1, n * C) -> (C, n)
                samples = samples.reshape(-1, channels).T
            if frame.format.name.startswith(("s16", "s32", "u8")):
                samples = _int_to_float(samples.astype(np.float32), frame.format.name)
            samples = np.ascontiguousarray(samples, dtype=np.float32)
            if skip is None:
                # place the first decoded sample on the output grid: silence before it, or drop what lies
                # before start_seconds (samples are then counted, so later timestamps are not consulted)
                begin = _frame_time(frame, audio, origin, None) - Fraction(start_seconds)
                skip = max(0, round(-begin * native))
                lead = max(0, round(begin * rate))
                if lead:
                    yield emit(np.zeros((channels, int(min(lead, remaining))), np.float32))
            if skip:
                dropped = min(skip, samples.shape[1])
                samples, skip = samples[:, dropped:], skip - dropped
            if samples.shape[1] == 0:
                continue
            if resampler is not None:
                block = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
                block.sample_rate = native
                for out in resampler.resample(block):
                    if remaining <= 0:
                        break
                    yield emit(np.ascontiguousarray(out.to_ndarray()))
            else:
                yield emit(samples)
            if remaining <= 0:
                return
        if resampler is not None and remaining > 0:
            for out in resampler.resample(None):
                if remaining <= 0:
                    break
                yield emit(np.ascontiguousarray(out.to_ndarray()))


def read_video(path: str | Path, *, fps: float | None = None, start_seconds: float = 0.0,
               duration_seconds: float | None = None, with_audio: bool = True, max_size: int | None = None,
               progress: Progress | None = None) -> VideoData:
    """Decode a video span into memory: frames (resampled to ``fps`` like FFmpeg's fps filter) and audio.

    Args:
        path: the video file.
        fps: output frame rate, or None for the stream's frames (then VideoData.fps is its average rate).
        start_seconds: where to start (>= 0), counted from the video stream's start.
        duration_seconds: seconds to read (> 0), or None for the rest.
        with_audio: also decode the audio (at its own rate and channels), cut to the frames' span
            [start, start + T / fps); a file without sound gives audio None.
        max_size: scale frames down to at most this many pixels on the longer side.
        progress: optional callback(done_frames, estimated_total); may raise to stop.

    Returns:
        VideoData with frames (T, H, W, 3) uint8.
    """
    path = _check_path(path, "read_video")
    info = probe_video(path)
    buffer, count, first_time = None, 0, start_seconds
    for frame in iter_video_frames(path, fps=fps, start_seconds=start_seconds,
                                   duration_seconds=duration_seconds, max_size=max_size, progress=progress):
        if buffer is None:
            first_time = frame.time
            rate = fps or info.fps
            expected = duration_seconds if duration_seconds is not None else \
                max(0.0, (info.seconds or 0.0) - start_seconds)
            capacity = max(1, int(math.ceil(expected * rate)) + 2)
            buffer = np.empty((capacity, *frame.image.shape), np.uint8)
        if count == buffer.shape[0]:
            grown = np.empty((count + count // 2 + 1, *buffer.shape[1:]), np.uint8)
            grown[:count] = buffer
            buffer = grown
        buffer[count] = frame.image
        count += 1
    frames = torch.from_numpy(buffer[:count] if count * 4 >= buffer.shape[0] * 3 else buffer[:count].copy())
    rate = float(fps) if fps is not None else info.fps
    seconds = count / rate
    audio, sample_rate = None, None
    if with_audio and info.has_audio:
        sample_rate = info.sample_rate
        blocks = list(iter_audio_blocks(path, start_seconds=first_time, duration_seconds=seconds))
        audio = torch.from_numpy(np.concatenate(blocks, axis=1)) if blocks else \
            torch.zeros(info.audio_channels or 1, 0)
    return VideoData(frames=frames, fps=rate, audio=audio, sample_rate=sample_rate, path=str(path),
                     seconds=seconds, start_seconds=float(first_time))

# --------------------------------------------------------------------------------------------------------
# helpers


def _check_path(path, who: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{who}: '{path}' does not exist; check the file name and folder")
    if path.is_dir():
        raise ValueError(f"{who}: '{path}' is a folder, not a video file; give a file inside it")
    if path.stat().st_size == 0:
        raise ValueError(f"{who}: '{path.name}' is empty (0 bytes); the export or download did not finish")
    return path


def _open(path: Path, who: str):
    try:
        import av
    except ImportError as exc:
        raise RuntimeError(f"{who} needs PyAV: pip install av") from exc
    try:
        return av.open(str(path), "r")
    except av.error.FFmpegError as exc:
        raise ValueError(f"{who}: FFmpeg cannot open '{path.name}' ({ffmpeg_reason(exc)}): it is not a video, "
                         f"or it is damaged or truncated (an .mp4 cut short loses its index); {_FIX}") from exc


def _video_stream(container, path: Path, who: str):
    streams = list(container.streams.video)
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["no"]
        what = " (an audio file)" if container.format.name in _AUDIO_ONLY else ""
        raise ValueError(f"{who}: '{path.name}' contains no video stream{what}, only {', '.join(kinds)} "
                         "streams; give a video file (mp4, mov, mkv, webm, avi)")
    stream = streams[0]
    stream.thread_type = "AUTO"
    return stream


def _decoded(container, stream, path: Path, who: str):
    """Decoded frames of one stream; FFmpeg errors become ValueError naming the time reached."""
    import av

    last = 0.0
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and stream.time_base:
                last = float(packet.pts * stream.time_base)
            yield from packet.decode()
    except av.error.FFmpegError as exc:
        raise ValueError(f"{who}: '{path.name}' is damaged: decoding failed near {last:.2f} s "
                         f"({ffmpeg_reason(exc)}); {_FIX}") from exc


def _chain(first, rest):
    yield first
    yield from rest


def _frames_from(container, stream, seconds: float, origin: Fraction, path: Path, who: str):
    """Decoded frames of `stream` from a key frame at or before `seconds` (from the video start) when the
    file seeks there, else from the beginning (also when a seek lands late)."""
    if seconds > 0 and stream.time_base:
        try:
            container.seek(int((seconds + origin) / stream.time_base), stream=stream, backward=True)
        except Exception:  # noqa: BLE001 - some demuxers cannot seek; decode from the start instead
            logger.debug("%s: seeking in '%s' failed; decoding from the start", who, path.name)
            return _decoded(container, stream, path, who)
        decoded = _decoded(container, stream, path, who)
        first = next(decoded, None)
        if first is not None and _frame_time(first, stream, origin, None) <= seconds + 1e-3:
            return _chain(first, decoded)
        logger.debug("%s: seeking in '%s' landed late; decoding from the start", who, path.name)
        container.seek(0)
    return _decoded(container, stream, path, who)


def _stream_start(stream) -> Fraction:
    if stream is not None and stream.start_time is not None and stream.time_base:
        return stream.start_time * stream.time_base
    return Fraction(0)


def _native_rate(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return Fraction(25)


def _frame_time(frame, stream, origin: Fraction, previous: Fraction | None) -> Fraction:
    """Exact time of a frame relative to the stream start (falls back to previous + 1 frame)."""
    pts = frame.pts
    if pts is None or not stream.time_base:
        if previous is None:
            return Fraction(0)
        step = 1 / _native_rate(stream) if stream.type == "video" else Fraction(frame.samples, frame.sample_rate)
        return previous + step
    return pts * stream.time_base - origin


def _frame_duration(frame, stream) -> Fraction:
    if frame.duration and stream.time_base:
        return frame.duration * stream.time_base
    return 1 / _native_rate(stream)


def _rotation(frame) -> int:
    try:
        angle = frame.rotation
    except Exception:  # noqa: BLE001 - older PyAV
        return 0
    return int(round((angle or 0) / 90)) % 4 * 90


def _to_rgb(frame, max_size: int | None) -> np.ndarray:
    width, height = frame.width, frame.height
    rotation = _rotation(frame)
    if max_size is not None and max(width, height) > max_size:
        scale = max_size / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
        image = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    else:
        image = frame.to_ndarray(format="rgb24")
    if rotation:
        image = np.rot90(image, k=rotation // 90)
    return np.ascontiguousarray(image)


def _slot(time: Fraction, rate: Fraction) -> int:
    """FFmpeg fps filter slot: round(time * rate), halves away from zero."""
    value = time * rate
    return math.floor(value + Fraction(1, 2)) if value >= 0 else -math.floor(-value + Fraction(1, 2))


def _select(frames, stream, origin, out_rate, start_seconds, duration_seconds, max_size, path):
    """Turn decoded frames into VideoFrames: native timestamps in [start, start + duration) or the fps grid."""
    start = Fraction(start_seconds).limit_denominator(1_000_000)
    if out_rate is None:
        end = math.inf if duration_seconds is None else start + Fraction(duration_seconds)
        index, previous = 0, None
        for frame in frames:
            time = _frame_time(frame, stream, origin, previous)
            previous = time
            if time < start - Fraction(_TIME_TOLERANCE):
                continue
            if time >= end - Fraction(_TIME_TOLERANCE):
                return
            yield VideoFrame(index, float(time), _to_rgb(frame, max_size))
            index += 1
        return
    first_slot = math.ceil(start * out_rate - Fraction(1, 1_000_000))
    stop_slot = math.inf if duration_seconds is None else first_slot + max(1, round(duration_seconds * out_rate))
    next_slot, pending, pending_rgb, previous, end_time = first_slot, None, None, None, None
    for frame in frames:
        time = _frame_time(frame, stream, origin, previous)
        if previous is not None and time <= previous:
            logger.debug("iter_video_frames: '%s' has a non-increasing timestamp at %.3f s", path.name, time)
        previous = time if previous is None else max(previous, time)
        slot = _slot(time, out_rate)
        if pending is None and slot > next_slot:
            pending = frame  # slots before the first frame show the first frame
        while next_slot < slot and next_slot < stop_slot:
            if pending_rgb is None:
                pending_rgb = _to_rgb(pending, max_size)
            yield VideoFrame(next_slot - first_slot, float(next_slot / out_rate), pending_rgb.copy())
            next_slot += 1
        if next_slot >= stop_slot:
            return
        pending, pending_rgb = frame, None
        end_time = time + _frame_duration(frame, stream)
    if pending is None:
        return
    last_slot = max(_slot(previous, out_rate), _slot(end_time, out_rate) - 1)
    while next_slot <= last_slot and next_slot < stop_slot:
        if pending_rgb is None:
            pending_rgb = _to_rgb(pending, max_size)
        yield VideoFrame(next_slot - first_slot, float(next_slot / out_rate), pending_rgb.copy())
        next_slot += 1


def _check_emitted(emitted: int, path: Path, start_seconds: float):
    if emitted:
        return
    if start_seconds > 0:
        raise ValueError(f"iter_video_frames: start_seconds={start_seconds:g} is at or past the end of "
                         f"'{path.name}'; give a smaller start (probe_video tells the length)")
    raise ValueError(f"iter_video_frames: '{path.name}' contains no video frames that decode; {_FIX}")


def _estimate_frames(stream, container, native, out_rate, start_seconds, duration_seconds) -> int:
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000
    if duration_seconds is not None:
        seconds = duration_seconds if seconds is None else min(duration_seconds, seconds - start_seconds)
    elif seconds is not None:
        seconds -= start_seconds
    return max(1, round(max(0.0, seconds or 0.0) * float(out_rate or native)))


def _int_to_float(samples: np.ndarray, sample_format: str) -> np.ndarray:
    if sample_format.startswith("u8"):
        return (samples - 128.0) / 128.0
    scale = 32768.0 if sample_format.startswith("s16") else 2147483648.0
    return samples / np.float32(scale)
