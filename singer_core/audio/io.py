"""Conversions between ComfyUI's AUDIO dict and plain tensors, with the input checks every
audio-consuming node shares. (Decoding/resampling arrive with the audio front-end issue.)"""

from __future__ import annotations

import logging
import math
import wave
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def audio_from_comfy(audio, who: str) -> tuple[torch.Tensor, int]:
    """Validate a ComfyUI AUDIO value.

    Args:
        audio: {"waveform": (B, C, T) float tensor, "sample_rate": int}.
        who: the caller's name, used in error messages.

    Returns:
        waveform (B, C, T) float32 and the sample rate.
    """
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(f"{who}: expected an AUDIO input (a dict with 'waveform' and 'sample_rate'); "
                         "connect it to a Load Audio node")
    waveform, sample_rate = audio["waveform"], audio["sample_rate"]
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"{who}: AUDIO waveform must be a (batch, channels, samples) tensor, got {shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"{who}: AUDIO sample_rate must be a positive integer, got {sample_rate!r}")
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"{who}: the audio has no channels or no batch items (shape {tuple(waveform.shape)})")
    if waveform.shape[-1] == 0:
        raise ValueError(f"{who}: the audio is empty (0 samples); load a file that contains sound")
    waveform = waveform.float()
    if not torch.isfinite(waveform).all():
        raise ValueError(f"{who}: the audio contains NaN or infinite samples; the file is corrupt")
    return waveform, sample_rate


def audio_to_comfy(waveform: torch.Tensor, sample_rate: int) -> dict:
    """(C, T) or (B, C, T) float tensor -> ComfyUI AUDIO dict."""
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim == 2:
        waveform = waveform[None]
    return {"waveform": waveform.float().cpu(), "sample_rate": int(sample_rate)}


def write_wav(path: str | Path, waveform: torch.Tensor, sample_rate: int) -> Path:
    """Write (T,) or (C, T) float audio in [-1, 1] as 16-bit PCM WAV (standard library only)."""
    path = Path(path)
    if waveform.ndim == 1:
        waveform = waveform[None]
    pcm = (waveform.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).T.contiguous()
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(waveform.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(int(sample_rate))
        handle.writeframes(pcm.numpy().tobytes())
    return path


def duration_seconds(waveform: torch.Tensor, sample_rate: int) -> float:
    return waveform.shape[-1] / float(sample_rate) if sample_rate > 0 else math.nan
