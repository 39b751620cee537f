"""MotionDiT: alignment mask (FD2Talk eq. 4) against a double loop, masked cross-attention against a float64
softmax reference, the mask's effect on a 1-layer model, shapes and save/load."""

import json

import numpy as np
import pytest
import torch

from singer_core.motion.dit import MotionDiT, MotionDiTConfig, alignment_mask


def tiny_config(**changes) -> MotionDiTConfig:
    base = dict(motion_dim=6, audio_dim=10, frames=8, max_frames=40, width=32, layers=2, heads=4, time_dim=16,
                mask_k=3)
    base.update(changes)
    return MotionDiTConfig(**base)


@pytest.mark.parametrize("frames,k", [(1, 3), (7, 0), (12, 3), (9, 20)])
def test_alignment_mask_matches_double_loop(frames, k):
    expected = np.zeros((frames, frames), dtype=bool)
    for i in range(frames):
        for j in range(frames):
            expected[i, j] = j - k <= i <= j + k  # eq. (4) as printed
    np.testing.assert_array_equal(alignment_mask(frames, k).numpy(), expected)
    assert alignment_mask(frames, None).all()


def test_cross_attention_matches_float64_softmax_reference():
    torch.manual_seed(0)
    model = MotionDiT(tiny_config(layers=1)).eval()
    attention = model.blocks[0].cross_attention
    x, context = torch.randn(2, 9, 32), torch.randn(2, 9, 32)
    mask = alignment_mask(9, 2)
    got = attention(x, context, mask).double().detach().numpy()
    # reference: per head softmax(q k^T / sqrt(d) with masked entries at -inf) v, in float64 numpy
    wq, bq = attention.to_q.weight.double().detach().numpy(), attention.to_q.bias.double().detach().numpy()
    wkv, bkv = attention.to_kv.weight.double().detach().numpy(), attention.to_kv.bias.double().detach().numpy()
    wo, bo = attention.out.weight.double().detach().numpy(), attention.out.bias.double().detach().numpy()
    xs, cs = x.double().numpy(), context.double().numpy()
    heads, dim = 4, 8
    expected = np.zeros_like(got)
    for b in range(2):
        q = xs[b] @ wq.T + bq
        kv = cs[b] @ wkv.T + bkv
        k, v = kv[:, :32], kv[:, 32:]
        merged = np.zeros((9, 32))
        for h in range(heads):
            cols = slice(h * dim, (h + 1) * dim)
            scores = q[:, cols] @ k[:, cols].T / np.sqrt(dim)
            scores[~mask.numpy()] = -np.inf
            weights = np.exp(scores - scores.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            merged[:, cols] = weights @ v[:, cols]
        expected[b] = merged @ wo.T + bo
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("mask_k", [3, 1])
def test_masked_model_ignores_audio_outside_window(mask_k):
    torch.manual_seed(1)
    model = MotionDiT(tiny_config(layers=1, mask_k=mask_k)).eval()
    frames, i = 16, 7
    x_t, t = torch.randn(1, frames, 6), torch.tensor([500])
    audio = torch.randn(1, frames, 10)
    far = torch.tensor([abs(i - j) > mask_k for j in range(frames)])
    perturbed_far = audio.clone()
    perturbed_far[:, far] += 5 * torch.randn(1, int(far.sum()), 10)
    perturbed_near = audio.clone()
    perturbed_near[:, i + mask_k] += 5 * torch.randn(10)
    with torch.no_grad():
        base = model(x_t, t, audio)
        out_far = model(x_t, t, perturbed_far)
        out_near = model(x_t, t, perturbed_near)
    torch.testing.assert_close(out_far[:, i], base[:, i], atol=1e-6, rtol=0)
    assert (out_near[:, i] - base[:, i]).abs().max() > 1e-3  # audio inside the window does matter


def test_unmasked_model_sees_far_audio():
    torch.manual_seed(1)
    model = MotionDiT(tiny_config(layers=1, mask_k=None)).eval()
    x_t, t, audio = torch.randn(1, 16, 6), torch.tensor([500]), torch.randn(1, 16, 10)
    perturbed = audio.clone()
    perturbed[:, 15] += 5 * torch.randn(10)
    with torch.no_grad():
        change = (model(x_t, t, perturbed)[:, 0] - model(x_t, t, audio)[:, 0]).abs().max()
    assert change > 1e-3


@pytest.mark.parametrize("frames", [1, 8, 40])
def test_forward_shapes_any_length(frames):
    model = MotionDiT(tiny_config()).eval()
    x, t, audio = torch.randn(3, frames, 6), torch.randint(0, 1000, (3,)), torch.randn(3, frames, 10)
    with torch.no_grad():
        out = model(x, t, audio)
        assert out.shape == (3, frames, 6) and torch.isfinite(out).all()
        # the batch is only a batch: each sample alone gives the same output
        for index in range(3):
            alone = model(x[index:index + 1], t[index:index + 1], audio[index:index + 1])
            torch.testing.assert_close(out[index:index + 1], alone, rtol=1e-5, atol=1e-5)
        # and the output depends on the input (not a constant): another timestep changes it
        assert not torch.allclose(model(x, (t + 500) % 1000, audio), out)


def test_forward_refuses_bad_shapes():
    model = MotionDiT(tiny_config())
    with pytest.raises(ValueError, match="1..40"):
        model(torch.randn(1, 41, 6), torch.tensor([1]), torch.randn(1, 41, 10))
    with pytest.raises(ValueError, match="audio_dim 10"):
        model(torch.randn(1, 8, 6), torch.tensor([1]), torch.randn(1, 8, 11))
    with pytest.raises(ValueError, match="x_t"):
        model(torch.randn(1, 8, 5), torch.tensor([1]), torch.randn(1, 8, 10))


def test_config_checks_and_json_round_trip():
    config = tiny_config(mask_k=None, dropout=0.1)
    assert MotionDiTConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(width=30)
    with pytest.raises(ValueError, match="unknown keys"):
        MotionDiTConfig.from_json(json.dumps({"motion_dim": 6, "wdth": 3}))


def test_save_load_round_trip_and_mismatch_refused(tmp_path):
    torch.manual_seed(2)
    model = MotionDiT(tiny_config()).eval()
    model.save_pretrained(tmp_path / "dit")
    loaded = MotionDiT.from_pretrained(tmp_path / "dit")
    assert loaded.config == model.config
    x_t, t, audio = torch.randn(2, 8, 6), torch.tensor([3, 900]), torch.randn(2, 8, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x_t, t, audio), model(x_t, t, audio), atol=0, rtol=0)
    # a config that does not match the weights is refused with the offending keys named
    payload = json.loads((tmp_path / "dit" / "config.json").read_text())
    payload["config"]["width"] = 64
    (tmp_path / "dit" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="wrong shape"):
        MotionDiT.from_pretrained(tmp_path / "dit")
