"""WAV files of dataset clips: the header read and checked (rate, channels, bit depth), spans read by offset.

Reads 8-bit unsigned, 16/24/32-bit signed PCM and 32/64-bit float WAV (``WAVE_FORMAT_PCM``, ``IEEE_FLOAT`` and
``EXTENSIBLE`` with either sub-format) without the standard ``wave`` module, which refuses float and 24-bit
extensible files with a bare ``wave.Error``. Anything else is a ValueError naming the file and the conversion
that fixes it. Only the requested span is read (its byte offset follows from the header), so memory stays at
the window whatever the file's length.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
FIX = "convert it, e.g. `ffmpeg -i IN.wav -ar 16000 -ac 1 -c:a pcm_s16le OUT.wav`"


@dataclasses.dataclass(frozen=True)
class WavInfo:
    """What the header of a WAV file says.

    sample_rate: Hz. channels: interleaved channels. bits: bits per sample (8, 16, 24, 32 or 64).
    kind: "pcm" (integer) or "float". frames: samples per channel. data_offset: byte offset of the samples.
    """

    sample_rate: int
    channels: int
    bits: int
    kind: str
    frames: int
    data_offset: int

    @property
    def description(self) -> str:
        return f"{self.bits}-bit {'float' if self.kind == 'float' else 'PCM'}, {self.channels} ch, {self.sample_rate} Hz"


def wav_info(path: str | os.PathLike, who: str) -> WavInfo:
    """Parse the RIFF header of `path`; a ValueError naming `who`, the file, the problem and the fix otherwise."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise ValueError(f"{who}: '{path}' is not a WAV file (it starts with {head[:4]!r}); {FIX}")
        fmt = None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                break
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = handle.read(length)
                if length % 2:
                    handle.seek(1, 1)
            elif name == b"data":
                if fmt is None:
                    break
                offset = handle.tell()
                if head[:4] == b"RF64" or length == 0xFFFFFFFF or offset + length > size:
                    length = size - offset  # streamed / RF64 / cut short: the samples there are
                return _parse_fmt(fmt, offset, length, path, who)
            else:
                handle.seek(length + length % 2, 1)
    raise ValueError(f"{who}: '{path}' has no {'fmt ' if fmt is None else 'data'} chunk: the WAV file is "
                     f"damaged or cut short; re-create it or {FIX}")


def _parse_fmt(fmt: bytes, offset: int, length: int, path: Path, who: str) -> WavInfo:
    if len(fmt) < 16:
        raise ValueError(f"{who}: '{path}' has a damaged format chunk; {FIX}")
    tag, channels, rate, _byte_rate, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID starts with the plain tag
    kind = {_PCM: "pcm", _FLOAT: "float"}.get(tag)
    if kind is None:
        raise ValueError(f"{who}: '{path}' is compressed WAV (format tag 0x{tag:04x}), not PCM or float; {FIX}")
    if (kind == "pcm" and bits not in (8, 16, 24, 32)) or (kind == "float" and bits not in (32, 64)):
        raise ValueError(f"{who}: '{path}' has {bits}-bit {kind} samples, which are not read here (8/16/24/32-bit "
                         f"PCM or 32/64-bit float are); {FIX}")
    if channels < 1 or rate < 1 or align != channels * bits // 8:
        raise ValueError(f"{who}: '{path}' has a damaged header ({channels} channels, {rate} Hz, block {align}); "
                         f"re-create it or {FIX}")
    return WavInfo(sample_rate=rate, channels=channels, bits=bits, kind=kind, frames=length // align,
                   data_offset=offset)


def read_wav_span(path: str | os.PathLike, info: WavInfo, start: int, count: int) -> np.ndarray:
    """Samples start .. start+count-1 of every channel -> (C, count) float32 in [-1, 1]; zeros past the end."""
    out = np.zeros((info.channels, count), dtype=np.float32)
    take = max(0, min(count, info.frames - start))
    if take == 0:
        return out
    width = info.bits // 8
    with open(path, "rb") as handle:
        handle.seek(info.data_offset + start * width * info.channels)
        raw = handle.read(take * width * info.channels)
    take = len(raw) // (width * info.channels)
    raw = raw[: take * width * info.channels]
    if info.kind == "float":
        samples = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
    elif width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
        samples = (np.where(value >= 1 << 23, value - (1 << 24), value) / float(1 << 23)).astype(np.float32)
    else:
        dtype, scale = ("<i2", 32768.0) if width == 2 else ("<i4", 2147483648.0)
        samples = (np.frombuffer(raw, dtype=dtype) / scale).astype(np.float32)
    out[:, :take] = samples.reshape(take, info.channels).T
    return out
