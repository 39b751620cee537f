"""DAMC audio side, the Dynamic-Sync Encoder (DAMC §2.2): shapes and finite losses, the loss weights, a tiny
overfit that must score matched mouths above mismatched ones, save/load, and the similarity-invariant mouth
shape on a hand-built face."""

import math

import pytest
import torch

from singer_core.nerf.csfm import DamcAudioFusion
from singer_core.nerf.dynamic_sync import (
    DynamicSyncConfig,
    DynamicSyncEncoder,
    DynamicSyncLossConfig,
    dynamic_sync_losses,
    mouth_windows,
    normalized_mouth,
)

TINY_SYNC = DynamicSyncConfig(channels=(4, 8), embed_dim=16, sync_dim=8, hidden=32)


def _sync_batch(batch=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 16, 80, generator=generator) * 8 - 4
    mouth = torch.randn(batch, 5, 20, 2, generator=generator) * 0.1
    return mel, mouth


def test_dynamic_sync_encoder_shapes_and_losses_finite():
    torch.manual_seed(0)
    model = DynamicSyncEncoder(TINY_SYNC)
    mel, mouth = _sync_batch()
    assert model(mel).shape == (8, 16)
    assert model.reconstruct_mel(model(mel)).shape == (8, 16, 80)
    assert model.reconstruct_mouth(model(mel)).shape == (8, 5, 20, 2)
    p = model.sync_probability(mel, mouth)
    assert p.shape == (8,) and bool(((p >= 0) & (p <= 1 + 1e-6)).all())
    losses = dynamic_sync_losses(model, mel, mouth)
    for name, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value), name
    weights = DynamicSyncLossConfig(sync_weight=0.5, mel_weight=2.0, mouth_weight=0.0)
    weighted = dynamic_sync_losses(model, mel, mouth, weights=weights)
    torch.testing.assert_close(weighted["loss"], 0.5 * weighted["sync"] + 2.0 * weighted["mel"])
    with pytest.raises(ValueError, match=r"mel must be \(B, 16, 80\)"):
        model(mel[:, :15])
    with pytest.raises(ValueError, match=">= 2 windows"):
        dynamic_sync_losses(model, mel[:1], mouth[:1])


def test_dynamic_sync_losses_decrease_on_tiny_overfit():
    torch.manual_seed(0)
    model = DynamicSyncEncoder(TINY_SYNC)
    mel, mouth = _sync_batch()
    negative = mouth.roll(3, dims=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = {k: v.item() for k, v in dynamic_sync_losses(model, mel, mouth, negative_mouth=negative).items()}
    for _ in range(60):
        losses = dynamic_sync_losses(model, mel, mouth, negative_mouth=negative)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    last = {k: v.item() for k, v in dynamic_sync_losses(model, mel, mouth, negative_mouth=negative).items()}
    for term in ("loss", "sync", "mel", "mouth"):
        assert last[term] < 0.8 * first[term], (term, first[term], last[term])
    assert last["p_sync_positive"] > last["p_sync_negative"] + 0.2


def test_dynamic_sync_save_load_and_batched_encoding(tmp_path):
    torch.manual_seed(0)
    model = DynamicSyncEncoder(TINY_SYNC).eval()
    model.save_pretrained(tmp_path / "ed")
    loaded = DynamicSyncEncoder.from_pretrained(tmp_path / "ed")
    mel, _ = _sync_batch(batch=5)
    calls = []
    encoded = loaded.encode_windows(mel, batch_size=2, progress=lambda d, t: calls.append(d))
    torch.testing.assert_close(encoded, model(mel).detach(), rtol=1e-5, atol=1e-6)
    assert calls == [2, 4, 5]
    with pytest.raises(ValueError, match="DynamicSyncEncoder"):
        DamcAudioFusion.from_pretrained(tmp_path / "ed")


def test_normalized_mouth_is_similarity_invariant_and_windows():
    generator = torch.Generator().manual_seed(0)
    landmarks = torch.rand(3, 68, 2, generator=generator) * 100 + 50
    angle, scale, shift = 0.4, 1.7, torch.tensor([12.0, -30.0])
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = landmarks @ rotation.T * scale + shift
    torch.testing.assert_close(normalized_mouth(moved), normalized_mouth(landmarks), rtol=1e-4, atol=1e-5)
    # a hand-built face: eyes at (0,0) and (2,0), mouth corners at (0,3), (2,3); point 51 at (1, 2.5)
    face = torch.zeros(1, 68, 2)
    face[0, 45] = torch.tensor([2.0, 0.0])
    face[0, 48], face[0, 54], face[0, 51] = (
        torch.tensor([0.0, 3.0]),
        torch.tensor([2.0, 3.0]),
        torch.tensor([1, 2.5]),
    )
    mouth = normalized_mouth(face)
    assert mouth.shape == (1, 20, 2)
    torch.testing.assert_close(mouth[0, 51 - 48], torch.tensor([0.0, -0.25]))
    torch.testing.assert_close(mouth[0, 0], torch.tensor([-0.5, 0.0]))
    per_frame = torch.arange(6.0).reshape(6, 1, 1).expand(6, 20, 2)
    windows = mouth_windows(per_frame, torch.tensor([0, 4]), frames=5)
    assert windows[:, :, 0, 0].tolist() == [[0, 1, 2, 3, 4], [4, 5, 5, 5, 5]]
