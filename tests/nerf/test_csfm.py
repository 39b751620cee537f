"""DAMC audio side, CSFM: the fusion against the paper's equations in float64, ER-NeRF smoothing against a
reference loop, and its temporal windows (the Dynamic-Sync Encoder is tested in test_dynamic_sync.py)."""

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

TINY = dict(
    content_dim=12, content_rows=2, dynamic_dim=10, width=16, heads=2, ffn_mult=2, out_dim=6, window=4
)


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
