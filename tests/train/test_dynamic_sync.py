"""The dynamic-sync training task (DAMC §2.2 E_d + D_lip) on a tiny SynthSinger (generated once for the module)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from singer_core.data.format import read_clip, read_index
from singer_core.io.checkpoint import load_tensors
from singer_core.train.dynamic_sync import DynamicSyncTask, DynamicSyncTrainConfig
from singer_core.train.loop import train

SMALL = {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "log_every": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("singer-cache")


def reference_mouth(landmarks: np.ndarray) -> np.ndarray:
    """float64 per-frame loop: mouth points 48..67 about the mouth-corner midpoint, in the frame whose x axis
    runs from outer eye corner 36 to 45, in units of that eye distance."""
    out = np.empty((landmarks.shape[0], 20, 2))
    for t, points in enumerate(landmarks.astype(np.float64)):
        eye = points[45] - points[36]
        angle = np.arctan2(eye[1], eye[0])
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        origin = (points[48] + points[54]) / 2
        out[t] = (points[48:68] - origin) @ rotation.T / np.hypot(*eye)
    return out


def test_tiny_run_exports_a_loadable_encoder(cache, tmp_path):
    from singer_core.nerf.dynamic_sync import DynamicSyncEncoder

    seen = []
    final = train("dynamic-sync", config=SMALL, out=tmp_path / "run", device="cpu", cache_dir=cache, quiet=True,
                  progress=lambda step, total, scalars: seen.append(scalars))
    assert final == tmp_path / "run" / "final"
    model = DynamicSyncEncoder.from_pretrained(final)
    tiny = DynamicSyncTask.presets["tiny"]
    assert (model.config.channels, model.config.embed_dim, model.config.sync_dim, model.config.hidden) == \
        (tiny.channels, tiny.embed_dim, tiny.sync_dim, tiny.hidden) == ((4, 8), 16, 8, 32)
    assert (model.config.mel_steps, model.config.mel_bins, model.config.mouth_frames) == (16, 80, 5)
    assert len(seen) == 4
    assert {"loss", "sync", "mel", "mouth", "p_sync_positive", "p_sync_negative"} <= set(seen[-1])
    assert all(0.0 <= s["p_sync_positive"] <= 1.0 and 0.0 <= s["p_sync_negative"] <= 1.0 for s in seen)
    # loss = sync + mel + mouth with the default unit weights (logged before the step's update)
    assert seen[0]["loss"] == pytest.approx(seen[0]["sync"] + seen[0]["mel"] + seen[0]["mouth"], rel=1e-5)

    # the exported E_d encodes a song's mel windows
    from singer_core.audio.encoders import MelEncoder

    root = next(cache.glob("synthsinger-*"))
    clip = read_clip(root / read_index(root).test[0])
    features = MelEncoder().encode(clip.audio, clip.meta.sample_rate, clip.meta.fps)
    codes = model.encode_windows(features.features)
    assert codes.shape == (clip.meta.frames, 16) and bool(torch.isfinite(codes).all())


def test_batches_hold_aligned_and_shifted_windows(cache):
    from singer_core.audio.encoders import MelEncoder

    config = DynamicSyncTask.presets["tiny"]
    parts = DynamicSyncTask().build(config, None, cache, torch.device("cpu"))
    data = parts.data
    root = next(cache.glob("synthsinger-*"))
    assert data.clips.clip_ids == read_index(root).train  # every train clip has landmarks
    clips = {}
    for clip_id in data.clips.clip_ids:  # read and computed independently of the task
        clip = read_clip(root / clip_id)
        mouth = reference_mouth(clip.landmarks["landmarks"].numpy())
        mel = MelEncoder().encode(clip.audio, clip.meta.sample_rate, clip.meta.fps).features.numpy()
        clips[clip_id] = ((mouth - mouth.mean(0)) * config.mouth_scale, mel)

    batch = data.batch(3)
    again = data.batch(3)
    assert all(torch.equal(batch[key], again[key]) for key in batch)
    assert batch["mel"].shape == (config.batch_size, 16, 80)
    assert batch["mouth"].shape == batch["negative_mouth"].shape == (config.batch_size, 5, 20, 2)

    pairs = set()
    for step in range(12):
        batch = data.batch(step)
        for b in range(config.batch_size):
            clip_id = data.clips.clip_ids[int(batch["clip"][b])]
            mouth, mel = clips[clip_id]
            start, other = int(batch["start"][b]), int(batch["negative_start"][b])
            frames = mouth.shape[0]
            assert 0 <= start <= frames - 5 and 0 <= other <= frames - 5 and abs(other - start) >= 5
            np.testing.assert_allclose(batch["mouth"][b].numpy(), mouth[start:start + 5], atol=2e-4)
            np.testing.assert_allclose(batch["negative_mouth"][b].numpy(), mouth[other:other + 5], atol=2e-4)
            np.testing.assert_allclose(batch["mel"][b].numpy(), mel[start], atol=1e-4)
            pairs.add((start, other))
    # the off-sync start is drawn: not a fixed function of the aligned one
    by_start = {}
    for start, other in pairs:
        by_start.setdefault(start, set()).add(other)
    assert any(len(others) > 1 for others in by_start.values())
    assert any(other < start for start, other in pairs) and any(other > start for start, other in pairs)


def test_resume_is_bit_identical(cache, tmp_path):
    config = {**SMALL, "steps": 6, "checkpoint_every": 3}
    straight = train(DynamicSyncTask, config=config, out=tmp_path / "a", device="cpu", cache_dir=cache, quiet=True)
    stopped = train(DynamicSyncTask, config=config, out=tmp_path / "b", max_steps=3, device="cpu", cache_dir=cache,
                    quiet=True)
    assert stopped.name == "step-0000003"
    resumed = train(DynamicSyncTask, out=tmp_path / "b", resume=True, device="cpu", cache_dir=cache, quiet=True)
    a, b = load_tensors(straight / "model.safetensors"), load_tensors(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_registry_and_config_checks():
    """(Its help text is checked with every task's in tests/test_cli_help.py.)"""
    from singer_core.train import TASKS, task_class

    assert task_class("dynamic-sync") is DynamicSyncTask and "dynamic-sync" in TASKS
    assert DynamicSyncTrainConfig.from_json(DynamicSyncTask.presets["tiny"].to_json()) == \
        DynamicSyncTask.presets["tiny"]
    with pytest.raises(ValueError, match="mel-80"):
        DynamicSyncTrainConfig(audio_encoder="facebook/hubert-large-ls960-ft")
    with pytest.raises(ValueError, match="min_shift"):
        DynamicSyncTrainConfig(min_shift=0)
    with pytest.raises(ValueError, match="channels"):
        DynamicSyncTrainConfig(channels=())
