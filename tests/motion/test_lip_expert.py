"""Lip expert: mouth vertex choice, mouth motion vs the morphable model, P_sync = cosine (FD2Talk eq. 10),
L_sync = -log P_sync (eq. 11), the BCE expert loss, gradients and save/load."""

import numpy as np
import pytest
import torch

from singer_core.face.procedural import procedural_model
from singer_core.motion.lip_expert import (
    LipExpert,
    LipExpertConfig,
    mouth_motion,
    mouth_vertex_indices,
    sync_loss,
    sync_probability,
)


@pytest.fixture(scope="module")
def face():
    return procedural_model(seed=0)


def test_mouth_vertices_are_spread_over_the_mouth(face):
    indices = mouth_vertex_indices(face, count=48)
    assert indices.dtype == torch.int64 and indices.shape == (48,)
    assert len(set(indices.tolist())) == 48
    torch.testing.assert_close(mouth_vertex_indices(face, count=48), indices)  # deterministic
    shape = face.mean_shape.double().numpy()
    mouth = face.landmarks68[48:68].numpy()
    assert set(mouth.tolist()) <= set(indices.tolist())  # the mouth landmarks themselves are included
    width = np.linalg.norm(shape[mouth[0]] - shape[mouth[6]])
    for vertex in indices.tolist():  # every vertex lies near the mouth landmarks
        assert np.linalg.norm(shape[mouth] - shape[vertex], axis=1).min() <= 0.35 * width + 1e-9
    with pytest.raises(ValueError, match="lower count"):
        mouth_vertex_indices(face, count=10 ** 6)


def test_mouth_motion_is_the_vertex_displacement_from_neutral(face):
    indices = mouth_vertex_indices(face, count=32)
    generator = torch.Generator().manual_seed(0)
    identity, exp = torch.randn(3, 80, generator=generator), torch.randn(3, 64, generator=generator)
    expected = (face.vertices(identity, exp) - face.vertices(identity, torch.zeros(3, 64)))[:, indices]
    torch.testing.assert_close(mouth_motion(face, exp, indices), expected, atol=1e-5, rtol=1e-4)
    assert mouth_motion(face, exp[None].expand(2, -1, -1), indices).shape == (2, 3, 32, 3)


def test_sync_probability_and_loss_are_eq10_eq11():
    a, v = torch.rand(6, 12, dtype=torch.float64), torch.rand(6, 12, dtype=torch.float64)
    an, vn = a.numpy(), v.numpy()
    cosine = (an * vn).sum(1) / np.maximum(np.linalg.norm(an, axis=1) * np.linalg.norm(vn, axis=1), 1e-8)
    np.testing.assert_allclose(sync_probability(a, v).numpy(), cosine, rtol=1e-12)
    np.testing.assert_allclose(float(sync_loss(sync_probability(a, v))), np.mean(-np.log(cosine)), rtol=1e-12)
    zero = torch.zeros(1, 12, dtype=torch.float64)
    assert float(sync_probability(zero, v[:1])) == 0.0  # eps guard, no NaN
    assert np.isfinite(float(sync_loss(sync_probability(zero, v[:1]))))


def tiny_expert(**changes):
    torch.manual_seed(0)
    config = LipExpertConfig(**{**dict(audio_dim=20, mouth_vertices=8, window=5, hidden=16, embedding=8,
                                       layers=2), **changes})
    return LipExpert(config)


def test_expert_loss_is_minus_log_cosine_and_gradients_flow(face):
    expert = tiny_expert().eval()
    indices = mouth_vertex_indices(face, count=8)
    audio = torch.randn(4, 5, 20)
    exp = (0.5 * torch.randn(4, 5, 64)).requires_grad_(True)
    mouth = mouth_motion(face, exp, indices)
    audio_embedding, mouth_embedding = expert.embed_audio(audio), expert.embed_mouth(mouth)
    assert audio_embedding.shape == (4, 8) and bool((audio_embedding >= 0).all())
    norms = audio_embedding.norm(dim=1)
    assert bool(((norms - 1).abs() < 1e-5).all() | (norms == 0).all())
    a, v = audio_embedding.detach().double().numpy(), mouth_embedding.detach().double().numpy()
    cosine = (a * v).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(v, axis=1), 1e-8)
    loss = expert.sync_loss(audio, mouth)
    np.testing.assert_allclose(float(loss.detach()), np.mean(-np.log(np.clip(cosine, 1e-7, 1))), rtol=1e-5)
    loss.backward()
    assert exp.grad is not None and float(exp.grad.abs().sum()) > 0  # reaches the predicted expression
    assert all(p.grad is not None for p in expert.mouth_head.parameters())


def test_contrastive_loss_is_bce_on_p_sync():
    expert = tiny_expert()
    audio, mouth = torch.randn(6, 5, 20), torch.randn(6, 5, 8, 3)
    labels = torch.tensor([1, 0, 1, 0, 1, 1.0])
    loss = expert.contrastive_loss(audio, mouth, labels)
    p = np.clip(expert(audio, mouth).detach().double().numpy(), 1e-7, 1 - 1e-7)
    y = labels.double().numpy()
    np.testing.assert_allclose(float(loss.detach()), np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))), rtol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in expert.audio_tower.parameters())


def test_expert_refuses_wrong_shapes():
    expert = tiny_expert()
    with pytest.raises(ValueError, match=r"\(B, 5, 20\)"):
        expert.embed_audio(torch.randn(2, 4, 20))
    with pytest.raises(ValueError, match=r"\(B, 5, 8, 3\)"):
        expert.embed_mouth(torch.randn(2, 5, 9, 3))


def test_expert_save_load_round_trip(tmp_path):
    expert = tiny_expert().eval()
    expert.save_pretrained(tmp_path / "lip")
    loaded = LipExpert.from_pretrained(tmp_path / "lip")
    audio, mouth = torch.randn(3, 5, 20), torch.randn(3, 5, 8, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(audio, mouth), expert(audio, mouth), atol=0, rtol=0)
    assert loaded.config == expert.config


def test_sliding_windows_against_python_slices():
    from singer_core.motion.lip_expert import sliding_windows

    sequence = torch.randn(2, 9, 4, 3)
    got = sliding_windows(sequence, 5, stride=2)
    expected = torch.stack([sequence[b, n:n + 5] for b in range(2) for n in range(0, 5, 2)])
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert sliding_windows(torch.randn(3, 25, 7), 5).shape == (3 * 21, 5, 7)
    with pytest.raises(ValueError, match="F >= window"):
        sliding_windows(torch.randn(1, 4, 2), 5)
