"""singer_core.data.preprocess on videos made here: procedural faces (render_coeffs) composited at known,
moving positions on a scrolling textured background, 6 s at 30 fps with a SynthSinger song. References: the
compositing positions and rendered landmarks (ground-truth face centres), the FFmpeg fps-filter frame map
(closed form), and the song itself resampled (the resampler is checked against torchaudio in
audio/test_dsp.py)."""

from __future__ import annotations

import json
import math
import wave

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from singer_core.audio.io import resample
from singer_core.audio.synth import SongConfig, synthesize_song
from singer_core.data.format import read_index
from singer_core.data.preprocess import PreprocessConfig, main, preprocess_videos
from singer_core.face.detector_files import haar_available
from singer_core.face.morphable import zero_coeffs
from singer_core.face.procedural import procedural_model
from singer_core.face.render import default_lighting, render_coeffs
from singer_core.io.video_write import write_video

SECONDS, FPS, WIDTH, HEIGHT, RENDER = 6.0, 30, 240, 180, 128
SONG_RATE = 22050
SIZE = 64  # clip side in the tests (the default is 512)
MIN_FACE = 0.25  # the head is ~56 px in 180: skipping the smallest detector scales makes the tests 3x faster
POSE_STEP = 6  # a new head pose every 6 frames (5 Hz); the position moves every frame
# the detector that finds these faces here is OpenCV 4's Haar cascade (no SCRFD / YuNet weights in the tests)
needs_haar = pytest.mark.skipif(not haar_available(), reason="this OpenCV has no Haar cascade (OpenCV 5)")


@pytest.fixture(scope="module")
def scene():
    """Frames (without and with face), ground-truth face centres per 30 fps frame, and the song."""
    count = int(SECONDS * FPS)
    t = np.arange(count) / FPS
    # 1. heads: a neutral-ish face nodding, turning a little and opening the jaw, rendered at a few poses
    keys = np.arange(0, count, POSE_STEP)
    coeffs = zero_coeffs(len(keys))
    coeffs[:, 227:254] = default_lighting()
    coeffs[:, 256] = -3.3  # farther from the camera: the whole head fits the 128 px render
    coeffs[:, 224] = torch.from_numpy(0.05 * np.sin(2 * np.pi * t[keys] / 1.5)).float()  # pitch
    coeffs[:, 225] = torch.from_numpy(0.12 * np.sin(2 * np.pi * t[keys] / 2.0)).float()  # yaw
    coeffs[:, 80] = torch.from_numpy(0.15 * (1 + np.sin(4 * np.pi * t[keys]))).float()  # jaw open
    render = render_coeffs(procedural_model(0), coeffs, image_size=RENDER)
    faces = render.images.permute(0, 2, 3, 1).numpy() * 255
    masks = render.mask[:, 0].numpy()[..., None]
    marks = render.landmarks.numpy()
    # 2. the head's top-left corner moves every frame; the face centre is the landmarks' box centre
    left = np.rint((WIDTH - RENDER) / 2 + 40 * np.sin(2 * np.pi * t / 6)).astype(int)
    top = np.rint((HEIGHT - RENDER) / 2 + 20 * np.sin(2 * np.pi * t / 4 + 1)).astype(int)
    pose = np.arange(count) // POSE_STEP
    centres = (marks.min(1) + marks.max(1))[pose] / 2 + np.stack([left, top], 1)
    # 3. a larger smooth colour texture, scrolling diagonally under the head
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (2 * HEIGHT, 2 * WIDTH, 3)).astype(np.float32), (0, 0), 5)
    texture = (texture - texture.mean()) * 3 + 128
    background = np.empty((count, HEIGHT, WIDTH, 3), np.float32)
    with_face = np.empty((count, HEIGHT, WIDTH, 3), np.uint8)
    for k in range(count):
        background[k] = texture[k % HEIGHT:k % HEIGHT + HEIGHT, 2 * k % WIDTH:2 * k % WIDTH + WIDTH]
        frame = background[k].copy()
        region = frame[top[k]:top[k] + RENDER, left[k]:left[k] + RENDER]
        region[...] = region * (1 - masks[pose[k]]) + faces[pose[k]] * masks[pose[k]]
        with_face[k] = np.clip(np.rint(frame), 0, 255)
    song = synthesize_song(SongConfig(seconds=SECONDS, sample_rate=SONG_RATE, seed=1))
    return {"with_face": with_face, "background": np.clip(np.rint(background), 0, 255).astype(np.uint8),
            "centres": centres, "song": song.mix}


def _write(folder, name, frames, song):
    folder.mkdir(parents=True, exist_ok=True)
    return write_video(folder / name, frames, FPS, audio=song, sample_rate=SONG_RATE)


def _source_frame(slot: np.ndarray) -> np.ndarray:
    """The 30 fps frame FFmpeg's fps filter shows in 25 fps slot n: ceil((6 n + 3) / 5) - 1."""
    return np.ceil((6 * slot + 3) / 5).astype(int) - 1


@needs_haar
def test_three_clips_with_centred_crops_and_aligned_audio(tmp_path, scene):
    _write(tmp_path / "videos", "singer_a.mp4", scene["with_face"], scene["song"])
    config = PreprocessConfig(size=SIZE, blur_threshold=0, min_face_size=MIN_FACE)
    calls = []
    summary = preprocess_videos(tmp_path / "videos", tmp_path / "data", config=config,
                                progress=lambda done, total: calls.append((done, total)))
    assert summary.kept == ("singer_a-0000", "singer_a-0001", "singer_a-0002") and summary.dropped == ()
    assert calls[-1][0] == calls[-1][1] == 300  # two passes over 150 frames
    index = read_index(tmp_path / "data")
    assert sorted(index.train + index.test) == list(summary.kept)
    song16 = resample(torch.as_tensor(scene["song"]).mean(0), SONG_RATE, 16000).numpy()
    offsets = []
    for clip, clip_id in enumerate(summary.kept):
        folder = tmp_path / "data" / clip_id
        meta = json.loads((folder / "meta.json").read_text())
        assert (meta["identity"], meta["source"], meta["frames"], meta["size"], meta["fps"]) == \
            ("singer_a", "real", 50, SIZE, 25.0)
        assert meta["extra"]["start_seconds"] == 2.0 * clip and meta["extra"]["face_fraction"] == 1.0
        # 3. 16 kHz mono audio of exactly 2 s, aligned with the song (cross-correlation peak at lag 0)
        with wave.open(str(folder / "audio.wav")) as handle:
            assert handle.getframerate() == 16000 and handle.getnchannels() == 1
            audio = np.frombuffer(handle.readframes(handle.getnframes()), np.int16) / 32768.0
        assert audio.shape == (32000,)
        reference = song16[32000 * clip:32000 * (clip + 1)]
        lags = range(-8, 9)
        scores = [np.dot(audio[20:-20], np.roll(reference, lag)[20:-20]) for lag in lags]
        assert list(lags)[int(np.argmax(scores))] == 0
        snr = 10 * np.log10(np.sum(reference ** 2) / np.sum((audio - reference) ** 2))
        assert snr > 30, snr  # AAC at 160 kb/s and two resamplers: measured 38-55 dB
        # 4. the crop squares follow the true face centre (read off the 25 fps frame the filter picks)
        marks = load_file(str(folder / "landmarks.safetensors"))
        box = marks["box"].numpy().astype(np.float64)
        assert box.shape == (50, 4) and marks["detected"].all()
        truth = scene["centres"][_source_frame(np.arange(50) + 50 * clip)]
        offsets.append((box[:, :2] + box[:, 2:]) / 2 - truth)
        side = box[:, 2] - box[:, 0]
        assert np.allclose(box[:, 3] - box[:, 1], side) and 60 < side.mean() < 80  # Haar box ~56 px / 0.8
    offsets = np.concatenate(offsets)
    bias = offsets.mean(0)
    # the Haar box includes the forehead: its centre sits ~8 px above the landmarks' box centre (brows to
    # chin) at this face size, a constant; around it the smoothed track stays within a few pixels
    assert abs(bias[0]) < 2 and -11 < bias[1] < -5, bias
    residual = offsets - bias
    assert np.sqrt((residual ** 2).mean()) < 1.5 and np.abs(residual).max() < 4, np.abs(residual).max(0)


@needs_haar
def test_no_face_and_blurred_videos_are_dropped(tmp_path, scene):
    two_seconds = scene["song"][:, :2 * SONG_RATE]
    _write(tmp_path / "videos", "empty_stage.mp4", scene["background"][:60], two_seconds)
    blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), 0.8) for frame in scene["with_face"][60:120]])
    _write(tmp_path / "videos", "soft.mp4", blurred, two_seconds)
    _write(tmp_path / "videos", "sharp.mp4", scene["with_face"][:75], scene["song"][:, :int(2.5 * SONG_RATE)])
    # measured median Laplacian variance of the face region at 64 px: ~1600 sharp, ~270 after the 0.8 px blur
    config = PreprocessConfig(size=SIZE, blur_threshold=600, min_face_size=MIN_FACE)
    summary = preprocess_videos(tmp_path / "videos", tmp_path / "data", config=config)
    assert summary.kept == ("sharp-0000",)
    reasons = {(item.video, item.clip_index): item.reason for item in summary.dropped}
    assert reasons[("empty_stage.mp4", 0)] == "no face (0% of frames)"
    assert reasons[("soft.mp4", 0)].startswith("blurry (sharpness")
    assert reasons[("sharp.mp4", 1)] == "short tail (0.52 s < 2 s)"  # 2.5 s -> 63 frames at 25 fps
    assert summary.reasons() == {"no face": 1, "blurry": 1, "short tail": 1}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["index.json", "sharp-0000"]


@needs_haar
def test_interruption_leaves_no_partial_clip_and_cli_resumes(tmp_path, scene, capsys):
    _write(tmp_path / "videos", "take.mp4", scene["with_face"][:120], scene["song"][:, :4 * SONG_RATE])

    def stop(done, total):
        if done == 175:  # 100 frames per pass: in the second pass, inside the second clip
            raise KeyboardInterrupt

    config = PreprocessConfig(size=SIZE, blur_threshold=0, min_face_size=MIN_FACE, detect_every=3)
    with pytest.raises(KeyboardInterrupt):
        preprocess_videos(tmp_path / "videos", tmp_path / "data", config=config, progress=stop)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["take-0000"]  # complete, no temp folders
    assert (tmp_path / "data" / "take-0000" / "meta.json").is_file()
    (tmp_path / "config.json").write_text(config.to_json())
    code = main(["--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "data"), "--config",
                 str(tmp_path / "config.json"), "--quiet"])
    assert code == 0
    assert "kept 2 clip(s), dropped 0" in capsys.readouterr().out
    assert sorted(read_index(tmp_path / "data").train) == ["take-0000", "take-0001"]
    # detection ran on every third frame and the last one; the others were interpolated
    marks = load_file(str(tmp_path / "data" / "take-0001" / "landmarks.safetensors"))
    assert marks["detected"].nonzero().flatten().tolist() == [k for k in range(50) if (50 + k) % 3 == 0 or k == 49]


def test_config_round_trip_and_checks():
    config = PreprocessConfig(size=256, detect_every=2)
    assert PreprocessConfig.from_json(config.to_json()) == config
    assert (config.clip_frames, config.clip_samples) == (50, 32000)
    with pytest.raises(ValueError, match="unknown keys \\['sise'\\]"):
        PreprocessConfig.from_json('{"sise": 3}')
    with pytest.raises(ValueError, match="whole number of frames"):
        PreprocessConfig(clip_seconds=1.01)
    with pytest.raises(ValueError, match="even integer"):
        PreprocessConfig(size=255)
    assert math.isclose(PreprocessConfig().crop_scale, 0.8)


def test_cli_without_a_detector_file_says_what_to_fetch(tmp_path, capsys):
    _write(tmp_path / "videos", "take.mp4", np.zeros((10, HEIGHT, WIDTH, 3), np.uint8), np.zeros((1, SONG_RATE)))
    code = main(["--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "data"), "--detector", "scrfd",
                 "--models-dir", str(tmp_path / "models"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "scrfd_10g_bnkps.onnx" in err and "python -m singer_core.face.detector_files --models-dir" in err
    assert str(tmp_path / "models") in err
