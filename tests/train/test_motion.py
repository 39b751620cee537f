"""The motion and lip-expert training tasks on a tiny SynthSinger (generated once for the module)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from singer_core.audio.encoders import MEL_ENCODER_NAME
from singer_core.data.format import read_clip, read_index
from singer_core.io.checkpoint import load_tensors
from singer_core.train.lip_expert import LipExpertTask, SyncPairs
from singer_core.train.loop import seed_everything, train
from singer_core.train.motion import MotionTask

SMALL = {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("singer-cache")


@pytest.fixture(scope="module")
def expert_folder(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("lip-expert-run")
    return train("lip-expert", config=SMALL, out=out, device="cpu", cache_dir=cache, quiet=True)


def test_motion_tiny_run_exports_a_loadable_model(cache, tmp_path):
    from singer_core.audio.encoders import MelEncoder
    from singer_core.motion.generator import MotionModel

    seen = []
    final = train("motion", config=SMALL, out=tmp_path / "run", device="cpu", cache_dir=cache, quiet=True,
                  progress=lambda step, total, scalars: seen.append(scalars))
    model = MotionModel.from_pretrained(final)
    assert (model.config.layers, model.config.width, model.config.audio_encoder) == (2, 32, MEL_ENCODER_NAME)
    assert len(seen) == 4 and {"loss_exp", "loss_pose", "grad_norm"} <= set(seen[0]) and "loss_sync" not in seen[0]

    # normalisation statistics: float64 numpy over every frame of the train split, read independently
    root = next(cache.glob("synthsinger-*"))
    coeffs = [read_clip(root / clip_id).coeffs for clip_id in read_index(root).train]
    exp = np.concatenate([c["exp"].double().numpy() for c in coeffs])
    pose = np.concatenate([np.concatenate([c["angle"].double().numpy(), c["trans"].double().numpy()], 1)
                           for c in coeffs])
    np.testing.assert_allclose(model.exp_mean.numpy(), exp.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.pose_std.numpy(), np.maximum(pose.std(0), 1e-4), rtol=1e-4, atol=1e-6)

    # the exported model generates from features of the same encoder
    clip = read_clip(root / read_index(root).test[0])
    features = MelEncoder().encode(clip.audio, clip.meta.sample_rate, clip.meta.fps)
    motion = model.generate(features, steps=2)
    assert motion.exp.shape == (clip.meta.frames, 64) and bool(torch.isfinite(motion.exp).all())


def test_motion_task_resumes_bit_identically(cache, tmp_path):
    config = {**SMALL, "dropout": 0.1}
    straight = train(MotionTask, config=config, out=tmp_path / "a", device="cpu", cache_dir=cache, quiet=True)
    train(MotionTask, config=config, out=tmp_path / "b", max_steps=2, device="cpu", cache_dir=cache, quiet=True)
    resumed = train(MotionTask, out=tmp_path / "b", resume=True, device="cpu", cache_dir=cache, quiet=True)
    a, b = load_tensors(straight / "model.safetensors"), load_tensors(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_motion_batches_are_normalised_windows(cache):
    config = MotionTask.presets["tiny"]
    task = MotionTask()
    parts = task.build(config, None, cache, torch.device("cpu"))
    data = parts.data
    batch = data.batch(3)
    again = data.batch(3)
    assert all(torch.equal(batch[key], again[key]) for key in batch)
    assert batch["exp"].shape == (config.batch_size, config.frames, 64) and batch["audio"].shape[-1] == 1280
    number, start = data.windows[data.sampler.indices(3)[0]]
    raw = data.clips.exp[number][start:start + config.frames]
    model = parts.trainable["motion"].model
    torch.testing.assert_close(batch["exp"][0] * model.exp_std + model.exp_mean, raw, rtol=1e-5, atol=1e-5)
    assert int(batch["t"].min()) >= 0 and int(batch["t"].max()) < 1000


def test_sync_loss_matches_a_per_window_reference(cache, expert_folder):
    from singer_core.face.procedural import procedural_model
    from singer_core.motion.lip_expert import LipExpert, mouth_motion, mouth_vertex_indices

    config = dataclasses.replace(MotionTask.presets["tiny"], lip_expert=str(expert_folder), lambda_sync=0.5,
                                 batch_size=2)
    task = MotionTask()
    seed_everything(0)
    parts = task.build(config, None, cache, torch.device("cpu"))
    models = {**parts.trainable, **parts.frozen}
    batch = parts.data.batch(0)
    loss, scalars = task.loss(models, batch)
    assert "loss_sync" in scalars

    # reference: one window at a time, through mouth_motion and LipExpert.sync_loss
    expert = LipExpert.from_pretrained(expert_folder)
    face = procedural_model(seed=0)
    indices = mouth_vertex_indices(face, count=expert.config.mouth_vertices)
    model = parts.trainable["motion"].model
    with torch.no_grad():
        alpha_bar = model.schedule.alphas_cumprod[batch["t"]].float().view(-1, 1, 1)
        exp_t = alpha_bar.sqrt() * batch["exp"] + (1 - alpha_bar).sqrt() * batch["noise_exp"]
        pose_t = alpha_bar.sqrt() * batch["pose"] + (1 - alpha_bar).sqrt() * batch["noise_pose"]
        exp0, _ = model.predict_x0(exp_t, pose_t, batch["t"], batch["audio"])
        exp_raw = exp0 * model.exp_std + model.exp_mean
        window, losses = expert.config.window, []
        for b in range(exp_raw.shape[0]):
            for s in range(config.frames - window + 1):
                mouth = mouth_motion(face, exp_raw[b, s:s + window], indices)[None]
                losses.append(float(expert.sync_loss(batch["audio"][b, s:s + window][None], mouth)))
    assert scalars["loss_sync"] == pytest.approx(float(np.mean(losses)), rel=1e-4)
    expected = scalars["loss_exp"] + scalars["loss_pose"] + 0.5 * scalars["loss_sync"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_motion_with_lip_expert_trains_and_refuses_a_mismatched_expert(cache, expert_folder, tmp_path):
    from singer_core.motion.lip_expert import LipExpert, LipExpertConfig

    seen = []
    train("motion", config={**SMALL, "steps": 2, "lip_expert": str(expert_folder)}, out=tmp_path / "run",
          device="cpu", cache_dir=cache, quiet=True, progress=lambda step, total, scalars: seen.append(scalars))
    assert all("loss_sync" in scalars for scalars in seen)
    other = LipExpert(LipExpertConfig(audio_dim=99)).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="same audio settings"):
        train("motion", config={**SMALL, "lip_expert": str(other)}, out=tmp_path / "bad", device="cpu",
              cache_dir=cache, quiet=True)


@pytest.mark.slow
def test_cli_trains_stops_and_resumes(cache, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    run = [sys.executable, "-m", "singer_core.train", "lip-expert", "--out", str(tmp_path / "run"), "--cache-dir",
           str(cache), "--device", "cpu", "--quiet", "--set", "steps=3", "--set", "checkpoint_every=2"]
    root = Path(__file__).resolve().parents[2]
    first = subprocess.run([*run, "--max-steps", "2"], cwd=root, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith("step-0000002")
    resumed = subprocess.run([*run, "--resume"], cwd=root, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().endswith("final") and (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_ablation_variant_joint_dit_without_mask(cache, tmp_path):
    from singer_core.motion.generator import MotionModel

    config = dataclasses.replace(MotionTask.presets["tiny"], joint=True, mask_k=None, lambda_sync=0.0)
    assert MotionTask.presets["paper-joint"].joint and MotionTask.presets["paper-no-mask"].mask_k is None
    assert MotionTask.presets["paper-no-sync"].lambda_sync == 0 and MotionTask.presets["paper"].layers == 6
    task = MotionTask()
    parts = task.build(config, None, cache, torch.device("cpu"))
    loss, scalars = task.loss({**parts.trainable, **parts.frozen}, parts.data.batch(0))
    loss.backward()
    model = parts.trainable["motion"].model
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    folder = task.export(parts.trainable, tmp_path / "final")
    loaded = MotionModel.from_pretrained(folder)
    assert loaded.config.joint and loaded.config.mask_k is None and not hasattr(loaded, "exp_dit")


def test_lip_expert_export_and_pairs(expert_folder):
    from singer_core.motion.lip_expert import LipExpert

    expert = LipExpert.from_pretrained(expert_folder)
    assert expert.config.audio_encoder == MEL_ENCODER_NAME and expert.config.hidden == 32

    # pairs on made-up tracks: positives aligned, negatives shifted by >= min_shift in the same clip
    config = dataclasses.replace(LipExpertTask.presets["tiny"], batch_size=16)
    frames = 30
    audio = [torch.arange(frames, dtype=torch.float32)[:, None].repeat(1, 3) + 100 * k for k in range(2)]
    mouth = [torch.arange(frames, dtype=torch.float32)[:, None, None].repeat(1, 2, 3) + 100 * k for k in range(2)]
    pairs = SyncPairs(audio, mouth, config)
    labels = []
    for step in range(6):
        batch = pairs.batch(step)
        first_audio, first_mouth = batch["audio"][:, 0, 0], batch["mouth"][:, 0, 0, 0]
        same_clip = (first_audio // 100) == (first_mouth // 100)
        shift = (first_audio - first_mouth).abs()
        assert bool(same_clip.all())
        assert bool((shift[batch["label"] == 1] == 0).all())
        assert bool((shift[batch["label"] == 0] >= config.min_shift).all())
        labels.append(batch["label"])
    share = float(torch.cat(labels).mean())
    assert 0.3 < share < 0.7
