"""The trained motion DiT follows the song: the sampled jaw opening tracks the sung vowels (slow: trains the
`demo` preset, about a CPU minute)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_demo_motion_model_opens_the_mouth_on_the_sung_vowels(tmp_path):
    from singer_core.audio.encoders import MelEncoder
    from singer_core.audio.io import to_mono
    from singer_core.audio.synth import SongConfig, synthesize_song
    from singer_core.data.motion_from_song import motion_from_song
    from singer_core.face.morphable import EXPRESSION_UNITS
    from singer_core.motion.generator import MotionModel
    from singer_core.train.loop import train

    final = train("motion", preset="demo", out=tmp_path / "run", cache_dir=tmp_path / "cache", device="cpu",
                  quiet=True)
    model = MotionModel.from_pretrained(final)
    jaw = EXPRESSION_UNITS["jaw_open"]
    correlations = []
    for seed in (101, 202, 303):  # songs the model never saw (the training set uses seed 0)
        song = synthesize_song(SongConfig(seconds=6.0, seed=seed, backing=True, stereo=True))
        features = MelEncoder().encode(to_mono(song.mix), song.sample_rate, 25)
        sampled = model.generate(features, steps=50, seed=0).exp[:, jaw].numpy()
        truth = motion_from_song(song, fps=25.0, seed=seed).exp[:, jaw].numpy()  # jaw from the vowel energy
        frames = min(len(sampled), len(truth))
        correlations.append(np.corrcoef(sampled[:frames], truth[:frames])[0, 1])
    assert min(correlations) > 0.4, f"jaw vs sung vowels correlation per song: {np.round(correlations, 3)}"
