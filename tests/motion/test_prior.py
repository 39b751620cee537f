"""The motion model's data-range prior: the trainer stores the per-coefficient range of the training motion,
generate() keeps samples inside it (widened by a margin), and files written before the prior still load."""

from __future__ import annotations

import pytest
import torch

from singer_core.audio.encoders import MEL_ENCODER_NAME
from singer_core.audio.features import SingerAudioFeatures
from singer_core.motion.generator import MotionModel, MotionModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_model():
    torch.manual_seed(0)
    return MotionModel(MotionModelConfig(width=16, layers=1, heads=2, time_dim=8, frames=8)).eval()


def features(frames=20):
    return SingerAudioFeatures(features=torch.randn(frames, 16, 80, generator=torch.Generator().manual_seed(1)),
                               fps=25.0, encoder=MEL_ENCODER_NAME, sample_rate=16000, num_samples=frames * 640, rows="steps")


def test_generate_stays_inside_the_widened_training_range(tmp_path):
    model = tiny_model()
    exp, pose = torch.randn(50, 64) * 0.01, torch.randn(50, 6) * 0.01  # a narrow training range
    model.set_data_range(exp, pose)
    free = model.generate(features(), steps=4, seed=0, data_prior=False)
    boxed = model.generate(features(), steps=4, seed=0, prior_margin=0.1)
    width_exp, width_pose = exp.amax(0) - exp.amin(0), pose.amax(0) - pose.amin(0)
    low_exp = exp.amin(0) - (0.1 * width_exp).clamp(min=0.1 * model.exp_std)
    high_exp = exp.amax(0) + (0.1 * width_exp).clamp(min=0.1 * model.exp_std)
    assert bool(((free.exp < low_exp) | (free.exp > high_exp)).any())  # the untrained model leaves the range
    assert bool(((boxed.exp >= low_exp - 1e-5) & (boxed.exp <= high_exp + 1e-5)).all())
    pose_boxed = torch.cat([boxed.angle, boxed.trans], 1)
    pad = (0.1 * width_pose).clamp(min=0.1 * model.pose_std)
    assert bool(((pose_boxed >= pose.amin(0) - pad - 1e-5) & (pose_boxed <= pose.amax(0) + pad + 1e-5)).all())
    model.save_pretrained(tmp_path / "model")
    loaded = MotionModel.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(loaded.exp_high, model.exp_high)
    torch.testing.assert_close(loaded.generate(features(), steps=4, seed=0, prior_margin=0.1).exp, boxed.exp)


def test_a_file_without_the_range_loads_and_samples_as_before(tmp_path):
    from singer_core.io.checkpoint import load_tensors, save_tensors

    model = tiny_model()
    model.save_pretrained(tmp_path / "old")
    state = {k: v for k, v in load_tensors(tmp_path / "old" / "model.safetensors", finite=False).items()
             if k not in MotionModel.optional_keys}
    save_tensors(tmp_path / "old" / "model.safetensors", state)
    loaded = MotionModel.from_pretrained(tmp_path / "old")
    assert loaded.data_range() is None
    torch.testing.assert_close(loaded.generate(features(), steps=3, seed=2).exp,
                               model.generate(features(), steps=3, seed=2, data_prior=False).exp)
    state.pop("exp_mean")
    save_tensors(tmp_path / "old" / "model.safetensors", state)
    with pytest.raises(ValueError, match="exp_mean"):  # every other key stays strict
        MotionModel.from_pretrained(tmp_path / "old")
