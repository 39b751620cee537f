"""singer_core.nerf.song_video and the demo's NeRF (singer_core.demo.nerf_subject): the demo NeRF trains into a loadable folder with its camera poses, a song renders to
an mp4 with sound and one frame per 1/25 s, camera paths are rigid motions, and mismatched audio features are
refused with messages that say how to fix them."""

import json
import math

import pytest
import torch

from singer_core.audio.encoders import MelEncoder
from singer_core.audio.features import SingerAudioFeatures
from singer_core.audio.synth import sing
from singer_core.demo.nerf_subject import render_nerf_video, train_demo_nerf
from singer_core.io.video_read import read_video
from singer_core.nerf.song_video import (
    POSES_FILE,
    camera_path,
    frontal_pose,
    load_nerf_subject,
    render_song,
)
from singer_core.nerf.subject import NerfSubjectModel, load_subject_model

STEPS = 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("nerf_demo")
    calls = []
    folder = train_demo_nerf(root / "models" / "nerf-demo", cache_dir=root / "cache", steps=STEPS,
                             progress=lambda done, total: calls.append((done, total)))
    return folder, calls, root


def test_train_demo_nerf_writes_a_loadable_model_with_its_poses(demo):
    folder, calls, root = demo
    assert calls and calls[-1] == (STEPS, STEPS)
    model = load_subject_model(folder)
    assert isinstance(model, NerfSubjectModel) and (model.config.width, model.config.height) == (64, 64)
    subject = load_nerf_subject(folder)
    truth = json.loads((folder / POSES_FILE).read_text())
    poses = torch.tensor([frame["transform_matrix"] for frame in truth["frames"]])
    torch.testing.assert_close(subject.poses, poses)
    assert subject.fps == truth["fps"] == 25.0
    assert not list(folder.parent.glob(".*partial"))
    # a second call with the run already trained only copies (no new progress calls)
    again = []
    train_demo_nerf(root / "models" / "copy", cache_dir=root / "cache", steps=STEPS,
                    progress=lambda done, total: again.append(done))
    assert not again and (root / "models" / "copy" / "model.safetensors").is_file()


def test_render_nerf_video_writes_the_song_at_25_fps(demo, tmp_path):
    folder, _, _ = demo
    song = sing(1.3, seed=4)
    seen = []
    path = render_nerf_video(folder, song.waveform, song.sample_rate, tmp_path / "song.mp4",
                          progress=lambda done, total: seen.append((done, total)))
    video = read_video(path)
    expected = math.ceil(song.waveform.shape[-1] / song.sample_rate * 25)
    assert video.frames.shape == (expected, 64, 64, 3)
    assert seen[-1] == (expected, expected)
    assert video.audio is not None and video.sample_rate == song.sample_rate
    assert abs(video.audio.shape[-1] / video.sample_rate - expected / 25) < 0.05
    # a shorter video, and a progress callback that stops the render leaves no file
    short = read_video(render_nerf_video(folder, song.waveform, song.sample_rate, tmp_path / "short.mp4", seconds=0.5))
    assert short.frames.shape[0] == math.ceil(0.5 * 25)

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_nerf_video(folder, song.waveform, song.sample_rate, tmp_path / "stopped.mp4", progress=stop)
    assert not (tmp_path / "stopped.mp4").exists()


def test_render_song_frames_are_the_models_frames(demo):
    folder, _, _ = demo
    subject = load_nerf_subject(folder)
    song = sing(0.4, seed=5)
    features = MelEncoder().encode(song.waveform, song.sample_rate, 25)
    poses = camera_path(subject, features.frames, "sway", sway_degrees=20.0, sway_seconds=0.4)
    frames = render_song(subject, features, poses=poses)
    model = load_subject_model(folder).eval()
    codes = model.audio_codes(features.features, features.features)  # mel-80 content + dynamic, fresh model
    for k in (0, features.frames - 1):
        torch.testing.assert_close(frames[k], model.render_frame(codes[k], poses[k]))


def test_camera_paths_are_rigid_turns_of_the_reference_pose(demo):
    folder, _, _ = demo
    subject = load_nerf_subject(folder)
    static = camera_path(subject, 5, "static")
    assert torch.equal(static, subject.poses[0].expand(5, 4, 4))
    sway = camera_path(subject, 26, "sway", sway_degrees=12.0, sway_seconds=1.0).double()
    base = subject.poses[0].double()
    for k in range(26):
        rotation = sway[k, :3, :3]
        torch.testing.assert_close(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
        # turning about the canonical y axis keeps the camera's height and its distance from the head centre
        assert abs(float(sway[k, 1, 3] - base[1, 3])) < 1e-5
        assert abs(float(sway[k, :3, 3].norm() - base[:3, 3].norm())) < 1e-4
        angle = math.degrees(math.atan2(float(sway[k, 0, 3]), float(sway[k, 2, 3]))
                             - math.atan2(float(base[0, 3]), float(base[2, 3])))
        assert abs(angle - 12.0 * math.sin(2 * math.pi * k / 25)) < 1e-3
    count = subject.poses.shape[0]
    training = camera_path(subject, 2 * count + 3, "training")
    order = list(range(count)) + list(range(count - 2, 0, -1))
    for k in range(training.shape[0]):
        assert torch.equal(training[k], subject.poses[order[k % len(order)]])
    # without a poses file: the frontal SynthSinger camera (looks down -z from in front of the face)
    front = frontal_pose()
    torch.testing.assert_close(front[:3, :3], torch.eye(3))
    assert float(front[2, 3]) > 5.0


def test_mismatched_features_are_refused(demo):
    folder, _, _ = demo
    subject = load_nerf_subject(folder)
    song = sing(0.4, seed=6)
    with pytest.raises(ValueError, match="30 fps.*fps=25"):
        render_song(subject, MelEncoder().encode(song.waveform, song.sample_rate, 30))
    hubert_like = SingerAudioFeatures(torch.zeros(10, 2, 1024), fps=25, encoder="facebook/hubert-large-ls960-ft",
                                      sample_rate=16000, num_samples=6400, rows="steps")
    with pytest.raises(ValueError, match="mel-80"):
        render_song(subject, hubert_like)
    mel = MelEncoder().encode(song.waveform, song.sample_rate, 25)
    with pytest.raises(ValueError, match=r"poses are \(3, 4, 4\)"):
        render_song(subject, mel, poses=torch.eye(4).expand(3, 4, 4))
    with pytest.raises(ValueError, match="no training poses"):
        camera_path(load_nerf_subject_without_poses(folder), 3, "training")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_nerf_subject(folder.parent / "missing")


def load_nerf_subject_without_poses(folder):
    import dataclasses

    return dataclasses.replace(load_nerf_subject(folder), poses=None)
