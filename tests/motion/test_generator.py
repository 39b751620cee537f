"""MotionModel: exp + pose DiTs (or one joint DiT) from audio features to a SingerMotion; audio checks,
row reduction, normalisation and scales, determinism, progress and save/load."""

import json
import math

import numpy as np
import pytest
import torch

from singer_core.audio.encoders import MEL_ENCODER_NAME, MelEncoder
from singer_core.audio.features import SingerAudioFeatures
from singer_core.face.motion_types import SingerMotion
from singer_core.motion.dit import MotionDiT
from singer_core.motion.generator import MotionModel, MotionModelConfig, reduce_audio_rows


def tiny_config(**changes) -> MotionModelConfig:
    base = dict(audio_encoder=MEL_ENCODER_NAME, audio_rows=16, audio_width=80, audio_reduce="mean_rows", frames=8,
                width=16, layers=1, heads=2, time_dim=8)
    base.update(changes)
    return MotionModelConfig(**base)


def tiny_model(**changes) -> MotionModel:
    torch.manual_seed(0)
    return MotionModel(tiny_config(**changes)).eval()


def features(frames=21, encoder=MEL_ENCODER_NAME, rows=16, width=80, fps=25.0) -> SingerAudioFeatures:
    data = torch.randn(frames, rows, width, generator=torch.Generator().manual_seed(frames))
    return SingerAudioFeatures(data, fps=fps, encoder=encoder, sample_rate=16000,
                               num_samples=int(frames / fps * 16000), rows="steps")


def test_reduce_audio_rows_against_numpy():
    data = torch.randn(5, 3, 4)
    values = data.numpy()
    np.testing.assert_allclose(reduce_audio_rows(data, "flatten").numpy(), values.reshape(5, 12))
    np.testing.assert_allclose(reduce_audio_rows(data, "mean_rows").numpy(), values.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(reduce_audio_rows(data, "last_row").numpy(), values[:, 2])
    assert reduce_audio_rows(data[None], "flatten").shape == (1, 5, 12)
    with pytest.raises(ValueError, match="reduce must be one of"):
        reduce_audio_rows(data, "sum")
    assert tiny_config(audio_reduce="flatten").audio_dim == 1280 and tiny_config().audio_dim == 80


def test_generate_from_mel_encoder_features():
    model = tiny_model(audio_reduce="flatten")
    seconds, rate = 1.3, 16000
    time = torch.arange(int(seconds * rate)) / rate
    waveform = (0.3 * torch.sin(2 * math.pi * 220 * time))[None]
    encoded = MelEncoder().encode(waveform, rate, 25)
    motion = model.generate(encoded, steps=3, seed=1)
    assert isinstance(motion, SingerMotion) and motion.frames == encoded.frames and motion.fps == 25.0
    assert motion.exp.shape == (encoded.frames, 64) and motion.angle.shape == (encoded.frames, 3)
    assert motion.trans.shape == (encoded.frames, 3) and motion.exp.dtype == torch.float32


def test_generate_is_deterministic_for_a_seed_and_reports_progress():
    model = tiny_model()
    calls = []
    first = model.generate(features(), steps=3, seed=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]  # exp DiT steps then pose DiT steps
    again = model.generate(features(), steps=3, seed=2)
    other = model.generate(features(), steps=3, seed=3)
    torch.testing.assert_close(again.exp, first.exp, atol=0, rtol=0)
    torch.testing.assert_close(again.angle, first.angle, atol=0, rtol=0)
    assert not torch.allclose(other.exp, first.exp)
    with pytest.raises(KeyboardInterrupt):
        model.generate(features(), steps=3, progress=lambda done, total: (_ for _ in ()).throw(KeyboardInterrupt))


def test_scales_multiply_the_deviation_from_the_mean():
    model = tiny_model()
    generator = torch.Generator().manual_seed(0)
    exp_mean, exp_std = torch.randn(64, generator=generator), torch.rand(64, generator=generator) + 0.5
    pose_mean, pose_std = torch.randn(6, generator=generator), torch.rand(6, generator=generator) + 0.5
    model.set_normalization(exp_mean, exp_std, pose_mean, pose_std)
    base = model.generate(features(), steps=2, seed=5)
    doubled = model.generate(features(), steps=2, seed=5, expression_scale=2.0, pose_scale=0.5)
    still = model.generate(features(), steps=2, seed=5, expression_scale=0.0, pose_scale=0.0)
    torch.testing.assert_close(doubled.exp - exp_mean, 2 * (base.exp - exp_mean), atol=1e-5, rtol=1e-5)
    base_pose = torch.cat([base.angle, base.trans], 1)
    torch.testing.assert_close(torch.cat([doubled.angle, doubled.trans], 1) - pose_mean,
                               0.5 * (base_pose - pose_mean), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(still.exp, exp_mean.expand(21, -1))
    torch.testing.assert_close(still.trans, pose_mean[3:].expand(21, -1))


def test_normalize_round_trip_and_statistics_checked():
    model = tiny_model()
    model.set_normalization(torch.full((64,), 2.0), torch.full((64,), 4.0), torch.zeros(6), torch.zeros(6))
    exp, pose = torch.randn(3, 64), torch.randn(3, 6)
    normalized_exp, normalized_pose = model.normalize(exp, pose)
    torch.testing.assert_close(normalized_exp, (exp - 2) / 4)
    torch.testing.assert_close(torch.stack(model.denormalize(normalized_exp, normalized_pose)[1:]), pose[None],
                               atol=1e-6, rtol=1e-6)  # a zero std is raised to min_std, still invertible
    with pytest.raises(ValueError, match=r"exp_mean must be finite and shaped \(64,\)"):
        model.set_normalization(torch.zeros(63), torch.ones(64), torch.zeros(6), torch.ones(6))


def test_refuses_features_of_another_encoder_or_shape():
    model = tiny_model()
    with pytest.raises(ValueError, match="'facebook/wav2vec2-base-960h'.*'mel-80'"):
        model.generate(features(encoder="facebook/wav2vec2-base-960h", rows=12, width=768), steps=2)
    with pytest.raises(ValueError, match="12 rows x 80 width.*16 x 80"):
        model.audio_vector(features(rows=12))


def test_joint_ablation_and_predict_x0_shapes():
    joint = tiny_model(joint=True)
    assert hasattr(joint, "joint_dit") and not hasattr(joint, "exp_dit")
    assert joint.joint_dit.config.motion_dim == 70
    calls = []
    motion = joint.generate(features(frames=9), steps=2, progress=lambda d, t: calls.append((d, t)))
    assert motion.frames == 9 and calls == [(1, 2), (2, 2)]
    separate = tiny_model()
    for model in (joint, separate):
        exp0, pose0 = model.predict_x0(torch.randn(2, 8, 64), torch.randn(2, 8, 6), torch.tensor([1, 999]),
                                       torch.randn(2, 8, 80))
        assert exp0.shape == (2, 8, 64) and pose0.shape == (2, 8, 6)


def test_save_load_round_trip_and_mismatches_refused(tmp_path):
    model = tiny_model()
    model.set_normalization(torch.randn(64), torch.rand(64) + 0.1, torch.randn(6), torch.rand(6) + 0.1)
    model.set_audio_normalization(torch.randn(80), torch.rand(80) + 0.5)
    model.save_pretrained(tmp_path / "motion")
    loaded = MotionModel.from_pretrained(tmp_path / "motion")
    assert loaded.config == model.config
    a, b = model.generate(features(), steps=2, seed=9), loaded.generate(features(), steps=2, seed=9)
    torch.testing.assert_close(b.exp, a.exp, atol=0, rtol=0)
    torch.testing.assert_close(b.trans, a.trans, atol=0, rtol=0)
    with pytest.raises(ValueError, match="'MotionModel' model"):
        MotionDiT.from_pretrained(tmp_path / "motion")
    payload = json.loads((tmp_path / "motion" / "config.json").read_text())
    payload["config"]["joint"] = True
    (tmp_path / "motion" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="missing.*joint_dit"):
        MotionModel.from_pretrained(tmp_path / "motion")
    assert MotionModelConfig.from_json(tiny_config(mask_k=None).to_json()) == tiny_config(mask_k=None)


def test_audio_vector_is_reduced_and_standardized():
    model = tiny_model()
    given = features(frames=6)
    mean, std = torch.randn(80), torch.rand(80) + 0.5
    model.set_audio_normalization(mean, std)
    expected = (given.features.double().numpy().mean(axis=1) - mean.double().numpy()) / std.double().numpy()
    np.testing.assert_allclose(model.audio_vector(given).double().numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"audio_std must be finite and shaped \(80,\)"):
        model.set_audio_normalization(mean, torch.ones(81))
