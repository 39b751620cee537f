"""singer_core.audio.io / decode against independent references: int16 samples written by the standard
library, analytic sines at the decoded rate, the coefficient tables and closed forms of ITU-R BS.1770-4,
EBU Tech 3341 test signal 1, and a float64 loop implementation of BS.1770-4 gating."""

from __future__ import annotations

import cmath
import logging
import math
import re
import struct
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from singer_core.audio import decode as decode_module
from singer_core.audio.io import (
    DecodedAudio,
    audio_from_comfy,
    check_audio,
    comfy_items,
    decode_audio,
    integrated_loudness,
    k_weighting_coefficients,
    normalize_loudness,
    normalize_peak,
    pad,
    resample,
    to_mono,
    trim,
    trim_silence,
    write_audio,
    write_wav,
)

RATE = 44100
FREQS = (440.0, 1000.0)  # left, right: a swapped channel order moves the spectral peaks
AMPS = (0.5, 0.4)

# ITU-R BS.1770-4, Annex 1, Tables 1 and 2: K-weighting coefficients at 48 kHz.
BS1770_SHELF = ([1.53512485958697, -2.69169618940638, 1.19839281085285],
                [1.0, -1.69065929318241, 0.73248077421585])
BS1770_HIGHPASS = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])


def _sines(rate: int, seconds: float, freqs=FREQS, amps=AMPS, phase: float = 0.0) -> np.ndarray:
    """(C, T) float64 analytic sines, sample n at time n / rate."""
    n = np.arange(round(seconds * rate))
    return np.stack([a * np.sin(2 * np.pi * f * n / rate + phase) for f, a in zip(freqs, amps, strict=True)])


def _grid(x: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Round to the 16-bit grid: (float32 tensor exactly on it, int16 reference)."""
    pcm = np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)
    return torch.from_numpy(pcm.astype(np.float32) / 32768), pcm


def _peak_hz(channel: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(channel * np.hanning(channel.size)))
    return float(np.fft.rfftfreq(channel.size, 1 / rate)[spectrum.argmax()])


def _check_lossy(decoded, seconds: float, min_corr: float = 0.99):
    """Rate-independent: compare each channel with the analytic sine at the decoded rate, away from edges."""
    ref = _sines(decoded.sample_rate, seconds)
    got = decoded.waveform.double().numpy()
    assert got.shape == ref.shape, (got.shape, ref.shape)
    edge = decoded.sample_rate // 20
    for channel, freq in enumerate(FREQS):
        a, b = got[channel, edge:-edge], ref[channel, edge:-edge]
        assert np.corrcoef(a, b)[0, 1] > min_corr
        assert abs(_peak_hz(a, decoded.sample_rate) - freq) < 2 * decoded.sample_rate / a.size


# ----------------------------------------------------------------------------- containers and codecs

LOSSLESS = [("wav", "pcm_s16le"), ("wav", "pcm_s24le"), ("wav", "pcm_f32le"), ("flac", None), ("m4a", "alac"),
            ("ogg", "flac")]
LOSSY = [("mp3", None), ("ogg", None), ("opus", None), ("ogg", "opus"), ("m4a", None)]


@pytest.mark.parametrize("ext,codec", LOSSLESS)
def test_lossless_round_trip_is_bit_exact(tmp_path, ext, codec):
    waveform, pcm = _grid(_sines(RATE, 0.5))
    path = write_audio(tmp_path / f"song.{ext}", waveform, RATE, codec=codec)
    decoded = decode_audio(path)
    assert (decoded.sample_rate, decoded.channels, decoded.seconds) == (RATE, 2, 0.5)
    assert decoded.waveform.dtype == torch.float32 and decoded.waveform.is_contiguous()
    np.testing.assert_array_equal((decoded.waveform.numpy() * 32768).astype(np.int32), pcm)


def test_decodes_wav_written_by_the_standard_library(tmp_path):
    path = write_wav(tmp_path / "stdlib.wav", torch.from_numpy(_sines(RATE, 0.3)).float(), RATE)
    with wave.open(str(path)) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").reshape(-1, 2).T
    decoded = decode_audio(path)
    assert decoded.codec == "pcm_s16le" and decoded.container == "wav"
    np.testing.assert_array_equal(decoded.waveform.numpy() * 32768, pcm)


# PyAV 18's wheels ship FFmpeg without libvorbis: .ogg is then written as Opus
OGG_DEFAULT = "vorbis" if "libvorbis" in av.codecs_available else "opus"


@pytest.mark.parametrize("ext,codec", LOSSY)
def test_lossy_round_trip_matches_the_sines(tmp_path, ext, codec):
    waveform = torch.from_numpy(_sines(RATE, 1.0)).float()
    decoded = decode_audio(write_audio(tmp_path / f"song.{ext}", waveform, RATE, codec=codec))
    written = codec or {"ogg": OGG_DEFAULT, "m4a": "aac"}.get(ext, ext)
    expected_rate = 48000 if written == "opus" else RATE  # Opus stores 48 kHz only
    assert decoded.sample_rate == expected_rate and decoded.channels == 2
    assert decoded.codec == written
    assert abs(decoded.seconds - 1.0) < 0.03  # codec padding must be trimmed
    _check_lossy(decoded, decoded.seconds)


def _write_av(path, audio_codec: str, audio: np.ndarray, rate: int, video: bool = True,
              extra_audio: np.ndarray | None = None, video_seconds: float | None = None):
    """A container with a tiny video stream and audio tracks, written with PyAV directly (not write_audio)."""
    with av.open(str(path), "w") as container:
        vstream = None
        if video:
            vstream = container.add_stream("mpeg4", rate=25)
            vstream.width = vstream.height = 32
            vstream.pix_fmt = "yuv420p"
        tracks = [audio] + ([extra_audio] if extra_audio is not None else [])
        streams = [container.add_stream(audio_codec, rate=rate, layout="stereo") for _ in tracks]
        fmt = "fltp" if audio_codec == "aac" else "s16"
        for stream, samples in zip(streams, tracks, strict=True):
            for offset in range(0, samples.shape[1], 4096):
                chunk = samples[:, offset:offset + 4096]
                data = chunk.astype(np.float32) if fmt == "fltp" else \
                    np.rint(chunk.T * 32768).astype(np.int16).reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = rate, offset, Fraction(1, rate)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        if vstream is not None:
            for index in range(round((video_seconds or audio.shape[1] / rate) * 25)):
                image = np.full((32, 32, 3), index * 8 % 256, dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                for packet in vstream.encode(frame):
                    container.mux(packet)
            for packet in vstream.encode(None):
                container.mux(packet)
    return path


@pytest.mark.parametrize("ext,codec", [("mp4", "aac"), ("mov", "pcm_s16le"), ("mkv", "flac")])
def test_audio_track_of_a_video_file(tmp_path, ext, codec):
    waveform, pcm = _grid(_sines(RATE, 1.0))
    # the video runs 0.5 s longer than the sound: that is not a truncated soundtrack
    path = _write_av(tmp_path / f"clip.{ext}", codec, waveform.double().numpy(), RATE, video_seconds=1.5)
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and container.duration > 1_400_000
    decoded = decode_audio(path)
    assert (decoded.sample_rate, decoded.channels, decoded.codec) == (RATE, 2, codec)
    if codec == "aac":
        assert abs(decoded.seconds - 1.0) < 0.03
        _check_lossy(decoded, decoded.seconds)
    else:
        np.testing.assert_array_equal(decoded.waveform.numpy() * 32768, pcm)


def test_stream_index_picks_the_audio_track(tmp_path):
    first, _ = _grid(_sines(RATE, 0.5))
    second, pcm2 = _grid(_sines(RATE, 0.5, freqs=(300.0, 700.0), amps=(0.2, 0.3)))
    path = _write_av(tmp_path / "two.mkv", "flac", first.double().numpy(), RATE, video=False,
                     extra_audio=second.double().numpy())
    np.testing.assert_array_equal(decode_audio(path, stream_index=1).waveform.numpy() * 32768, pcm2)
    with pytest.raises(ValueError, match=r"has 2 audio stream\(s\); stream_index must be 0..1"):
        decode_audio(path, stream_index=2)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_odd_sample_rates(tmp_path, rate):
    waveform, pcm = _grid(_sines(rate, 0.25, freqs=(440.0, 1000.0)))
    decoded = decode_audio(write_audio(tmp_path / "x.flac", waveform, rate))
    assert decoded.sample_rate == rate
    np.testing.assert_array_equal(decoded.waveform.numpy() * 32768, pcm)
    lossy = decode_audio(write_audio(tmp_path / "x.mp3", waveform, rate))
    assert lossy.sample_rate == min(rate, 48000)  # mp3 stores at most 48 kHz; FFmpeg converts
    if rate >= 16000:  # at 8/11 kHz LAME's low-pass and short files leave too little to correlate
        _check_lossy(lossy, lossy.seconds, min_corr=0.98)


# ----------------------------------------------------------------------------- seeking


SEEK_CASES = [("wav", None, True), ("flac", None, True), ("m4a", "alac", True), ("ogg", None, False),
              ("opus", None, False), ("m4a", None, False), ("mp3", None, False), ("mkv", "flac", True)]


@pytest.mark.skipif("libvorbis" in av.codecs_available, reason="this PyAV build has libvorbis")
def test_a_missing_encoder_is_named_with_what_this_build_can_write(tmp_path):
    with pytest.raises(ValueError, match=r"has no vorbis encoder \(libvorbis\).*codec='opus' or 'flac'"):
        write_audio(tmp_path / "song.ogg", torch.zeros(2, 100), RATE, codec="vorbis")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext,codec,lossless", SEEK_CASES)
def test_start_and_duration_decode_the_right_span(tmp_path, ext, codec, lossless):
    waveform, _ = _grid(_sines(RATE, 1.5))
    if ext == "mkv":
        path = _write_av(tmp_path / "x.mkv", codec, waveform.double().numpy(), RATE, video=False)
    else:
        path = write_audio(tmp_path / f"x.{ext}", waveform, RATE, codec=codec)
    full = decode_audio(path)
    part = decode_audio(path, start_seconds=0.6, duration_seconds=0.5)
    rate = full.sample_rate
    begin, count = round(0.6 * rate), round(0.5 * rate)
    assert part.sample_rate == rate and part.waveform.shape == (2, count)
    assert part.start_seconds == begin / rate
    if lossless:
        torch.testing.assert_close(part.waveform, full.waveform[:, begin:begin + count], rtol=0, atol=0)
    else:  # the decoder restarts after the seek: same span, slightly different rounding
        reference = _sines(rate, 1.5)[:, begin:begin + count]
        for channel in range(2):
            assert np.corrcoef(part.waveform[channel].double().numpy(), reference[channel])[0, 1] > 0.99
    with pytest.raises(ValueError, match="past the end"):
        decode_audio(path, start_seconds=5.0)


def test_duration_past_the_end_returns_the_whole_rest(tmp_path):
    waveform, pcm = _grid(_sines(RATE, 0.5))
    decoded = decode_audio(write_audio(tmp_path / "x.flac", waveform, RATE), start_seconds=0.25,
                           duration_seconds=10.0)
    np.testing.assert_array_equal(decoded.waveform.numpy() * 32768, pcm[:, round(0.25 * RATE):])


# ----------------------------------------------------------------------------- bad input


def _wav_header(channels: int, rate: int, bits: int, data_bytes: int, fmt: int = 1) -> bytes:
    align = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, fmt, channels, rate, rate * align, align, bits)
            + b"data" + struct.pack("<I", data_bytes))


def test_missing_folder_empty_and_non_audio_files(tmp_path):
    from PIL import Image

    with pytest.raises(ValueError, match="does not exist"):
        decode_audio(tmp_path / "nope.wav")
    with pytest.raises(ValueError, match="is a folder"):
        decode_audio(tmp_path)
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        decode_audio(tmp_path / "empty.mp3")
    Image.new("RGB", (8, 8)).save(tmp_path / "face.png")
    with pytest.raises(ValueError, match="no audio stream.*PNG image"):
        decode_audio(tmp_path / "face.png")
    (tmp_path / "notes.txt").write_text("not a song\n" * 50)
    with pytest.raises(ValueError, match="no audio stream.*text file"):
        decode_audio(tmp_path / "notes.txt")
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    with pytest.raises(ValueError, match="could not be opened as audio.*not a sound or video file"):
        decode_audio(tmp_path / "noise.wav")
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    with pytest.raises(ValueError, match="no audio stream.*binary data"):
        decode_audio(tmp_path / "noise.bin")


def test_video_without_audio(tmp_path):
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(ValueError, match="no audio stream.*video.*soundtrack"):
        decode_audio(path)


def test_zero_channels_zero_samples_and_nan(tmp_path):
    (tmp_path / "zero_ch.wav").write_bytes(_wav_header(0, 44100, 16, 1000) + bytes(1000))
    with pytest.raises(ValueError, match="zero channels"):
        decode_audio(tmp_path / "zero_ch.wav")
    (tmp_path / "zero_len.wav").write_bytes(_wav_header(2, 44100, 16, 0))
    with pytest.raises(ValueError, match="no audio samples"):
        decode_audio(tmp_path / "zero_len.wav")
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        data = np.full((441, 2), value, np.float32).tobytes()
        (tmp_path / f"{name}.wav").write_bytes(_wav_header(2, 44100, 32, len(data), fmt=3) + data)
        with pytest.raises(ValueError, match="882 NaN or infinite samples"):
            decode_audio(tmp_path / f"{name}.wav")


def _suggested(message: str) -> float:
    return float(re.search(r"duration_seconds <= ([0-9.]+)", message).group(1))


@pytest.mark.parametrize("ext,codec,cut", [("wav", None, 0.6), ("flac", None, 0.6), ("ogg", None, 0.97),
                                           ("opus", None, 0.7), ("mp3", None, 0.6), ("mkv", "flac", 0.7)])
def test_truncated_file_is_an_error_that_names_the_good_part(tmp_path, ext, codec, cut):
    """Never a silently shorter song: the error says how much decodes, and asking for that much works."""
    waveform, _ = _grid(_sines(RATE, 2.0))
    path = tmp_path / f"song.{ext}"
    if ext == "mkv":
        _write_av(path, codec, waveform.double().numpy(), RATE, video=False)
    else:
        write_audio(path, waveform, RATE, codec=codec)
    full = decode_audio(path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ValueError, match="truncated|damaged") as caught:
        decode_audio(path)
    assert "song." + ext in str(caught.value)
    usable = _suggested(str(caught.value))
    assert 0.0 < usable < 2.0
    part = decode_audio(path, duration_seconds=usable)
    count = part.waveform.shape[1]
    assert abs(count - usable * part.sample_rate) <= 1
    tolerance = 0.02 if ext in ("ogg", "opus", "mp3") else 0.0
    torch.testing.assert_close(part.waveform, full.waveform[:, :count], atol=tolerance, rtol=0)


def test_mp4_without_its_index_and_damage_in_the_middle(tmp_path):
    waveform, _ = _grid(_sines(RATE, 2.0))
    path = write_audio(tmp_path / "song.m4a", waveform, RATE)  # the index (moov) is written last
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="damaged or truncated"):
        decode_audio(path)
    path = write_audio(tmp_path / "song.flac", waveform, RATE)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = np.random.default_rng(1).integers(0, 256, 2000, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged: decoding failed at \d\.\d\d s of 2\.00 s"):
        decode_audio(path)


@pytest.mark.parametrize("ext", ["flac", "m4a"])
def test_on_damage_silence_keeps_length_and_timing(tmp_path, ext, caplog):
    waveform, _ = _grid(_sines(RATE, 2.0))
    path = write_audio(tmp_path / f"song.{ext}", waveform, RATE)
    clean = decode_audio(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 1500] = np.random.default_rng(1).integers(0, 256, 1500, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        repaired = decode_audio(path, on_damage="silence")
    assert repaired.waveform.shape == clean.waveform.shape
    assert len(repaired.silenced) == 1 and "replaced with silence" in caplog.text
    (start, stop), = repaired.silenced
    assert 0.3 < start < stop < 1.7
    span = slice(round(start * RATE), round(stop * RATE))
    assert repaired.waveform[:, span].abs().max() == 0
    keep = torch.ones(repaired.waveform.shape[1], dtype=torch.bool)
    keep[round(start * RATE) - 2048:round(stop * RATE) + 2048] = False  # AAC frames overlap their neighbours
    tolerance = 0 if ext == "flac" else 0.01  # AAC noise substitution draws from a decoder-state generator
    torch.testing.assert_close(repaired.waveform[:, keep], clean.waveform[:, keep], rtol=0, atol=tolerance)


def test_on_damage_silence_fills_a_truncated_tail(tmp_path):
    waveform, pcm = _grid(_sines(RATE, 2.0))
    path = write_audio(tmp_path / "song.wav", waveform, RATE)
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"data") + 8 + 4 * RATE])  # header + 1 s of stereo 16-bit samples
    repaired = decode_audio(path, on_damage="silence")
    assert repaired.seconds == 2.0 and repaired.silenced == ((1.0, 2.0),)
    np.testing.assert_array_equal(repaired.waveform[:, :RATE].numpy() * 32768, pcm[:, :RATE])
    assert repaired.waveform[:, RATE:].abs().max() == 0


@pytest.mark.parametrize("ext,codec", [("ogg", "opus"), ("mp3", None), ("mkv", "opus")])
def test_on_damage_silence_changes_nothing_in_a_clean_file(tmp_path, ext, codec):
    waveform, _ = _grid(_sines(RATE, 1.0))
    if ext == "mkv":  # Opus in Matroska starts at a negative timestamp (codec delay)
        path = tmp_path / "x.mkv"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libopus", rate=48000, layout="stereo")
            frame = av.AudioFrame.from_ndarray(waveform.numpy(), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = RATE, 0, Fraction(1, RATE)
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
    else:
        path = write_audio(tmp_path / f"x.{ext}", waveform, RATE, codec=codec)
    strict, tolerant = decode_audio(path), decode_audio(path, on_damage="silence")
    assert tolerant.silenced == () and torch.equal(strict.waveform, tolerant.waveform)


def test_bad_arguments(tmp_path):
    path = write_audio(tmp_path / "x.wav", torch.zeros(1, 100), 8000)
    for kwargs, words in (({"start_seconds": -1.0}, "start_seconds"), ({"duration_seconds": 0.0}, "duration"),
                          ({"start_seconds": math.nan}, "start_seconds"),
                          ({"stream_index": 1}, "stream_index"), ({"on_damage": "ignore"}, "on_damage")):
        with pytest.raises(ValueError, match=words):
            decode_audio(path, **kwargs)


# ----------------------------------------------------------------------------- memory and progress


def test_buffer_is_exactly_the_output_and_progress_is_reported(tmp_path, monkeypatch):
    waveform, pcm = _grid(_sines(RATE, 1.0))
    path = write_audio(tmp_path / "x.mp3", waveform, RATE)  # header length > decoded: buffer is shrunk
    calls = []
    decoded = decode_audio(path, progress=lambda done, total: calls.append((done, total)))
    assert decoded.waveform.untyped_storage().nbytes() == decoded.waveform.numel() * 4
    assert calls[-1] == (decoded.waveform.shape[1],) * 2
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False)) and len(calls) > 5
    # a header that understates the length makes the buffer grow; the samples are the same
    flac = write_audio(tmp_path / "x.flac", waveform, RATE)
    monkeypatch.setattr(decode_module, "_capacity", lambda *args: 1000)
    np.testing.assert_array_equal(decode_audio(flac).waveform.numpy() * 32768, pcm)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decode_audio(flac, progress=stop)


# ----------------------------------------------------------------------------- writing


def test_write_audio_is_atomic_and_checks_its_arguments(tmp_path):
    waveform = torch.from_numpy(_sines(RATE, 3.0)).float()

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


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("orig", [8000, 11025, 22050, 44100, 48000, 96000])
def test_resample_matches_the_analytic_sine_at_the_new_rate(orig):
    for new in (8000, 11025, 22050, 44100, 48000, 96000):
        if new == orig:
            continue
        x = torch.from_numpy(_sines(orig, 0.3, freqs=(440.0,), amps=(1.0,), phase=0.3))
        y = resample(x.float(), orig, new)
        ref = _sines(new, y.shape[-1] / new, freqs=(440.0,), amps=(1.0,), phase=0.3)
        assert y.shape == (1, math.ceil(x.shape[-1] * new / orig)) == ref.shape
        edge = new // 50  # 20 ms: the filter's reach at the edges
        assert np.abs(y.double().numpy() - ref)[:, edge:-edge].max() < 2e-3
        sharp = resample(x, orig, new, lowpass_filter_width=64, method="sinc_interp_kaiser")
        assert np.abs(sharp.numpy() - ref)[:, edge:-edge].max() < 1e-6
    same = torch.zeros(1, 10)
    assert resample(same, orig, orig) is same
    with pytest.raises(ValueError, match="method"):
        resample(same, orig, 16000, method="linear")


# ----------------------------------------------------------------------------- loudness


def _response(coefficients, freq: float, rate: int) -> complex:
    (b, a) = coefficients
    z = cmath.exp(-2j * math.pi * freq / rate)
    return (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)


def _reference_loudness(x: np.ndarray, gate: bool = True) -> float:
    """BS.1770-4 at 48 kHz in float64 loops, straight from the Recommendation's equations and tables."""
    z = []
    for channel in x:
        y = channel.tolist()
        for b, a in (BS1770_SHELF, BS1770_HIGHPASS):
            out, x1, x2, y1, y2 = [], 0.0, 0.0, 0.0, 0.0
            for value in y:
                result = b[0] * value + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
                x2, x1, y2, y1 = x1, value, y1, result
                out.append(result)
            y = out
        y = np.asarray(y)
        z.append([np.mean(y[j * 4800:j * 4800 + 19200] ** 2) for j in range((len(y) - 19200) // 4800 + 1)])
    blocks = np.sum(z, axis=0)  # channel weights 1 (mono / stereo)
    loudness = -0.691 + 10 * np.log10(blocks)
    gated = loudness > (-70 if gate else -np.inf)
    relative = -0.691 + 10 * np.log10(blocks[gated].mean()) - 10
    return float(-0.691 + 10 * np.log10(blocks[gated & (loudness > (relative if gate else -np.inf))].mean()))


def test_k_weighting_reproduces_the_recommendation_tables():
    shelf, highpass = k_weighting_coefficients(48000)
    np.testing.assert_allclose(shelf[0] + shelf[1], BS1770_SHELF[0] + BS1770_SHELF[1], atol=1e-12)
    np.testing.assert_allclose(highpass[0] + highpass[1], BS1770_HIGHPASS[0] + BS1770_HIGHPASS[1], atol=1e-12)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_loudness_of_a_997_hz_sine_has_a_closed_form(rate):
    """A steady sine of amplitude A has mean square A^2/2; K-weighting scales its power by |H(997 Hz)|^2
    (+0.691 dB, which the -0.691 offset cancels: BS.1770-4 Annex 1 defines the offset so a 0 dBFS
    997 Hz sine in one front channel reads -3.01 LKFS). So L = -0.691 + 10 log10(sum_c |H|^2 A_c^2 / 2)."""
    gain = abs(_response(BS1770_SHELF, 997, 48000) * _response(BS1770_HIGHPASS, 997, 48000)) ** 2
    amps = (0.5, 0.25)
    x = torch.from_numpy(_sines(rate, 5.0, freqs=(997.0, 997.0), amps=amps)).float()
    expected = -0.691 + 10 * math.log10(sum(gain * a * a / 2 for a in amps))
    assert abs(integrated_loudness(x, rate) - expected) < 0.01
    mono_full_scale = torch.from_numpy(_sines(rate, 5.0, freqs=(997.0,), amps=(1.0,))).float()
    assert abs(integrated_loudness(mono_full_scale, rate) - (-3.01)) < 0.01


@pytest.mark.parametrize("rate", [48000, 44100])
def test_ebu_tech_3341_test_signal_1(rate):
    """EBU Tech 3341, Table 1, case 1: stereo 1 kHz sine at -23 dBFS reads -23.0 +- 0.1 LUFS."""
    amp = 10 ** (-23 / 20)
    x = torch.from_numpy(_sines(rate, 20.0, freqs=(1000.0, 1000.0), amps=(amp, amp))).float()
    assert abs(integrated_loudness(x, rate) + 23.0) < 0.1


def test_gating_matches_a_float64_reference_of_the_recommendation():
    rate = 48000
    loud = _sines(rate, 1.5, freqs=(997.0,), amps=(0.5,))
    quiet = _sines(rate, 1.5, freqs=(200.0,), amps=(0.5 * 10 ** (-15 / 20),))  # below the relative gate
    silence = _sines(rate, 1.0, freqs=(997.0,), amps=(1e-5,))  # below the absolute gate
    x = np.concatenate([loud, quiet, silence], axis=1)
    expected = _reference_loudness(x)
    assert abs(integrated_loudness(torch.from_numpy(x), rate) - expected) < 1e-6
    assert expected - _reference_loudness(x, gate=False) > 1.0, "the signal must exercise the gates"


def test_normalize_loudness_hits_the_target_and_respects_the_peak_limit(caplog):
    rate = 48000
    noise = torch.randn(2, 2 * rate, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.05
    out = normalize_loudness(noise, rate, -23.0)
    assert abs(_reference_loudness(out.numpy()) + 23.0) < 0.1
    with caplog.at_level(logging.WARNING):
        limited = normalize_loudness(noise, rate, -5.0, peak_limit_dbfs=-1.0)
    assert abs(20 * math.log10(float(limited.abs().max())) + 1.0) < 1e-9
    assert "peak above -1.0 dBFS" in caplog.text
    assert _reference_loudness(limited.numpy()) < -6.0
    unlimited = normalize_loudness(noise, rate, -5.0, peak_limit_dbfs=None)
    assert abs(_reference_loudness(unlimited.numpy()) + 5.0) < 0.1
    with pytest.raises(ValueError, match="silent"):
        normalize_loudness(torch.zeros(2, rate), rate)
    with pytest.raises(ValueError, match="0.4 s"):
        normalize_loudness(noise[:, :rate // 5], rate)
    with pytest.raises(ValueError, match="target_lufs"):
        normalize_loudness(noise, rate, 3.0)


# ----------------------------------------------------------------------------- check_audio


def test_check_audio_measures_levels(caplog):
    x = torch.from_numpy(_sines(RATE, 2.0, freqs=(997.0, 997.0), amps=(0.5, 0.5))).float() + 0.02
    report = check_audio(x, RATE, "SingerTest")
    assert abs(report.peak_dbfs - 20 * math.log10(0.52)) < 1e-3
    assert abs(report.rms_dbfs - 10 * math.log10(0.125 + 0.02 ** 2)) < 1e-3
    assert abs(report.dc_offset - 0.02) < 1e-4 and report.clipped_fraction == 0 and not report.silent
    assert (report.seconds, report.channels, report.sample_rate) == (2.0, 2, RATE)
    assert abs(report.loudness_lufs - integrated_loudness(x, RATE)) < 1e-9
    assert "2.00 s, 2 ch, 44100 Hz" in report.summary() and "LUFS" in report.summary()
    square = torch.sign(torch.from_numpy(_sines(RATE, 1.0, freqs=(100.0,), amps=(1.0,)))).float()
    assert check_audio(square, RATE, "t").clipped_fraction > 0.99
    short = check_audio(torch.full((1, 1000), 0.1), RATE, "t")
    assert short.loudness_lufs is None and "loudness n/a" in short.summary()
    with caplog.at_level(logging.WARNING):
        silent = check_audio(torch.zeros(2, RATE), RATE, "SingerTest")
    assert silent.silent and silent.peak_dbfs == -math.inf and silent.loudness_lufs is None
    assert "SingerTest" in caplog.text and "silent" in caplog.text and "SILENT" in silent.summary()


@pytest.mark.parametrize("waveform,rate,words", [
    (torch.zeros(2, 0), RATE, "empty"), (torch.zeros(0, 10), RATE, "zero channels"),
    (torch.tensor([[0.0, math.nan]]), RATE, "NaN"),
    (torch.tensor([[0.0, math.inf]]), RATE, "NaN or infinite"),
    (torch.zeros(1, 10), 0, "sample_rate"), (torch.zeros(10), RATE, "channels, samples"),
])
def test_check_audio_rejects_bad_input(waveform, rate, words):
    with pytest.raises(ValueError, match=f"^SingerTest: .*{words}"):
        check_audio(waveform, rate, "SingerTest")


# ----------------------------------------------------------------------------- conversions


def test_normalize_peak():
    x = torch.tensor([[0.1, -0.25], [0.2, 0.0]])
    out = normalize_peak(x, -6.0)
    assert abs(float(out.abs().max()) - 10 ** (-6 / 20)) < 1e-7
    torch.testing.assert_close(out / out.abs().max(), x / 0.25)
    with pytest.raises(ValueError, match="silence"):
        normalize_peak(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="<= 0 dBFS"):
        normalize_peak(x, 1.0)


def test_trim_and_pad():
    x = torch.arange(20, dtype=torch.float32).reshape(2, 10)
    torch.testing.assert_close(trim(x, 10, 0.2, 0.7), x[:, 2:7])
    torch.testing.assert_close(trim(x, 10, 0.5), x[:, 5:])
    for start, end in ((1.0, None), (-0.1, None), (0.5, 0.5), (0.2, 1.2)):
        with pytest.raises(ValueError, match="trim"):
            trim(x, 10, start, end)
    assert pad(x, 10, to_seconds=0.5) is x
    padded = pad(x, 10, to_seconds=1.3, where="start")
    assert padded.shape == (2, 13) and torch.equal(padded[:, 3:], x) and padded[:, :3].abs().sum() == 0
    both = pad(x, 10, to_multiple_of=4, where="both")  # 10 -> 12: one before, one after
    assert both.shape == (2, 12) and torch.equal(both[:, 1:11], x) and both[:, 0].abs().sum() == 0
    assert pad(x, 10, to_seconds=1.1, to_multiple_of=4).shape == (2, 12)
    with pytest.raises(ValueError, match="where"):
        pad(x, 10, to_seconds=2.0, where="middle")
    with pytest.raises(ValueError, match="to_multiple_of"):
        pad(x, 10, to_multiple_of=0)


def test_trim_silence_returns_the_offsets():
    x = torch.zeros(2, 10000)
    x[1, 1234:5678] = 0.3 * torch.sign(torch.randn(4444, generator=torch.Generator().manual_seed(0)))
    x[0, 2000] = 0.001  # -60 dBFS: below the threshold
    trimmed, start, end = trim_silence(x, 1000, -50.0)
    assert (start, end) == (1234, 5678) and torch.equal(trimmed, x[:, 1234:5678])
    _, start, end = trim_silence(x, 1000, -50.0, keep_seconds=0.5)
    assert (start, end) == (734, 6178)
    _, start, _ = trim_silence(x, 1000, -70.0)
    assert start == 1234  # 0.001 at 2000 is after the first sound
    with pytest.raises(ValueError, match="below -50"):
        trim_silence(torch.full((1, 100), 1e-4), 1000, -50.0)


def test_comfy_helpers_and_mono():
    batch = {"waveform": torch.randn(3, 2, 50), "sample_rate": 16000}
    items = comfy_items(batch, "SingerTest")
    assert len(items) == 3 and all(torch.equal(item, batch["waveform"][i]) for i, item in enumerate(items))
    with pytest.raises(ValueError, match="SingerTest"):
        comfy_items({"waveform": torch.randn(2, 50), "sample_rate": 16000}, "SingerTest")
    item = batch["waveform"][0]
    decoded = DecodedAudio(item, 16000, "pcm_f32le", "wav", "x.wav", 2, item.shape[1] / 16000)
    waveform, rate = audio_from_comfy(decoded.to_comfy(), "SingerTest")
    assert rate == 16000 and torch.equal(waveform, item[None])
    torch.testing.assert_close(to_mono(item), item.mean(0, keepdim=True))
