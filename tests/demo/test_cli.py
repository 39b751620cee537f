"""`make demo` writes the song, its isolated vocals, its features, its sub-band view, a SynthSinger clip and
the motion DiT's, the NeRF's and the SINGER stack's videos."""

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from singer_core import demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_writes_song_vocals_features_and_subband_image(tmp_path):
    from singer_core.audio.features import SingerAudioFeatures

    assert demo.main(["--out", str(tmp_path), "--seconds", "2", "--levels", "3", "--motion-preset", "tiny",
                      "--nerf-steps", "20", "--singer-steps", "2", "--sample-steps", "2", "--frames-steps", "2"]) == 0
    for name, channels in (("song.wav", 2), ("vocals.wav", 2)):
        with wave.open(str(tmp_path / name)) as handle:
            assert handle.getframerate() == 16000 and handle.getnframes() == 32000
            assert handle.getnchannels() == channels
    features = SingerAudioFeatures.load(tmp_path / "features.safetensors")
    assert features.features.shape == (50, 16, 80) and features.fps == 25  # ceil(2 s x 25 fps) frames
    from singer_core.io.video_read import read_video

    clip = read_video(tmp_path / "synthsinger" / "synth00000_00" / "video.mp4")
    assert clip.frames.shape == (50, 256, 256, 3) and clip.audio is not None and clip.audio.shape[-1] == 32000
    preview = read_video(tmp_path / "motion_preview.mp4")  # the motion DiT's output rendered with the song
    assert preview.frames.shape == (50, 256, 256, 3) and preview.audio is not None
    assert (tmp_path / "models" / "motion-tiny" / "model.safetensors").is_file()  # cached for the next run
    nerf = read_video(tmp_path / "nerf_preview.mp4")  # the audio NeRF driven by the song
    assert nerf.frames.shape[0] == 50 and nerf.audio is not None
    singer = read_video(tmp_path / "singer_video.mp4")  # portrait + song through the tiny SINGER stack
    portrait = np.asarray(Image.open(tmp_path / "singer_portrait.png"))
    assert singer.frames.shape == (50, *portrait.shape) and singer.audio is not None
    assert singer.audio.shape[-1] == 32000 and (tmp_path / "models" / "singer-demo" / "vae").is_dir()
    fd2talk = read_video(tmp_path / "fd2talk_video.mp4")  # the sampled motion animating the frame model's singer
    assert fd2talk.frames.shape == (50, 256, 256, 3) and fd2talk.audio is not None
    assert (tmp_path / "models" / "frames-demo" / "unet" / "model.safetensors").is_file()
    image = np.asarray(Image.open(tmp_path / "subbands.png"))
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > 200 and image.std() > 10


@pytest.mark.slow  # a benchmark smoke run (an interpreter start and every peer): `make test-all` runs it
def test_benchmark_smoke(tmp_path):
    """The benchmark script runs end to end (tiny shapes) and reports every peer; no timing asserts."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "wavelet.py"), "--quick",
                             "--json", str(tmp_path / "rows.json")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {row["direction"] for row in rows} == {"forward", "inverse"}
    for row in rows:
        assert {"ours (out=)", "ours (alloc)", "ptwt", "pytorch_wavelets", "PyWavelets"} <= set(row["timings_ms"])
        assert row["best_peer"] and row["speedup_vs_best_peer"] > 0
    assert "copy floor" in result.stdout and "the best peer" in result.stdout
