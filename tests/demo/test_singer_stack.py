"""The demo's tiny SINGER stack (singer_core.demo.singer_stack): the built folder loads as the trainer's export
(singer_core.diffusion.model_folder), a rendered video is an mp4 with ceil(seconds x fps) frames at the portrait's size carrying the song, progress
counts steps x clips, and stopping leaves no file behind."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from singer_core.audio.encoders import MEL_ENCODER_NAME
from singer_core.demo.singer_stack import build_tiny_stack, render_singer_video
from singer_core.diffusion import SingerNet
from singer_core.diffusion.model_folder import TRAINING_INFO, encode_song, load_model_folder

SONG_RATE = 16000


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    root = tmp_path_factory.mktemp("singer_stack")
    calls = []
    trained = build_tiny_stack(root / "trained", cache_dir=root / "cache", steps=1, small_data=True,
                               progress=lambda done, total: calls.append((done, total)))
    return {"root": root, "trained": trained, "calls": calls,
            "random": build_tiny_stack(root / "random", cache_dir=root / "cache", trained=False)}


def _song(seconds: float) -> torch.Tensor:
    t = np.arange(round(seconds * SONG_RATE)) / SONG_RATE
    return torch.from_numpy(0.5 * np.sin(2 * np.pi * 220.0 * t) * np.sin(np.pi * t / seconds)).float()[None]


def _portrait(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], -1).astype(np.uint8)


def test_trained_stack_is_the_trainers_export_with_its_vae(stacks):
    folder = stacks["trained"]
    info = json.loads((folder / TRAINING_INFO).read_text())
    assert info["vae"] == "vae" and info["audio"]["encoder"] == "mel-80"
    assert stacks["calls"][-1] == (2, 2)  # one vae step + one singer step
    assert [done for done, _ in stacks["calls"]] == [1, 2]
    model = load_model_folder(folder)
    reference = SingerNet.from_pretrained(folder)
    for (name, a), (_, b) in zip(model.net.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert model.image_size == info["image_size"] == 64
    assert (model.clip_frames, model.motion_frames) == (info["frames"], info["motion_frames"])
    assert not list(folder.glob(".runs")), "training runs must not stay in the model folder"


def test_render_singer_video_writes_the_song_and_one_frame_per_video_frame(stacks, tmp_path):
    from singer_core.io.video_read import read_video

    seconds, height, width = 0.5, 72, 96
    song = _song(seconds)
    calls = []
    out = render_singer_video(stacks["trained"], _portrait(height, width), song, SONG_RATE, tmp_path / "song.mp4",
                         steps=2, progress=lambda done, total: calls.append((done, total)))
    video = read_video(out)
    frames = math.ceil(seconds * 25)
    assert tuple(video.frames.shape) == (frames, height, width, 3)
    clip_frames = json.loads((stacks["trained"] / TRAINING_INFO).read_text())["frames"]  # the tiny preset's clips
    clips = math.ceil(frames / clip_frames)
    assert calls[-1] == (2 * clips, 2 * clips) and len(calls) == 2 * clips
    # the sound track is the song: correlation with the input (AAC is lossy, not sample exact)
    audio = video.audio.float().mean(0).numpy()
    n = min(audio.shape[0], song.shape[1])
    lag = int(np.argmax(np.correlate(audio[:n], song[0, :n].numpy(), mode="full"))) - (n - 1)
    a, b = (audio[lag:n], song[0, :n - lag].numpy()) if lag >= 0 else (audio[:n + lag], song[0, -lag:n].numpy())
    assert np.corrcoef(a, b)[0, 1] > 0.95
    assert video.sample_rate == SONG_RATE


def test_stopping_a_render_leaves_no_file(stacks, tmp_path):
    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    out = tmp_path / "stopped.mp4"
    with pytest.raises(Stop):
        render_singer_video(stacks["random"], _portrait(64, 64), _song(0.2), SONG_RATE, out, steps=3, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_stopping_a_build_keeps_the_previous_folder(stacks):
    folder = stacks["random"]
    before = sorted(p.name for p in folder.iterdir())

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_tiny_stack(folder, cache_dir=stacks["root"] / "cache", trained=False, progress=stop)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".random")] == []


def test_features_of_another_encoder_are_refused_with_the_needed_shape(stacks):
    from singer_core.audio.features import SingerAudioFeatures

    model = load_model_folder(stacks["random"])
    assert model.net.config.audio_blocks == 16 and model.net.config.audio_channels == 80
    wrong = SingerAudioFeatures(torch.zeros(5, 12, 768), fps=25.0, encoder="facebook/wav2vec2-base-960h",
                                sample_rate=16000, num_samples=3200, rows="layers")
    with pytest.raises(ValueError, match=r"\(frames, 16, 80\) from 'mel-80'"):
        model.prepare_features(wrong)
    features = encode_song(model, _song(0.2), SONG_RATE, 25.0)
    assert features.rows == "steps" and features.encoder == MEL_ENCODER_NAME and tuple(features.features.shape) == (5, 16, 80)
