"""singer_core.audio.encode against independent references: samples on the 16-bit grid that must come back
bit-exactly through every lossless codec, analytic sines (correlation and spectral peak) through every lossy
one, and the folder it writes into (no partial file after an error or an interruption)."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch

from singer_core.audio.decode import decode_audio
from singer_core.audio.encode import write_audio
from tests.media_patterns import RATE, check_lossy, pcm16_grid, sines

# ----------------------------------------------------------------------------- lossless and lossy codecs


LOSSLESS = [("wav", "pcm_s16le"), ("wav", "pcm_s24le"), ("wav", "pcm_f32le"), ("flac", None), ("m4a", "alac"),
            ("ogg", "flac")]
LOSSY = [("mp3", None), ("ogg", None), ("opus", None), ("ogg", "opus"), ("m4a", None)]


@pytest.mark.parametrize("ext,codec", LOSSLESS)
def test_lossless_round_trip_is_bit_exact(tmp_path, ext, codec):
    waveform, pcm = pcm16_grid(sines(RATE, 0.5))
    path = write_audio(tmp_path / f"song.{ext}", waveform, RATE, codec=codec)
    decoded = decode_audio(path)
    assert (decoded.sample_rate, decoded.channels, decoded.seconds) == (RATE, 2, 0.5)
    assert decoded.waveform.dtype == torch.float32 and decoded.waveform.is_contiguous()
    np.testing.assert_array_equal((decoded.waveform.numpy() * 32768).astype(np.int32), pcm)


# PyAV 18's wheels ship FFmpeg without libvorbis: .ogg is then written as Opus
OGG_DEFAULT = "vorbis" if "libvorbis" in av.codecs_available else "opus"


@pytest.mark.parametrize("ext,codec", LOSSY)
def test_lossy_round_trip_matches_the_sines(tmp_path, ext, codec):
    waveform = torch.from_numpy(sines(RATE, 1.0)).float()
    decoded = decode_audio(write_audio(tmp_path / f"song.{ext}", waveform, RATE, codec=codec))
    written = codec or {"ogg": OGG_DEFAULT, "m4a": "aac"}.get(ext, ext)
    expected_rate = 48000 if written == "opus" else RATE  # Opus stores 48 kHz only
    assert decoded.sample_rate == expected_rate and decoded.channels == 2
    assert decoded.codec == written
    assert abs(decoded.seconds - 1.0) < 0.03  # codec padding must be trimmed
    check_lossy(decoded, decoded.seconds)


# ----------------------------------------------------------------------------- missing encoders


@pytest.mark.skipif("libvorbis" in av.codecs_available, reason="this PyAV build has libvorbis")
def test_a_missing_encoder_is_named_with_what_this_build_can_write(tmp_path):
    with pytest.raises(ValueError, match=r"has no vorbis encoder \(libvorbis\).*codec='opus' or 'flac'"):
        write_audio(tmp_path / "song.ogg", torch.zeros(2, 100), RATE, codec="vorbis")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- writing


def test_write_audio_is_atomic_and_checks_its_arguments(tmp_path):
    waveform = torch.from_numpy(sines(RATE, 3.0)).float()

    def stop(done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_audio(tmp_path / "song.flac", waveform, RATE, progress=stop)
    assert list(tmp_path.iterdir()) == []
    for kwargs, words in (
        ({"path": tmp_path / "song.xyz"}, "extension"),
        ({"path": tmp_path / "song.wav", "codec": "mp3"}, "cannot be written to a .wav"),
        ({"path": tmp_path / "song.mp3", "waveform": torch.zeros(3, 100)}, "at most 2 channels"),
        ({"path": tmp_path / "missing" / "song.wav"}, "does not exist"),
        ({"path": tmp_path / "song.wav", "waveform": torch.full((1, 10), math.nan)}, "NaN"),
        ({"path": tmp_path / "song.wav", "waveform": torch.zeros(2, 0)}, "non-empty"),
        ({"path": tmp_path / "song.wav", "sample_rate": 0}, "sample_rate"),
    ):
        arguments = {"path": tmp_path / "x.wav", "waveform": waveform, "sample_rate": RATE} | kwargs
        with pytest.raises(ValueError, match=words):
            write_audio(arguments.pop("path"), arguments.pop("waveform"), arguments.pop("sample_rate"),
                        **arguments)
    assert list(tmp_path.iterdir()) == []
    # six channels survive flac; clipping is saturation at the 16-bit limits
    loud = torch.linspace(-2, 2, 600).reshape(6, 100)
    decoded = decode_audio(write_audio(tmp_path / "six.flac", loud, 8000))
    assert decoded.channels == 6 and decoded.layout == "5.1"
    np.testing.assert_array_equal(decoded.waveform.numpy(), np.clip(np.rint(loud.numpy() * 32768), -32768,
                                                                       32767) / 32768)
