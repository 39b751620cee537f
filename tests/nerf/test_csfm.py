"""DAMC audio side: CSFM (paper equations in float64), ER-NeRF smoothing, Dynamic-Sync Encoder losses."""

import math

import numpy as np
import pytest
import torch

from singer_core.nerf.csfm import (
    CSFM_MODES,
    AudioSmoothing,
    CsfmConfig,
    DamcAudioFusion,
    damc_audio_codes,
    temporal_windows,
)
from singer_core.nerf.dynamic_sync import (
    DynamicSyncConfig,
    DynamicSyncEncoder,
    DynamicSyncLossConfig,
    dynamic_sync_losses,
    mouth_windows,
    normalized_mouth,
)

TINY = dict(
    content_dim=12, content_rows=2, dynamic_dim=10, width=16, heads=2, ffn_mult=2, out_dim=6, window=4
)
TINY_SYNC = DynamicSyncConfig(channels=(4, 8), embed_dim=16, sync_dim=8, hidden=32)


def _inputs(batch=3, window=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    content = torch.randn(batch, window, 2, 12, generator=generator)
    dynamic = torch.randn(batch, window, 10, generator=generator)
    return content, dynamic


# ---- float64 reference of DAMC §2.2, written from the paper's equations ----


def _d(parameter):
    return parameter.detach().to(torch.float64)


def _linear(x, layer):
    return x @ _d(layer.weight).T + _d(layer.bias)


def _layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * _d(norm.weight) + _d(norm.bias)


def _attention(query_src, key_src, value_src, module, heads):
    """softmax(Q K^T / sqrt(d)) V per head, then the output projection; loops over batch and heads."""
    q, k, v = _linear(query_src, module.query), _linear(key_src, module.key), _linear(value_src, module.value)
    batch, tokens, width = q.shape
    head = width // heads
    out = torch.zeros(batch, tokens, width, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * head, (h + 1) * head)
            scores = q[b, :, cols] @ k[b, :, cols].T / math.sqrt(head)
            weights = torch.exp(scores - scores.max(-1, keepdim=True).values)
            weights = weights / weights.sum(-1, keepdim=True)
            out[b, :, cols] = weights @ v[b, :, cols]
    return _linear(out, module.out)


def _fsr(x, module, heads):
    normed = _layer_norm(x, module.norm_attention)
    hidden = x + _attention(normed, normed, normed, module.attention, heads)
    inner = _linear(_layer_norm(hidden, module.norm_ffn), module.ffn[0])
    inner = 0.5 * inner * (1.0 + torch.erf(inner / math.sqrt(2.0)))
    return hidden + _linear(inner, module.ffn[2])


def _reference_fuse(model, content, dynamic):
    heads, mode = model.config.heads, model.config.mode
    content = None if content is None else content.to(torch.float64)
    dynamic = None if dynamic is None else dynamic.to(torch.float64)
    if content is not None:
        content_vec = content.flatten(-2) if model.config.content_reduce == "flatten" else content.mean(-2)
    f_c1 = f_d1 = None
    if mode != "dynamic":
        f_c1 = _layer_norm(_linear(content_vec, model.proj_content[0]), model.proj_content[1])
    if mode != "content":
        f_d1 = _layer_norm(_linear(dynamic, model.proj_dynamic[0]), model.proj_dynamic[1])
    if mode == "content":
        return _linear(f_c1, model.head)
    if mode == "dynamic":
        return _linear(f_d1, model.head)
    if mode == "concat":
        return _linear(torch.cat([f_c1, f_d1], -1), model.merge)
    if mode == "cross":
        c3 = f_c1 + _attention(f_c1, f_d1, f_d1, model.attend_content, heads)
        d3 = f_d1 + _attention(f_d1, f_c1, f_c1, model.attend_dynamic, heads)
        return _linear(torch.cat([c3, d3], -1), model.merge)
    # f_c2 = CDCA(f_c1, f_d1): content is query AND key, dynamic is value; f_d2 the reverse
    f_c2 = _attention(f_c1, f_c1, f_d1, model.attend_content, heads)
    f_d2 = _attention(f_d1, f_d1, f_c1, model.attend_dynamic, heads)
    f_c3 = _fsr(f_c1 + f_c2, model.refine_content, heads)
    f_d3 = _fsr(f_d1 + f_d2, model.refine_dynamic, heads)
    return _linear(torch.cat([f_c3, f_d3], -1), model.merge)


def _reference_smoothing(module, codes):
    """ER-NeRF AudioAttNet as a float64 numpy loop: conv stack scores -> Linear -> softmax -> weighted sum."""
    codes = codes.detach().to(torch.float64).numpy()
    convs = [layer for layer in module.score if isinstance(layer, torch.nn.Conv1d)]
    out = np.zeros((codes.shape[0], codes.shape[2]))
    for b in range(codes.shape[0]):
        x = codes[b].T  # (D, W)
        for conv in convs:
            weight, bias = _d(conv.weight).numpy(), _d(conv.bias).numpy()
            width = x.shape[1]
            padded = np.concatenate([np.zeros((x.shape[0], 1)), x, np.zeros((x.shape[0], 1))], axis=1)
            y = np.zeros((weight.shape[0], width))
            for o in range(weight.shape[0]):
                for t in range(width):
                    y[o, t] = bias[o] + sum(
                        weight[o, i, k] * padded[i, t + k] for i in range(weight.shape[1]) for k in range(3)
                    )
            x = np.where(y > 0, y, 0.02 * y)
        scores = _d(module.mix.weight).numpy() @ x[0] + _d(module.mix.bias).numpy()
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        for t in range(codes.shape[1]):
            out[b] += weights[t] * codes[b, t]
    return out


# ---- CSFM ----


@pytest.mark.parametrize("mode", CSFM_MODES)
def test_fusion_matches_paper_equations_in_float64(mode):
    torch.manual_seed(1)
    model = DamcAudioFusion(CsfmConfig(mode=mode, **TINY)).to(torch.float64)
    content, dynamic = _inputs()
    got = model.fuse(
        content.double() if mode != "dynamic" else None, dynamic.double() if mode != "content" else None
    )
    expected = _reference_fuse(model, content, dynamic)
    assert got.shape == (3, 4, 6)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    smoothed = model(content.double(), dynamic.double())
    assert smoothed.shape == (3, 6)
    np.testing.assert_allclose(
        smoothed.detach().numpy(), _reference_smoothing(model.smoothing, got), rtol=1e-9, atol=1e-12
    )


def test_cdca_assignment_is_discriminating():
    """The float64 reference would fail if query/key/value sources were swapped (the test can fail)."""
    torch.manual_seed(2)
    model = DamcAudioFusion(CsfmConfig(mode="csfm", **TINY)).to(torch.float64)
    content, dynamic = _inputs(seed=3)
    c1 = model.proj_content(model.content_vector(content.double()))
    d1 = model.proj_dynamic(dynamic.double())
    paper = model.attend_content(c1, c1, d1)
    torch.testing.assert_close(paper, _attention(c1, c1, d1, model.attend_content, TINY["heads"]))
    for wrong in ((c1, d1, d1), (d1, d1, c1), (c1, d1, c1)):
        assert (paper - _attention(*wrong, model.attend_content, TINY["heads"])).abs().max() > 1e-3


def test_content_mean_reduction_and_ablation_inputs():
    torch.manual_seed(0)
    model = DamcAudioFusion(CsfmConfig(mode="content", content_reduce="mean", **TINY)).double()
    content, _ = _inputs()
    torch.testing.assert_close(model.fuse(content.double(), None), _reference_fuse(model, content, None))
    assert not hasattr(model, "proj_dynamic")
    dynamic_only = DamcAudioFusion(CsfmConfig(mode="dynamic", **TINY))
    assert not hasattr(dynamic_only, "proj_content")
    with pytest.raises(ValueError, match="content must be"):
        DamcAudioFusion(CsfmConfig(mode="csfm", **TINY))(None, _inputs()[1])
    with pytest.raises(ValueError, match="mode must be one of"):
        CsfmConfig(mode="sum")
    with pytest.raises(ValueError, match="divisible"):
        CsfmConfig(width=10, heads=4)


@pytest.mark.parametrize("mode", CSFM_MODES)
def test_gradients_reach_every_parameter(mode):
    torch.manual_seed(0)
    model = DamcAudioFusion(CsfmConfig(mode=mode, **TINY))
    content, dynamic = _inputs()
    content.requires_grad_(True)
    dynamic.requires_grad_(True)
    model(content, dynamic).square().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for tensor, used in ((content, mode != "dynamic"), (dynamic, mode != "content")):
        reached = tensor.grad is not None and bool(tensor.grad.abs().sum() > 0)
        assert reached == used


def test_fusion_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = DamcAudioFusion(CsfmConfig(mode="csfm", **TINY)).eval()
    model.save_pretrained(tmp_path / "fusion")
    loaded = DamcAudioFusion.from_pretrained(tmp_path / "fusion")
    assert loaded.config == model.config
    content, dynamic = _inputs()
    torch.testing.assert_close(loaded(content, dynamic), model(content, dynamic), rtol=0, atol=0)
    assert CsfmConfig.from_json(model.config.to_json()) == model.config


# ---- smoothing and windows ---------------------------------------------------------------------------------


def test_smoothing_equals_reference_loop():
    torch.manual_seed(4)
    module = AudioSmoothing(width=5, window=8).double()
    codes = torch.randn(2, 8, 5, dtype=torch.float64)
    np.testing.assert_allclose(
        module(codes).detach().numpy(), _reference_smoothing(module, codes), rtol=1e-10
    )
    weights = module.weights(codes)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, 8, D\)"):
        module(codes[:, :7])


def test_temporal_windows_follow_ernerf_rule():
    features = torch.randn(6, 3)
    windows = temporal_windows(features, 4)
    for i in range(6):
        for j in range(4):
            source = i - 2 + j  # frames i-4..i+3 for window 8; i-2..i+1 for window 4
            expected = features[source] if 0 <= source < 6 else torch.zeros(3)
            torch.testing.assert_close(windows[i, j], expected)
    torch.testing.assert_close(temporal_windows(features, 4, 2, 5), windows[2:5])


def test_damc_audio_codes_batches_like_one_call():
    torch.manual_seed(0)
    model = DamcAudioFusion(CsfmConfig(mode="csfm", **TINY)).eval()
    content, dynamic = torch.randn(7, 2, 12), torch.randn(7, 10)
    calls = []
    codes = damc_audio_codes(
        model,
        content=content,
        dynamic=dynamic,
        batch_size=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    whole = model(temporal_windows(content, 4), temporal_windows(dynamic, 4))
    torch.testing.assert_close(codes, whole, rtol=1e-5, atol=1e-6)
    assert calls == [(3, 7), (6, 7), (7, 7)]
    with pytest.raises(ValueError, match="different frame counts"):
        damc_audio_codes(model, content=content, dynamic=dynamic[:5])


# ---- Dynamic-Sync Encoder ----------------------------------------------------------------------------------


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
