"""Writing video files through PyAV (FFmpeg): streaming H.264 (libx264, yuv420p) + AAC with atomic output
(a temporary name renamed into place, so an error or an interruption leaves no partial file).
Reading lives in ``video_read.py``."""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..progress import Progress
from .fs import raise_file_system_error, remove_quietly
from .image import to_uint8

logger = logging.getLogger(__name__)

_AUDIO_BLOCK = 1 << 15  # samples handed to the AAC encoder per frame


class VideoWriter:
    """Streaming H.264 (libx264, yuv420p) + AAC writer with atomic output.

    Frames and audio are appended in any order and muxed interleaved; the file is written under a
    temporary name next to ``path`` and renamed by close(), so an error, an interruption or abort()
    leaves no partial file. Use as a context manager (an exception inside the block aborts).

    Args:
        path: output file (.mp4, .mov or .mkv).
        fps: frames per second (> 0; fractional rates like 30000/1001 are kept as a fraction).
        sample_rate: Hz of the audio given to write_audio, or None for a silent video.
        audio_channels: channels of that audio (1 or 2).
        crf: x264 constant rate factor (0 = lossless luma/chroma after 4:2:0, 18 = visually lossless, 23 =
            x264's default).
        preset: x264 speed preset ("ultrafast" ... "veryslow").
        pad_odd: yuv420p needs even width and height; False raises on odd sizes, True pads the last
            column/row by repeating it (the file is then one pixel larger).
        audio_bit_rate: AAC bits per second.
        keyframe_interval: frames between key frames (None: x264's default of 250); smaller values make
            seeking faster and the file larger.
    """

    def __init__(self, path: str | Path, fps: float, *, sample_rate: int | None = None, audio_channels: int = 1,
                 crf: int = 18, preset: str = "medium", pad_odd: bool = False, audio_bit_rate: int = 160_000,
                 keyframe_interval: int | None = None):
        path = Path(path)
        if path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise ValueError(f"VideoWriter: cannot write H.264 to '{path.name}'; use .mp4, .mov or .mkv")
        if not path.parent.is_dir():
            raise ValueError(f"VideoWriter: the folder '{path.parent}' does not exist; create it first")
        if isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"VideoWriter: fps must be a positive number, got {fps!r}")
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"VideoWriter: crf must be 0..51 (18 is visually lossless), got {crf!r}")
        if sample_rate is not None and (int(sample_rate) != sample_rate or sample_rate <= 0):
            raise ValueError(f"VideoWriter: sample_rate must be a positive integer or None, got {sample_rate!r}")
        if audio_channels not in (1, 2):
            raise ValueError(f"VideoWriter: audio_channels must be 1 or 2, got {audio_channels!r}")
        try:
            import av
        except ImportError as exc:
            raise RuntimeError("VideoWriter needs PyAV: pip install av") from exc
        rates = av.codec.Codec("aac", "w").audio_rates or ()
        if sample_rate is not None and rates and int(sample_rate) not in rates:
            raise ValueError(f"VideoWriter: AAC cannot store {sample_rate} Hz; resample the audio to one of "
                             f"{', '.join(str(r) for r in sorted(rates))} Hz first")
        if keyframe_interval is not None and (int(keyframe_interval) != keyframe_interval or keyframe_interval < 1):
            raise ValueError(f"VideoWriter: keyframe_interval must be a positive integer or None, got {keyframe_interval!r}")
        self.path, self.crf, self.preset, self.pad_odd = path, int(crf), preset, pad_odd
        self.keyframe_interval = keyframe_interval
        self.rate = Fraction(fps).limit_denominator(1001 * 1000)
        self.sample_rate, self.audio_channels, self.audio_bit_rate = sample_rate, audio_channels, audio_bit_rate
        self.frames_written, self.samples_written = 0, 0
        self._temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}-{id(self)}{path.suffix}")
        self._container = self._video = self._audio = None
        self._size: tuple[int, int] | None = None  # (H, W) encoded
        self._input_size: tuple[int, int] | None = None  # (H, W) of the frames given
        self._finishing = False  # close() is flushing: all buffered audio goes out
        self._pending_audio: list[np.ndarray] = []
        self._closed = False  # closed or aborted

    def write(self, frames) -> None:
        """Append frames: (H, W, 3) or (T, H, W, 3), uint8 (or float in 0..1), numpy array or tensor, RGB."""
        self._check_open()
        frames = _as_uint8_frames(frames, "VideoWriter.write")
        import av

        for image in frames:
            if self._container is None:
                self._start(image.shape[0], image.shape[1])
            if image.shape[:2] != self._input_size:
                raise ValueError(f"VideoWriter: frame {self.frames_written} is {image.shape[1]}x"
                                 f"{image.shape[0]}, the first was {self._input_size[1]}x"
                                 f"{self._input_size[0]}; all frames must have the same size")
            height, width = self._size
            if image.shape[:2] != (height, width):
                image = np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0)),
                               mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = 1 / self.rate
            try:
                for packet in self._video.encode(frame):
                    self._container.mux(packet)
            except OSError as error:  # a full disk while muxing
                self.abort()
                raise_file_system_error(error, self.path, who="VideoWriter")
                raise
            self.frames_written += 1
            self._flush_pending_audio()

    def write_audio(self, samples) -> None:
        """Append audio: (C, n) or (n,) float in [-1, 1] at the writer's sample_rate, numpy array or tensor."""
        self._check_open()
        if self.sample_rate is None:
            raise ValueError("VideoWriter: this writer has no audio track; pass sample_rate= when creating it")
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().float().numpy()
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[None]
        if samples.ndim != 2 or samples.shape[0] != self.audio_channels:
            raise ValueError(f"VideoWriter.write_audio: expected ({self.audio_channels}, samples) audio, got "
                             f"shape {samples.shape}")
        if not np.isfinite(samples).all():
            raise ValueError("VideoWriter.write_audio: the audio contains NaN or infinite samples")
        self._pending_audio.append(np.clip(samples, -1.0, 1.0))
        if self._container is not None:
            self._flush_pending_audio()

    def close(self) -> Path:
        """Flush the encoders, finish the file and rename it into place; returns the path."""
        if self._closed:
            return self.path
        try:
            if self._container is None:
                raise ValueError(f"VideoWriter: no frames were written to '{self.path.name}'; a video needs "
                                 "at least one frame")
            self._finishing = True
            self._flush_pending_audio()
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                for packet in self._audio.encode(None):
                    self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._temporary, self.path)
        except BaseException as error:
            self.abort()
            raise_file_system_error(error, self.path, who="VideoWriter")
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop without producing a file (the temporary file is removed)."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is thrown away anyway
                pass
            self._container = None
        remove_quietly(self._temporary)  # never masks the error that made us abort (e.g. EROFS)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _check_open(self):
        if self._closed:
            raise ValueError(f"VideoWriter: '{self.path.name}' is already closed")

    def _start(self, height: int, width: int):
        import av

        if height < 2 or width < 2:
            raise ValueError(f"VideoWriter: frames must be at least 2x2 pixels, got {width}x{height}")
        if (height % 2 or width % 2) and not self.pad_odd:
            raise ValueError(f"VideoWriter: H.264 yuv420p needs even width and height, the frames are "
                             f"{width}x{height}; crop or resize them to {width - width % 2}x"
                             f"{height - height % 2}, or pass pad_odd=True to repeat the last column/row")
        self._input_size = (height, width)
        height, width = height + height % 2, width + width % 2
        self._size = (height, width)
        try:
            self._container = av.open(str(self._temporary), "w")
            self._video = self._container.add_stream("libx264", rate=self.rate)
            self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
            self._video.time_base = 1 / self.rate
            self._video.options = {"crf": str(self.crf), "preset": self.preset}
            if self.keyframe_interval is not None:
                self._video.codec_context.gop_size = int(self.keyframe_interval)
            if self.sample_rate is not None:
                layout = "mono" if self.audio_channels == 1 else "stereo"
                self._audio = self._container.add_stream("aac", rate=int(self.sample_rate), layout=layout)
                self._audio.bit_rate = int(self.audio_bit_rate)
        except BaseException as error:
            self.abort()
            raise_file_system_error(error, self.path, who="VideoWriter")
            raise

    def _flush_pending_audio(self):
        """Encode buffered audio up to the end of the frames written so far (keeps the mux interleaved)."""
        if self._audio is None or not self._pending_audio:
            return
        import av

        limit = math.inf if self._finishing else round(self.frames_written / self.rate * self.sample_rate)
        while self._pending_audio and self.samples_written < limit:
            block = self._pending_audio[0]
            take = int(min(block.shape[1], _AUDIO_BLOCK, limit - self.samples_written))
            if take <= 0:
                break
            chunk, rest = block[:, :take], block[:, take:]
            if rest.shape[1]:
                self._pending_audio[0] = rest
            else:
                self._pending_audio.pop(0)
            layout = "mono" if self.audio_channels == 1 else "stereo"
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
            frame.sample_rate = int(self.sample_rate)
            frame.pts, frame.time_base = self.samples_written, Fraction(1, int(self.sample_rate))
            for packet in self._audio.encode(frame):
                self._container.mux(packet)
            self.samples_written += take


def write_video(path: str | Path, frames, fps: float, *, audio=None, sample_rate: int | None = None,
                crf: int = 18, preset: str = "medium", pad_odd: bool = False, keyframe_interval: int | None = None,
                progress: Progress | None = None) -> Path:
    """Write frames (and audio) as an H.264 yuv420p + AAC video, atomically.

    Args:
        path: output file (.mp4, .mov or .mkv).
        frames: (T, H, W, 3) RGB, uint8 (or float in 0..1), numpy array or torch tensor; T >= 1.
        fps: frames per second.
        audio: (C, S) or (S,) float in [-1, 1] (C = 1 or 2), or None for a silent video.
        sample_rate: Hz of `audio` (required with audio; AAC stores 7350 .. 96000 Hz).
        crf: x264 constant rate factor (18: visually lossless).
        preset: x264 preset.
        pad_odd: pad odd sizes by one repeated pixel instead of raising (see VideoWriter).
        keyframe_interval: frames between key frames (None: x264's default, 250).
        progress: optional callback(done_frames, total_frames); may raise to stop (no file is left).

    Returns:
        the written path.
    """
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"write_video: frames must be (T, H, W, 3), got shape {tuple(frames.shape)}")
    frames_array = frames
    if getattr(frames_array, "ndim", 0) != 4 or frames_array.shape[-1] != 3:
        raise ValueError(f"write_video: frames must be (T, H, W, 3) RGB, got shape "
                         f"{tuple(getattr(frames_array, 'shape', ()))}")
    total = int(frames_array.shape[0])
    if total == 0:
        raise ValueError("write_video: no frames (T = 0); a video needs at least one frame")
    channels = 1
    if audio is not None:
        if sample_rate is None:
            raise ValueError("write_video: audio was given without sample_rate; pass sample_rate=")
        channels = 1 if audio.ndim == 1 else int(audio.shape[0])
        if audio.ndim not in (1, 2) or channels not in (1, 2) or audio.shape[-1] == 0:
            raise ValueError(f"write_video: audio must be non-empty (C, S) with C = 1 or 2, got shape "
                             f"{tuple(audio.shape)}; downmix multichannel audio first")
    with VideoWriter(path, fps, sample_rate=sample_rate if audio is not None else None,
                     audio_channels=channels, crf=crf, preset=preset, pad_odd=pad_odd,
                     keyframe_interval=keyframe_interval) as writer:
        if audio is not None:
            writer.write_audio(audio)
        for index in range(total):
            writer.write(frames_array[index])
            if progress is not None:
                progress(index + 1, total)
    return writer.path


def _as_uint8_frames(frames, who: str) -> np.ndarray:
    """(H, W, 3) or (T, H, W, 3) uint8 / float 0..1, numpy or torch -> (T, H, W, 3) uint8 numpy."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.numpy() if frames.dtype == torch.uint8 else frames.float().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{who}: frames must be (H, W, 3) or (T, H, W, 3) RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8 and not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"{who}: frames must be uint8 (0..255) or float (0..1), got {frames.dtype}")
    if frames.dtype != np.uint8 and not np.isfinite(frames).all():
        raise ValueError(f"{who}: the frames contain NaN or infinite values; the node or model that made them "
                         "overflowed: run it in float32, or clamp the frames to 0..1 with nan_to_num first")
    return to_uint8(frames)  # uint8 as is; float 0..1 rounded
