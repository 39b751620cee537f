"""singer_core.audio.decode against independent references: int16 samples written by the standard library
and on the 16-bit grid, analytic sines at the decoded rate, containers written with PyAV directly, and
truncated or damaged files whose good part is known."""

from __future__ import annotations

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
from singer_core.audio.decode import decode_audio
from singer_core.audio.encode import write_audio
from singer_core.audio.io import write_wav
from tests.media_patterns import RATE, check_lossy, pcm16_grid, sines

# ----------------------------------------------------------------------------- containers and codecs


def test_decodes_wav_written_by_the_standard_library(tmp_path):
    path = write_wav(tmp_path / "stdlib.wav", torch.from_numpy(sines(RATE, 0.3)).float(), RATE)
    with wave.open(str(path)) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").reshape(-1, 2).T
    decoded = decode_audio(path)
    assert decoded.codec == "pcm_s16le" and decoded.container == "wav"
    np.testing.assert_array_equal(decoded.waveform.numpy() * 32768, pcm)


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
    waveform, pcm = pcm16_grid(sines(RATE, 1.0))
    # the video runs 0.5 s longer than the sound: that is not a truncated soundtrack
    path = _write_av(tmp_path / f"clip.{ext}", codec, waveform.double().numpy(), RATE, video_seconds=1.5)
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and container.duration > 1_400_000
    decoded = decode_audio(path)
    assert (decoded.sample_rate, decoded.channels, decoded.codec) == (RATE, 2, codec)
    if codec == "aac":
        assert abs(decoded.seconds - 1.0) < 0.03
        check_lossy(decoded, decoded.seconds)
    else:
        np.testing.assert_array_equal(decoded.waveform.numpy() * 32768, pcm)


def test_stream_index_picks_the_audio_track(tmp_path):
    first, _ = pcm16_grid(sines(RATE, 0.5))
    second, pcm2 = pcm16_grid(sines(RATE, 0.5, freqs=(300.0, 700.0), amps=(0.2, 0.3)))
    path = _write_av(tmp_path / "two.mkv", "flac", first.double().numpy(), RATE, video=False,
                     extra_audio=second.double().numpy())
    np.testing.assert_array_equal(decode_audio(path, stream_index=1).waveform.numpy() * 32768, pcm2)
    with pytest.raises(ValueError, match=r"has 2 audio stream\(s\); stream_index must be 0..1"):
        decode_audio(path, stream_index=2)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_odd_sample_rates(tmp_path, rate):
    waveform, pcm = pcm16_grid(sines(rate, 0.25, freqs=(440.0, 1000.0)))
    decoded = decode_audio(write_audio(tmp_path / "x.flac", waveform, rate))
    assert decoded.sample_rate == rate
    np.testing.assert_array_equal(decoded.waveform.numpy() * 32768, pcm)
    lossy = decode_audio(write_audio(tmp_path / "x.mp3", waveform, rate))
    assert lossy.sample_rate == min(rate, 48000)  # mp3 stores at most 48 kHz; FFmpeg converts
    if rate >= 16000:  # at 8/11 kHz LAME's low-pass and short files leave too little to correlate
        check_lossy(lossy, lossy.seconds, min_corr=0.98)


# ----------------------------------------------------------------------------- seeking


SEEK_CASES = [("wav", None, True), ("flac", None, True), ("m4a", "alac", True), ("ogg", None, False),
              ("opus", None, False), ("m4a", None, False), ("mp3", None, False), ("mkv", "flac", True)]


@pytest.mark.parametrize("ext,codec,lossless", SEEK_CASES)
def test_start_and_duration_decode_the_right_span(tmp_path, ext, codec, lossless):
    waveform, _ = pcm16_grid(sines(RATE, 1.5))
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
        reference = sines(rate, 1.5)[:, begin:begin + count]
        for channel in range(2):
            assert np.corrcoef(part.waveform[channel].double().numpy(), reference[channel])[0, 1] > 0.99
    with pytest.raises(ValueError, match="past the end"):
        decode_audio(path, start_seconds=5.0)


def test_duration_past_the_end_returns_the_whole_rest(tmp_path):
    waveform, pcm = pcm16_grid(sines(RATE, 0.5))
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
    waveform, _ = pcm16_grid(sines(RATE, 2.0))
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
    waveform, _ = pcm16_grid(sines(RATE, 2.0))
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
    waveform, _ = pcm16_grid(sines(RATE, 2.0))
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
    waveform, pcm = pcm16_grid(sines(RATE, 2.0))
    path = write_audio(tmp_path / "song.wav", waveform, RATE)
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"data") + 8 + 4 * RATE])  # header + 1 s of stereo 16-bit samples
    repaired = decode_audio(path, on_damage="silence")
    assert repaired.seconds == 2.0 and repaired.silenced == ((1.0, 2.0),)
    np.testing.assert_array_equal(repaired.waveform[:, :RATE].numpy() * 32768, pcm[:, :RATE])
    assert repaired.waveform[:, RATE:].abs().max() == 0


@pytest.mark.parametrize("ext,codec", [("ogg", "opus"), ("mp3", None), ("mkv", "opus")])
def test_on_damage_silence_changes_nothing_in_a_clean_file(tmp_path, ext, codec):
    waveform, _ = pcm16_grid(sines(RATE, 1.0))
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
    waveform, pcm = pcm16_grid(sines(RATE, 1.0))
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
