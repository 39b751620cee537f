"""Decode audio files through PyAV (FFmpeg): any common container or codec, streamed frame by frame into one
preallocated buffer, with damage and truncation reported instead of silently cut songs. Encoding lives in
``encode.py``."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import struct
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..io.av_errors import ffmpeg_reason
from ..progress import Progress

logger = logging.getLogger(__name__)

# Demuxers whose seeks land on a frame with a sample-exact timestamp (an index or granule positions).
# Others (mp3, ADTS aac, Matroska with its millisecond clock) are decoded from the start and the samples
# before start_seconds dropped: slower, but the span is exact.
_EXACT_SEEK = {"wav", "flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "aiff", "w64", "caf"}
# Demuxers whose header states the exact length: decoding much less than that means a damaged file.
# (mp3 and ADTS durations may be estimates from the bitrate; a shortfall there is only a warning.)
_EXACT_LENGTH = _EXACT_SEEK | {"matroska,webm"}
# Demuxers FFmpeg uses for pictures and text; named in the "no audio stream" error.
_NOT_SOUND = {"png_pipe": "a PNG image", "jpeg_pipe": "a JPEG image", "image2": "an image",
              "webp_pipe": "a WebP image", "gif": "a GIF image", "bmp_pipe": "a BMP image",
              "tty": "a text file", "bin": "binary data"}
_PREROLL_SECONDS = 0.25  # decoded before start_seconds after a seek, so lossy decoders settle (AAC, Opus)
_COPY_BLOCK = 1 << 16  # samples moved per step when the buffer is compacted (bounds the scratch memory)
_FIX = ("re-export or re-download the file, or convert it (e.g. `ffmpeg -i in -c:a flac out.flac`)")


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
    """One decoded audio stream at its native sample rate and channel layout."""

    waveform: torch.Tensor  # (C, T) float32, nominally in [-1, 1] (lossy codecs may overshoot slightly)
    sample_rate: int  # Hz, the stream's own rate (never resampled here)
    codec: str  # codec name, e.g. "flac", "mp3", "aac", "opus", "pcm_s16le"
    container: str  # FFmpeg demuxer name, e.g. "wav", "ogg", "mov,mp4,m4a,3gp,3g2,mj2"
    path: str  # the decoded file
    channels: int  # C
    seconds: float  # T / sample_rate
    start_seconds: float = 0.0  # where waveform[:, 0] sits in the stream, in seconds
    layout: str = ""  # FFmpeg channel layout name ("mono", "stereo", "5.1", "2 channels", ...)
    silenced: tuple[tuple[float, float], ...] = ()  # (start, end) seconds of damage replaced by silence

    def to_comfy(self) -> dict:
        """The ComfyUI AUDIO dict {"waveform": (1, C, T), "sample_rate": int}."""
        return {"waveform": self.waveform[None], "sample_rate": int(self.sample_rate)}


def decode_audio(path: str | Path, *, start_seconds: float = 0.0, duration_seconds: float | None = None,
                 stream_index: int | None = None, on_damage: str = "error",
                 progress: Progress | None = None) -> DecodedAudio:
    """Decode one audio stream of a file (wav, flac, mp3, ogg/vorbis, opus, m4a/aac, alac, the audio track
    of mp4/mov/mkv/webm video, ...) to float32 at its native sample rate and channel layout.

    Packets are decoded one by one, converted to planar float by FFmpeg's resampler (format only: rate and
    layout are kept) and copied into one buffer sized from the container's duration, so memory stays at
    the output plus one frame (plus a 64 k-sample block when the buffer is trimmed to the decoded length).

    Damage never yields a silently shorter song. With on_damage="error" (the default) a packet that fails
    to decode, or a file that ends before the length its header states (wav, flac, mp4/mov/m4a, mkv, mp3
    with a Xing/Info header, ogg without a complete end-of-stream page), raises ValueError naming how many
    seconds decode cleanly, so the caller can ask for that span with ``duration_seconds``. With
    on_damage="silence" damaged packets, timestamp gaps and a missing tail (up to the declared length)
    become silence, so the song keeps its length and timing; the spans are logged and returned in
    ``silenced``. Timing is exact where the container stores timestamps (flac, mp4/m4a, ogg, mkv, wav);
    mp3 and raw AAC have none (FFmpeg counts packets), so after damage they may slip by a frame (~26 ms).
    Corruption FFmpeg conceals without a trace (a few flipped bits) cannot be detected.

    Args:
        path: the file to read.
        start_seconds: where to start, in seconds from the beginning of the stream (>= 0). Sample-exact:
            indexed files (wav, flac, ogg, mp4/mov/m4a) are seeked, others (mp3, mkv, raw aac) are decoded
            from the start and the samples before the start dropped.
        duration_seconds: the most seconds to return (> 0), or None for the rest of the stream. A request
            past the end of a complete file returns what the file has (check ``seconds``).
        stream_index: which audio stream, counting audio streams only (0 = the first); None = the first.
        on_damage: "error" or "silence" (see above).
        progress: optional callback(done_samples, total_samples), called about every 1 % and at the end;
            it may raise to stop the decode (the exception propagates).

    Returns:
        DecodedAudio with waveform (C, T) float32.
    """
    # 1. check the request and the file before FFmpeg sees it
    path = Path(path)
    name = path.name
    if not math.isfinite(start_seconds) or start_seconds < 0:
        raise ValueError(f"decode_audio: start_seconds must be a finite number >= 0, got {start_seconds!r}")
    if duration_seconds is not None and (not math.isfinite(duration_seconds) or duration_seconds <= 0):
        raise ValueError(f"decode_audio: duration_seconds must be > 0 or None (to the end), "
                         f"got {duration_seconds!r}")
    if on_damage not in ("error", "silence"):
        raise ValueError(f"decode_audio: on_damage must be 'error' or 'silence', got {on_damage!r}")
    if not path.exists():
        raise ValueError(f"decode_audio: '{path}' does not exist; check the file name and folder")
    if path.is_dir():
        raise ValueError(f"decode_audio: '{path}' is a folder, not an audio file; give a file inside it")
    if path.stat().st_size == 0:
        raise ValueError(f"decode_audio: '{name}' is empty (0 bytes); the export or download did not "
                         "finish; give a file with sound")
    try:
        import av
    except ImportError as exc:
        raise RuntimeError("decode_audio needs PyAV: pip install av") from exc

    # 2. open the container, pick the stream, work out the span [begin, end) in stream samples
    with _open(path) as container:
        stream = _pick_stream(container, stream_index, name)
        fmt, codec = container.format.name, _codec_name(stream)
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            raise ValueError(f"decode_audio: the audio stream of '{name}' has no valid sample rate "
                             f"({rate}); the file header is damaged; {_FIX}")
        frame_size, layout = stream.codec_context.frame_size or 0, stream.codec_context.layout.name
        stream_start, declared = _stream_span(container, stream)
        if fmt == "wav":
            declared = _riff_data_seconds(path, declared)
        begin = round(start_seconds * rate)
        end = None if duration_seconds is None else begin + max(1, round(duration_seconds * rate))
        if declared is not None and fmt in _EXACT_LENGTH and begin >= declared * rate:
            raise ValueError(f"decode_audio: start_seconds={start_seconds:g} is at or past the end of "
                             f"'{name}', which is {declared:.3f} s long; give a smaller start")
        if declared is not None and fmt.startswith("mov"):
            # MP4 audio ends with encoder padding that FFmpeg does not trim; the sample table says where.
            end = round(declared * rate) if end is None else min(end, round(declared * rate))
        window = _Window(rate, begin, end, stream_start, _capacity(begin, end, declared, rate))

        # 3. decode into the buffer (seeking first where timestamps are sample-exact)
        decoded = None
        exact_timestamps = stream.time_base and stream.time_base <= Fraction(1, rate)
        if begin > 0 and fmt in _EXACT_SEEK and exact_timestamps:
            target = max(0.0, start_seconds - _PREROLL_SECONDS) + stream_start
            try:
                container.seek(int(target / stream.time_base), stream=stream)
                decoded = _decode_packets(container, stream, window, True, on_damage, progress, name)
            except av.error.FFmpegError:
                decoded = None
            if decoded is None:
                logger.debug("decode_audio: seeking in '%s' missed the start; decoding from the start", name)
    if decoded is None:
        with _open(path) as container:
            stream = _pick_stream(container, stream_index, name)
            decoded = _decode_packets(container, stream, window, False, on_damage, progress, name)
    buffer, written, position = decoded.buffer, decoded.written, decoded.position
    silenced = list(decoded.silenced)

    # 4. refuse (or, with on_damage="silence", fill) damaged, truncated and empty results
    usable = _usable(position, rate, start_seconds)
    use_part = f"; to use the part that decodes, pass duration_seconds <= {usable}" if usable else ""
    if decoded.damage is not None and on_damage == "error":
        raise ValueError(f"decode_audio: '{name}' is damaged: decoding failed at {position / rate:.2f} s"
                         f"{_of(declared)} ({ffmpeg_reason(decoded.damage)}); {_FIX}{use_part}; or pass "
                         "on_damage='silence' to replace the damaged parts with silence")
    wanted = end if declared is None else min(end or math.inf, round(declared * rate))
    # headers may count encoder delay and padding (mp3: up to ~3 frames): allow 4 frames + 50 ms
    slack = round((0.05 + 0.001 * (declared or 0)) * rate) + 4 * frame_size
    exact = fmt in _EXACT_LENGTH or (fmt == "mp3" and _mp3_states_length(path))
    short = declared is not None and position < wanted - slack
    cut_ogg = fmt == "ogg" and (end is None or position < end) and not _ogg_ends_cleanly(path)
    decoded_seconds = f"{position / rate:.2f} s"
    what = (f"its header says {declared:.2f} s but only {decoded_seconds} could be decoded" if short else
            f"the Ogg stream stops without a complete end-of-stream page after {decoded_seconds}")
    if short and exact and on_damage == "silence":
        written, buffer = decoded.out.put(position, None, wanted - position), decoded.out.data
        _add_span(silenced, position, wanted)
    elif (short and exact) or (cut_ogg and on_damage == "error"):
        fill = "; or pass on_damage='silence' to fill the missing end with silence" if short and exact else ""
        raise ValueError(f"decode_audio: '{name}' is truncated or damaged: {what}; {_FIX}{use_part}{fill}")
    elif short or cut_ogg:
        logger.warning("decode_audio: '%s' may be truncated: %s%s", name, what,
                       f" (a {fmt} header may only estimate the length)" if short else "")
    if written == 0:
        if begin > 0 and position <= begin:
            raise ValueError(f"decode_audio: start_seconds={start_seconds:g} is past the end of '{name}' "
                             f"({position / rate:.3f} s of audio); give a smaller start")
        raise ValueError(f"decode_audio: '{name}' contains no audio samples (0 s of sound); give a file "
                         "with sound")
    count, first = decoded.out.non_finite, decoded.out.first_non_finite
    if count:
        raise ValueError(f"decode_audio: '{name}' contains {count} NaN or infinite samples (the first at "
                         f"{first / rate:.3f} s); the file is corrupt; {_FIX}")
    if silenced or decoded.damage is not None:
        total = sum(stop - start for start, stop in silenced) / rate
        first_at = f", the first at {silenced[0][0] / rate:.2f} s" if silenced else ""
        logger.warning("decode_audio: '%s' is damaged (%s): %d span(s), %.2f s in all, were replaced with "
                       "silence%s", name,
                       ffmpeg_reason(decoded.damage) if decoded.damage else "timestamps jump",
                       len(silenced), total, first_at)
    waveform = torch.from_numpy(_shrink(buffer, written))
    if progress is not None:
        progress(written, written)
    return DecodedAudio(waveform=waveform, sample_rate=rate, codec=codec, container=fmt, path=str(path),
                        channels=waveform.shape[0], seconds=written / rate, start_seconds=begin / rate,
                        layout=layout, silenced=tuple((a / rate, b / rate) for a, b in silenced))


class _Window(NamedTuple):
    rate: int  # Hz
    begin: int  # first stream sample wanted
    end: int | None  # one past the last stream sample wanted (None: to the end)
    stream_start: float  # seconds: the stream's first timestamp, sample 0
    capacity: int  # samples to preallocate


class _Output:
    """The (C, capacity) float32 buffer for stream samples [begin, end), filled front to back; it grows
    (with a warning in the log) only when the header understated the length."""

    def __init__(self, channels: int, window: _Window, name: str):
        self.data = np.empty((channels, window.capacity), dtype=np.float32)
        self.begin, self.end, self.name = window.begin, window.end, name
        self.written, self.non_finite, self.first_non_finite = 0, 0, -1

    def put(self, position: int, samples: np.ndarray | None, count: int) -> int:
        """Store `count` samples that start at stream sample `position` (None: silence), clipped to the
        window; returns the number of samples written so far."""
        low = max(self.begin, position)
        high = position + count if self.end is None else min(self.end, position + count)
        if high <= low:
            return self.written
        if low != self.begin + self.written:
            raise RuntimeError(f"decode_audio: internal error: samples of '{self.name}' arrived out of order")
        size = high - low
        if self.written + size > self.data.shape[1]:
            self.data = _grow(self.data, self.written, self.written + size, self.name)
        target = self.data[:, self.written:self.written + size]
        if samples is None:
            target.fill(0.0)
        else:
            target[...] = samples[:, low - position:high - position]
            finite = np.isfinite(target)
            if not finite.all():
                self.non_finite += int(finite.size - np.count_nonzero(finite))
                if self.first_non_finite < 0:
                    self.first_non_finite = low + int(np.argmin(finite.all(axis=0)))
        self.written += size
        return self.written


class _MissingFrames(Exception):
    """Decoding went on past damage, but a packet lost its timestamps: frames are missing or misplaced."""

    def __init__(self, at: float):
        super().__init__(f"the stream loses its timestamps at {at:.2f} s (lost sync)")


class _Decoded(NamedTuple):
    out: _Output  # the filled buffer
    position: int  # stream sample index reached
    damage: Exception | None  # the first FFmpeg error met
    silenced: list[tuple[int, int]]  # stream sample spans filled with silence (on_damage="silence")

    @property
    def buffer(self) -> np.ndarray:
        return self.out.data

    @property
    def written(self) -> int:
        return self.out.written


def _decode_packets(container, stream, window: _Window, seeked: bool, on_damage: str, progress, name):
    """Demux and decode `stream` into an _Output. Returns _Decoded, or None when a seek landed after the
    wanted start (the caller then decodes from the beginning)."""
    import av

    rate, end = window.rate, window.end
    out = _Output(stream.codec_context.channels, window, name)
    resampler, source = None, None
    position = None if seeked else 0  # stream sample index of the next decoded sample
    damage, silenced, origin, stamped = None, [], None, False
    # timestamp jitter tolerated before a jump counts as a gap (Matroska stores milliseconds)
    jitter = max(round(0.002 * rate), 2 * math.ceil(float(stream.time_base or 0) * rate))
    step, next_report = max(1, window.capacity // 100), 0
    packets = container.demux(stream)
    while end is None or position is None or position < end:
        try:
            packet = next(packets, None)
        except av.error.FFmpegError as exc:  # the container cannot be read past this point
            damage = damage or exc
            break
        if packet is None:
            break
        if packet.size and packet.pts is None and packet.dts is None and stamped:
            # the demuxer lost sync here: newer FFmpeg (PyAV 18) hands over the resynced bytes as one packet
            # without a timestamp whose frames decode without an error, the damaged one as noise; nothing
            # in it can be placed or trusted, so it counts as damage (its span is filled from the next stamp)
            damage = damage or _MissingFrames((position or 0) / rate)
            if on_damage == "error":
                break
            continue
        stamped = stamped or packet.pts is not None
        try:
            pieces = []
            for frame in stream.decode(packet):
                signature = (frame.format.name, frame.layout.name, frame.sample_rate)
                if resampler is None or signature != source:
                    if resampler is not None:
                        logger.warning("decode_audio: '%s' changes its audio format at %.2f s (%s -> %s); "
                                       "converting to the first one", name, (position or 0) / rate, source,
                                       signature)
                        pieces += [piece for piece in resampler.resample(None) if piece is not None]
                    resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout,
                                                  rate=rate)
                    source = signature
                pieces += resampler.resample(frame)
        except av.error.FFmpegError as exc:
            damage = damage or exc
            if on_damage == "error":
                break
            # the gap is filled when the next frame's timestamp shows where it belongs (packet durations
            # would not do: garbage can pose as extra mp3 frames)
            continue
        for piece in pieces:
            at = None
            if piece.pts is not None and piece.time_base is not None:
                at = round((float(piece.pts * piece.time_base) - window.stream_start) * rate)
            if position is None:  # the first frame after a seek is placed by its timestamp
                if at is None or at > window.begin:
                    return None
                position = at
            if at is not None and origin is None:
                origin = at - position  # timestamps may start off zero (codec delay): only jumps count
            elif on_damage == "silence" and at is not None and at - origin - position > jitter:
                # frames are missing before this one (error mode leaves a jump to the length check: Ogg Vorbis
                # pages can carry estimated timestamps that jump by a few ms in a clean file)
                _add_span(silenced, position, at - origin)
                out.put(position, None, at - origin - position)
                position = at - origin
            samples = piece.to_ndarray()  # (C, n) float32
            out.put(position, samples, samples.shape[1])
            position += samples.shape[1]
        if damage is not None and on_damage == "error":
            break
        if progress is not None and out.written >= next_report:
            progress(out.written, max(out.written, window.capacity))
            next_report = out.written + step
    if position is None:
        return None
    return _Decoded(out, position, damage, silenced)


def _add_span(spans: list[tuple[int, int]], start: int, stop: int) -> None:
    """Append [start, stop) to a list of silenced spans, merging it with a span it continues."""
    if spans and spans[-1][1] == start:
        spans[-1] = (spans[-1][0], stop)
    else:
        spans.append((start, stop))


def _open(path: Path):
    """av.open with its failures turned into a ValueError that says what to do."""
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except Exception as exc:  # PyAV raises FFmpegError subclasses, EOFError, and plain Python errors
        raise ValueError(f"decode_audio: '{path.name}' could not be opened as audio ({ffmpeg_reason(exc)}): "
                         "it is not a sound or video file, or it is damaged or truncated (an .m4a/.mp4 cut "
                         f"short loses its index); {_FIX}") from exc


def _pick_stream(container, stream_index, name):
    """The requested audio stream, or a ValueError naming what the file holds instead."""
    audio = list(container.streams.audio)
    if not container.streams:
        raise ValueError(f"decode_audio: FFmpeg finds no streams in '{name}': it is damaged or truncated (an "
                         f".m4a/.mp4 cut short loses its index) or not a media file; {_FIX}")
    if not audio:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        what = _NOT_SOUND.get(container.format.name, f"a '{container.format.name}' file")
        raise ValueError(f"decode_audio: '{name}' contains no audio stream (FFmpeg reads it as {what} with "
                         f"{', '.join(kinds)} streams); give a file with sound (wav, flac, mp3, m4a, ...) "
                         "or a video that has a soundtrack")
    if stream_index is None:
        stream_index = 0
    if isinstance(stream_index, bool) or not isinstance(stream_index, int) \
            or not 0 <= stream_index < len(audio):
        raise ValueError(f"decode_audio: '{name}' has {len(audio)} audio stream(s); stream_index must be "
                         f"0..{len(audio) - 1} or None, got {stream_index!r}")
    stream = audio[stream_index]
    if stream.codec_context.channels <= 0:
        raise ValueError(f"decode_audio: the audio stream of '{name}' has zero channels; the file header is "
                         f"damaged; {_FIX}")
    return stream


def _codec_name(stream) -> str:
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


def _stream_span(container, stream) -> tuple[float, float | None]:
    """(start time of the stream in seconds, declared duration in seconds or None)."""
    time_base = stream.time_base
    start = float(stream.start_time * time_base) if stream.start_time is not None and time_base else 0.0
    if stream.duration is not None and time_base:
        return start, float(stream.duration * time_base)
    tag = next((value for key, value in stream.metadata.items() if key.upper().startswith("DURATION")), "")
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d*)?)", tag.strip())
    if match:  # Matroska's per-track statistics tag, e.g. "00:03:12.480000000"
        hours, minutes, seconds = match.groups()
        return start, int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if len(container.streams) == 1 and container.duration is not None and container.duration > 0:
        return start, container.duration / 1_000_000  # the file's length is the stream's only if alone
    return start, None


def _riff_data_seconds(path: Path, fallback: float | None) -> float | None:
    """The length a WAV header declares (FFmpeg clamps it to the file size, hiding truncation)."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return fallback
    offset, block_align, rate = 12, 0, 0
    while offset + 8 <= len(head):
        tag, size = head[offset:offset + 4], struct.unpack("<I", head[offset + 4:offset + 8])[0]
        if tag == b"fmt " and offset + 24 <= len(head):
            rate, _, block_align = struct.unpack("<IIH", head[offset + 12:offset + 22])
        elif tag == b"data":
            unknown = size in (0, 0xFFFFFFFF) or block_align <= 0 or rate <= 0
            return fallback if unknown else size // block_align / rate
        offset += 8 + size + (size & 1)
    return fallback


def _ogg_ends_cleanly(path: Path) -> bool:
    """True when the last Ogg page is complete and carries the end-of-stream flag (a cut file ends
    mid-page, or after a page without the flag)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - (1 << 16)))
        tail = handle.read()
    page = tail.rfind(b"OggS\x00")
    if page < 0:
        return True  # no page header in the last 64 KiB: nothing to judge by
    if page + 27 > len(tail) or page + 27 + tail[page + 26] > len(tail):
        return False
    segments = tail[page + 27:page + 27 + tail[page + 26]]
    return bool(tail[page + 5] & 0x04) and page + 27 + len(segments) + sum(segments) <= len(tail)


def _mp3_states_length(path: Path) -> bool:
    """True when the first mp3 frame holds a Xing/Info/VBRI header (then FFmpeg's duration is exact)."""
    with open(path, "rb") as handle:
        head = handle.read(10)
        skip = 0
        if head[:3] == b"ID3" and len(head) == 10:  # ID3v2 tag: syncsafe size in bytes 6..9
            skip = 10 + sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(head[6:10]))
        handle.seek(skip)
        frame = handle.read(4096)
    sync = next((i for i in range(len(frame) - 1) if frame[i] == 0xFF and frame[i + 1] & 0xE0 == 0xE0), -1)
    return sync >= 0 and any(tag in frame[sync:sync + 200] for tag in (b"Xing", b"Info", b"VBRI"))


def _capacity(begin: int, end: int | None, declared: float | None, rate: int) -> int:
    """Samples to preallocate: the exact span when known, else the declared length plus codec slack."""
    if declared is not None:
        expected = round(declared * rate * 1.01) + 8192 - begin
        return max(1, expected if end is None else min(end - begin, expected))
    return max(1, end - begin if end is not None else 60 * rate)


def _grow(buffer: np.ndarray, written: int, needed: int, name: str) -> np.ndarray:
    capacity = max(needed, buffer.shape[1] + buffer.shape[1] // 2)
    logger.debug("decode_audio: '%s' is longer than its header says; growing the buffer to %d samples",
                 name, capacity)
    grown = np.empty((buffer.shape[0], capacity), dtype=np.float32)
    grown[:, :written] = buffer[:, :written]
    return grown


def _shrink(buffer: np.ndarray, length: int) -> np.ndarray:
    """(C, capacity) -> contiguous (C, length) in place: rows are moved down block by block (no full copy),
    then the allocation is shortened."""
    channels, capacity = buffer.shape
    if length == capacity:
        return buffer
    flat = buffer.reshape(-1)
    for channel in range(1, channels):
        for offset in range(0, length, _COPY_BLOCK):
            count = min(_COPY_BLOCK, length - offset)
            source = channel * capacity + offset
            target = channel * length + offset
            flat[target:target + count] = flat[source:source + count]
    del flat
    buffer.resize((channels * length,), refcheck=False)
    return buffer.reshape(channels, length)


def _usable(position: int, rate: int, start_seconds: float) -> str | None:
    """The decodable span after start_seconds, rounded down to 0.01 s, for the error messages (None if 0)."""
    seconds = math.floor((position / rate - start_seconds) * 100) / 100
    return f"{seconds:.2f}" if seconds > 0 else None


def _of(declared: float | None) -> str:
    return "" if declared is None else f" of {declared:.2f} s"
