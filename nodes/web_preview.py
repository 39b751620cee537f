"""Preview files for the pack's web extension (web/js): audio, video and sub-band images written to
ComfyUI's temp folder and announced in a node's ``ui`` payload, the way PreviewImage does it.

Payload keys (read by web/js/*.js; deliberately not ComfyUI's own "images"/"audio" keys, whose
built-in handlers would draw a second preview or expect widgets our nodes do not have):

- ``singer_audio``: ``[{filename, subfolder, type, label, sample_rate, channels, seconds}]``
- ``singer_video``: ``[{filename, subfolder, type, label, fps, frames, width, height, has_audio}]``
- ``singer_subbands``: ``[{filename, subfolder, type, item, width, height, cells: [{level, band, name,
  x, y, w, h}]}]`` (built by nodes/spectral.py with :func:`write_png_preview`)

A preview is a convenience: the ``*_ui`` functions log a warning and return ``{}`` when writing fails,
so a full disk or a missing codec never fails the node itself. The ``write_*`` functions raise.
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import numpy as np
import torch

from ..singer_core.io.image import to_uint8

logger = logging.getLogger(__name__)

AUDIO_KEY = "singer_audio"
VIDEO_KEY = "singer_video"
SUBBAND_KEY = "singer_subbands"
MAX_AUDIO_ITEMS = 4  # batch items of one AUDIO that get a preview file
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_AAC_RATES = (7350, 96000)  # sample rates AAC can store


def preview_directory() -> Path:
    """ComfyUI's temp folder (emptied by ComfyUI at start-up), where previews go."""
    import folder_paths

    return Path(folder_paths.get_temp_directory())


def _entry(path: Path, directory: Path, **extra) -> dict:
    subfolder = path.parent.relative_to(directory).as_posix()
    subfolder = "" if subfolder == "." else subfolder
    return {"filename": path.name, "subfolder": subfolder, "type": "temp", **extra}


def _new_path(directory: Path, prefix: str, suffix: str) -> Path:
    if not _PREFIX.match(prefix):
        raise ValueError(f"preview prefix {prefix!r} must be 1-64 letters, digits, '_' or '-'")
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{prefix}_{uuid.uuid4().hex[:12]}{suffix}"


def write_audio_preview(audio: dict, directory: str | Path, *, prefix: str = "singer_audio",
                        label: str = "audio") -> list[dict]:
    """Write each batch item of a ComfyUI AUDIO (at most MAX_AUDIO_ITEMS) as a 16-bit WAV.

    Args:
        audio: {"waveform": (B, C, T) float in [-1, 1], "sample_rate": int}.
        directory: the folder the files go to (ComfyUI's temp folder for the ``type: temp`` entries).
        prefix: file name prefix (letters, digits, '_', '-').
        label: shown by the player; batch items get " [i]" appended.

    Returns:
        one ``singer_audio`` entry per written file.
    """
    from ..singer_core.audio.io import audio_from_comfy, write_wav

    waveform, sample_rate = audio_from_comfy(audio, "write_audio_preview")
    directory = Path(directory)
    entries = []
    batch = waveform.shape[0]
    for index, item in enumerate(waveform[:MAX_AUDIO_ITEMS]):
        path = write_wav(_new_path(directory, prefix, ".wav"), item.detach().float().cpu(), sample_rate)
        entries.append(_entry(path, directory, label=label if batch == 1 else f"{label} [{index}]",
                              sample_rate=sample_rate, channels=int(item.shape[0]),
                              seconds=round(item.shape[-1] / sample_rate, 4)))
    return entries


def write_video_preview(frames: torch.Tensor, fps: float, directory: str | Path, *, audio: dict | None = None,
                        prefix: str = "singer_video", label: str = "video") -> dict:
    """Write frames (and the first item of an AUDIO) as a small H.264/AAC mp4 the browser can play.

    Args:
        frames: (T, H, W, 3) float in 0..1 (a ComfyUI IMAGE batch) or uint8.
        fps: frames per second.
        directory: the folder the file goes to.
        audio: optional {"waveform": (B, C, T), "sample_rate": int}; more than two channels are mixed down.
        prefix: file name prefix (letters, digits, '_', '-').
        label: shown above the player.

    Returns:
        the ``singer_video`` entry.
    """
    from ..singer_core.audio.io import audio_from_comfy, resample, to_mono
    from ..singer_core.io.video_write import write_video

    if not isinstance(frames, (torch.Tensor, np.ndarray)) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if hasattr(frames, "shape") else type(frames).__name__
        raise ValueError(f"write_video_preview: frames must be (T, H, W, 3), got {shape}")
    frames = to_uint8(frames)
    samples, rate = None, None
    if audio is not None:
        waveform, rate = audio_from_comfy(audio, "write_video_preview")
        samples = waveform[0].detach().float().cpu()
        if samples.shape[0] > 2:
            samples = to_mono(samples)
        target = min(max(rate, _AAC_RATES[0]), _AAC_RATES[1])
        if target != rate:
            samples, rate = resample(samples, rate, target), target
    directory = Path(directory)
    path = _new_path(directory, prefix, ".mp4")
    write_video(path, frames, float(fps), audio=samples, sample_rate=rate, crf=23, preset="veryfast",
                pad_odd=True)
    return _entry(path, directory, label=label, fps=float(fps), frames=int(frames.shape[0]),
                  width=int(frames.shape[2]), height=int(frames.shape[1]), has_audio=samples is not None)


def write_png_preview(image: np.ndarray, directory: str | Path, *, prefix: str = "singer_image",
                      **extra) -> dict:
    """Write an (H, W, 3) uint8 RGB image as PNG; ``extra`` keys are added to the returned entry."""
    from PIL import Image

    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[-1] != 3):
        raise ValueError(f"write_png_preview: expected an (H, W, 3) uint8 array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    directory = Path(directory)
    path = _new_path(directory, prefix, ".png")
    Image.fromarray(image).save(path, compress_level=1)
    return _entry(path, directory, width=int(image.shape[1]), height=int(image.shape[0]), **extra)


def audio_preview_ui(audio: dict | None, prefix: str = "singer_audio", *, label: str = "audio") -> dict:
    """``{"singer_audio": [...]}`` for a node's ``ui=`` (``{}`` without audio or when writing fails)."""
    if audio is None:
        return {}
    try:
        return {AUDIO_KEY: write_audio_preview(audio, preview_directory(), prefix=prefix, label=label)}
    except (OSError, ValueError, RuntimeError) as error:
        logger.warning("audio preview %s not written: %s", prefix, error)
        return {}


def video_preview_ui(frames: torch.Tensor, fps: float, audio: dict | None = None,
                     prefix: str = "singer_video", *, label: str = "video") -> dict:
    """``{"singer_video": [...]}`` for a node's ``ui=`` (``{}`` when writing fails)."""
    try:
        return {VIDEO_KEY: [write_video_preview(frames, fps, preview_directory(), audio=audio, prefix=prefix,
                                                label=label)]}
    except (OSError, ValueError, RuntimeError) as error:
        logger.warning("video preview %s not written: %s", prefix, error)
        return {}


def merge_ui(*parts) -> dict:
    """Join ``ui`` payloads (dicts, or ComfyUI UI outputs with ``as_dict()`` such as ui.PreviewText):
    lists under the same key are concatenated, other values are taken from the last part."""
    merged: dict = {}
    for part in parts:
        if part is None:
            continue
        values = part.as_dict() if hasattr(part, "as_dict") else part
        for key, value in values.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = merged[key] + value
            else:
                merged[key] = value
    return merged
