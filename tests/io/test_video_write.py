"""singer_core.io.video_write against independent references: the pixels and audio it was given (PSNR and
SNR after decoding, with measured bounds), analytic frame contents, and the folder it writes into (no partial
file after an error or an interruption)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from singer_core.io.video_read import iter_video_frames, probe_video, read_video
from singer_core.io.video_write import VideoWriter, write_video
from tests.media_patterns import coded_frame, decode_index, smooth_frames


def _psnr(error: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean(error ** 2)))


def test_round_trip_sizes_fps_audio_and_pixel_error(tmp_path):
    frames = smooth_frames(20, 48, 80)
    rate = 44100
    time = np.arange(int(rate * 0.8)) / rate
    audio = np.stack([0.5 * np.sin(2 * np.pi * 440 * time), 0.3 * np.sin(2 * np.pi * 660 * time)]).astype(np.float32)
    path = write_video(tmp_path / "a.mp4", torch.from_numpy(frames), 25, audio=torch.from_numpy(audio),
                       sample_rate=rate, crf=18)
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.frames, info.codec) == (80, 48, 25.0, 20, "h264")
    assert info.has_audio and info.sample_rate == rate and info.audio_channels == 2
    assert abs(info.audio_offset) < 1e-9
    video = read_video(path)
    assert video.frames.shape == (20, 48, 80, 3) and video.frames.dtype == torch.uint8
    assert video.fps == 25.0 and video.seconds == pytest.approx(0.8)
    # measured on this strongly coloured field: 36.2 dB PSNR at crf 18 (max error 23 levels), of which 4:2:0
    # chroma subsampling alone costs 38.8 dB (crf 0); the grey version of the field gives 45.6 dB at crf 18
    error = video.frames.numpy().astype(np.float64) - frames
    assert _psnr(error) > 35, _psnr(error)
    assert np.abs(error).max() <= 30
    gray = np.repeat(np.rint(frames.mean(-1, keepdims=True)).astype(np.uint8), 3, -1)
    write_video(tmp_path / "gray.mp4", gray, 25, crf=18)
    error = read_video(tmp_path / "gray.mp4").frames.numpy().astype(np.float64) - gray
    assert _psnr(error) > 44, _psnr(error)
    assert np.abs(error).max() <= 8
    # audio cut to the frames' span (0.8 s), sample-aligned: AAC at 160 kb/s keeps the sines 37 dB clean
    assert video.audio.shape == (2, audio.shape[1]) and video.sample_rate == rate
    noise = video.audio.numpy() - audio
    snr = 10 * np.log10(np.mean(audio[:, 2048:] ** 2) / np.mean(noise[:, 2048:] ** 2))
    assert snr > 30, snr


def test_float_frames_mono_audio_and_silent_video(tmp_path):
    colours = torch.tensor([[0.2, 0.4, 0.6], [0.9, 0.1, 0.3], [0.5, 0.5, 0.5]])
    frames = colours[:, None, None, :].expand(3, 16, 16, 3)  # float in 0..1, one flat colour per frame
    write_video(tmp_path / "f.mp4", frames, 10, crf=0)
    video = read_video(tmp_path / "f.mp4")
    assert video.audio is None and video.sample_rate is None and video.frames.shape == (3, 16, 16, 3)
    expected = torch.round(frames * 255)
    assert (video.frames.float() - expected).abs().max().item() <= 2  # 8-bit YUV rounding only
    audio = torch.full((16000,), 0.25)
    write_video(tmp_path / "m.mp4", np.zeros((25, 16, 16, 3), np.uint8), 25, audio=audio, sample_rate=16000)
    video = read_video(tmp_path / "m.mp4")
    assert video.audio.shape == (1, 16000)
    assert video.audio[0, 4000:12000].mean().item() == pytest.approx(0.25, abs=0.02)


def test_writer_streams_frames_and_audio_in_any_order(tmp_path):
    with VideoWriter(tmp_path / "s.mp4", Fraction(30000, 1001), sample_rate=16000) as writer:
        writer.write_audio(np.zeros(8000, np.float32))
        for k in range(10):
            writer.write(coded_frame(k))
        writer.write_audio(np.zeros(8000, np.float32))
    info = probe_video(tmp_path / "s.mp4")
    assert info.frames == 10 and info.fps == pytest.approx(30000 / 1001)
    assert [decode_index(frame.image) for frame in iter_video_frames(tmp_path / "s.mp4")] == list(range(10))


def test_odd_sizes_error_or_pad(tmp_path):
    frames = np.full((2, 15, 21, 3), 100, np.uint8)
    with pytest.raises(ValueError, match="even width and height.*pad_odd=True"):
        write_video(tmp_path / "odd.mp4", frames, 25)
    assert not list(tmp_path.iterdir())
    write_video(tmp_path / "odd.mp4", frames, 25, pad_odd=True)
    video = read_video(tmp_path / "odd.mp4")
    assert video.frames.shape == (2, 16, 22, 3)
    assert np.abs(video.frames.numpy().astype(int) - 100).max() <= 2


def test_interrupted_write_leaves_no_file(tmp_path):
    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "x.mp4", np.zeros((10, 16, 16, 3), np.uint8), 25, progress=stop)
    assert not list(tmp_path.iterdir())


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="at least one frame"):
        write_video(tmp_path / "none.mp4", np.zeros((0, 16, 16, 3), np.uint8), 25)
    with pytest.raises(ValueError, match="same size"):
        with VideoWriter(tmp_path / "sizes.mp4", 25) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            writer.write(np.zeros((16, 18, 3), np.uint8))
    with pytest.raises(ValueError, match="sample_rate"):
        write_video(tmp_path / "a.mp4", np.zeros((1, 16, 16, 3), np.uint8), 25, audio=np.zeros(100))
    with pytest.raises(ValueError, match="AAC cannot store 11000 Hz"):
        write_video(tmp_path / "a.mp4", np.zeros((1, 16, 16, 3), np.uint8), 25, audio=np.zeros(100),
                    sample_rate=11000)
    assert not list(tmp_path.iterdir())  # no partial file from any refused write
