"""check_features, the one check of song features against a model (singer_core/audio/features.py): each
expectation refused with what is wrong and how to re-encode, and the callers (motion model, SINGER pipeline) going
through it."""

from __future__ import annotations

import pytest
import torch

from singer_core.audio.encoders import MEL_ENCODER_NAME
from singer_core.audio.features import SingerAudioFeatures, check_features, same_encoder


def _features(rows: int = 16, width: int = 80, fps: float = 25.0, encoder: str = MEL_ENCODER_NAME,
              layout: str = "steps") -> SingerAudioFeatures:
    return SingerAudioFeatures(torch.zeros(5, rows, width), fps=fps, encoder=encoder, sample_rate=16000,
                               num_samples=3200, rows=layout)


def test_each_expectation_is_refused_with_the_fix():
    good = _features()
    assert check_features(good, "Who", encoder=MEL_ENCODER_NAME, fps=25.0, shape=(16, 80), rows="steps") is good
    with pytest.raises(ValueError, match=r"^Who: the audio features come from encoder 'x/hubert', but this model was "
                                         r"trained on 'mel-80'; encode the audio with 'mel-80'$"):
        check_features(_features(encoder="x/hubert"), "Who", encoder=MEL_ENCODER_NAME)
    with pytest.raises(ValueError, match=r"^Who: the audio features are at 30 fps, but 'anna' renders 25 fps \(the "
                                         r"result would play 1.20x too fast or slow against the song\); encode the "
                                         r"audio at fps=25$"):
        check_features(_features(fps=30.0), "Who", fps=25.0, fps_owner="'anna' renders")
    assert check_features(_features(fps=25.0005), "Who", fps=25.0, fps_tolerance=1e-3).fps == 25.0005
    with pytest.raises(ValueError, match=r"^Who: the audio features have 12 rows x 768 width per frame \(\(frames, 12, "
                                         r"768\) from 'w2v'\), but the net takes 16 x 80 \(\(frames, 16, 80\) from "
                                         r"'mel-80'\); encode the song with the encoder it was trained with"):
        check_features(_features(12, 768, encoder="w2v"), "Who", model="the net", trained_on=MEL_ENCODER_NAME,
                       shape=(16, 80))
    with pytest.raises(ValueError, match=r"^Who: the audio features from 'w2v' have rows='steps', but this model takes "
                                         r"rows='layers'; encode with layers='all'"):
        check_features(_features(encoder="w2v"), "Who", rows="layers")
    with pytest.raises(ValueError, match="Who: expected SingerAudioFeatures .* got Tensor"):
        check_features(torch.zeros(5, 16, 80), "Who")


def test_encoder_ids_match_by_their_last_path_component():
    assert same_encoder("facebook/wav2vec2-base-960h", "/models/audio_encoders/Wav2Vec2-Base-960h/")
    assert same_encoder(MEL_ENCODER_NAME, MEL_ENCODER_NAME)
    assert not same_encoder("facebook/wav2vec2-base-960h", "facebook/hubert-large-ls960-ft")


def test_the_motion_model_checks_through_it():
    from singer_core.motion.generator import MotionModel, MotionModelConfig

    model = MotionModel(MotionModelConfig(audio_rows=16, audio_width=80, audio_reduce="mean_rows", frames=8,
                                          layers=1, width=16, heads=2, fps=25.0))
    with pytest.raises(ValueError, match="^MotionModel: the audio features are at 30 fps, but this model was trained "
                                         "at 25 fps"):
        model.audio_vector(_features(fps=30.0))
    assert model.audio_vector(_features()).shape == (5, 80)
