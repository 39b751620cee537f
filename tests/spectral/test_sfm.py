"""SFM (singer_core.spectral.sfm) against a float64 reference written from the official code (eqs. 5-8)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from singer_core.spectral.sfm import SelfAdaptiveFilterModule, SFMConfig
from tests.references import wavecnet_matrices

# ----------------------------------------------------------------------------- float64 reference



def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def resample_last(x: np.ndarray, width: int) -> np.ndarray:
    """Last axis: integer-factor area mean (narrowing) or linear, align_corners=False (widening)."""
    n = x.shape[-1]
    if n == width:
        return x
    if n > width:
        assert n % width == 0
        return x.reshape(*x.shape[:-1], width, n // width).mean(-1)
    coords = np.clip((np.arange(width) + 0.5) * n / width - 0.5, 0, n - 1)
    return np.apply_along_axis(lambda row: np.interp(coords, np.arange(n), row), -1, x)


def ref_sfm(weight, fc0, fc2, hidden, *, gate="official", fc_width=8):
    """Official hidden_spectral_weighting forward in float64: loops over frames, matrices for the Haar."""
    batch, channels, frames, height, width = hidden.shape
    pad_h, pad_w = height % 2, width % 2
    lh, hh = wavecnet_matrices(height + pad_h)
    lw, hw = wavecnet_matrices(width + pad_w)
    scale = weight.sum(axis=(1, 3, 4))  # (4, C): the einsum sums m, s, t
    out = np.zeros_like(hidden)
    for b in range(batch):
        for f in range(frames):
            x = hidden[b, :, f]  # (C, h, w)
            xp = np.pad(x, [(0, 0), (0, pad_h), (0, pad_w)], mode="symmetric")
            low, high = lh @ xp, hh @ xp
            ll, lh_, hl, hh_ = low @ lw.T, low @ hw.T, high @ lw.T, high @ hw.T
            ll, lh_, hl, hh_ = (band * scale[k][:, None, None] for k, band in enumerate((ll, lh_, hl, hh_)))
            filtered = (lh.T @ (ll @ lw + lh_ @ hw) + hh.T @ (hl @ lw + hh_ @ hw))[:, :height, :width]
            z = resample_last(x, fc_width)
            g = sigmoid(np.einsum("ok,...k->...o", fc2, np.maximum(np.einsum("ki,...i->...k", fc0, z), 0.0)))
            g = resample_last(g, width)
            out[b, :, f] = (2.0 * g if gate == "unit" else g) * filtered
    return out


def numpy_state(module):
    return tuple(
        t.detach().double().numpy() for t in (module.weight, module.fc[0].weight, module.fc[2].weight)
    )


def make(seed=0, **config):
    torch.manual_seed(seed)
    return SelfAdaptiveFilterModule(SFMConfig(**config)).double()


# ----------------------------------------------------------------------------- tests


def test_official_state_dict_keys_and_shapes():
    shapes = {k: tuple(v.shape) for k, v in SelfAdaptiveFilterModule().state_dict().items()}
    assert shapes == {"weight": (4, 1, 1280, 4, 4), "fc.0.weight": (4, 8), "fc.2.weight": (8, 4)}


def test_from_official_loads_prefixed_fp16_state():
    gen = torch.Generator().manual_seed(1)
    prefix = "denoising_unet.hidden_spectral_weighting."
    state = {
        prefix + "weight": torch.randn(4, 1, 1280, 4, 4, generator=gen).half(),
        prefix + "fc.0.weight": torch.randn(4, 8, generator=gen).half(),
        prefix + "fc.2.weight": torch.randn(8, 4, generator=gen).half(),
        "denoising_unet.conv_in.weight": torch.zeros(1),
    }
    module = SelfAdaptiveFilterModule.from_official(state)
    assert torch.equal(module.weight, state[prefix + "weight"].float())
    with pytest.raises(ValueError, match="fc.2.weight"):
        SelfAdaptiveFilterModule.from_official(dict(state, **{prefix + "fc.2.weight": torch.zeros(8, 5)}))


def test_official_forward_matches_float64_reference_at_official_shapes():
    module = make()
    hidden = torch.randn(1, 1280, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = ref_sfm(*numpy_state(module), hidden.numpy())
    np.testing.assert_allclose(module(hidden).detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    got32 = module.float()(hidden.float()).detach().double().numpy()
    np.testing.assert_allclose(got32, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_band_scales_are_the_summed_weight():
    module = make(seed=3)
    expected = numpy_state(module)[0].sum(axis=(1, 3, 4))
    np.testing.assert_allclose(module.band_scales().detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("size", [(6, 16), (4, 4), (5, 8), (3, 2)])
def test_other_sizes_follow_the_width_rule(size):
    # (6, 16): area down to 8, linear back; (4, 4): linear up, area back; (5, 8): odd height, exact FC
    height, width = size
    module = make(seed=4, channels=8)
    hidden = torch.randn(
        2, 8, 3, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(5)
    )
    expected = ref_sfm(*numpy_state(module), hidden.numpy())
    got = module(hidden)
    assert got.shape == hidden.shape
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_unit_gate_and_four_dim_input():
    module = make(seed=6, channels=8, gate="unit")
    hidden = torch.randn(1, 8, 2, 8, 8, dtype=torch.float64)
    expected = ref_sfm(*numpy_state(module), hidden.numpy(), gate="unit")
    np.testing.assert_allclose(module(hidden).detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    frames = hidden.permute(0, 2, 1, 3, 4).reshape(2, 8, 8, 8)
    torch.testing.assert_close(module(frames), module(hidden).permute(0, 2, 1, 3, 4).reshape(2, 8, 8, 8))


def test_identity_init_is_identity_and_trainable():
    module = make(seed=7, gate="unit", identity_init=True)
    hidden = torch.randn(1, 1280, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    out = module(hidden)
    torch.testing.assert_close(out, hidden, rtol=0, atol=1e-13)
    (out * torch.randn_like(out)).sum().backward()
    for tensor in (module.weight, module.fc[2].weight, hidden):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_gradients_flow_with_official_init():
    """Backward against central finite differences (float64 gradcheck) for the input, the band weights and both
    FC layers."""
    module = make(seed=8, channels=8)
    hidden = torch.randn(1, 8, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    names = ["weight", "fc.0.weight", "fc.2.weight"]
    params = dict(module.named_parameters())
    values = [params[name].detach().clone().requires_grad_(True) for name in names]

    def loss(hidden, *weights):
        return (torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (hidden,)) ** 2).sum()

    assert torch.autograd.gradcheck(loss, (hidden, *values), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
    grads = torch.autograd.grad(loss(hidden, *values), (hidden, *values))
    assert all(grad.abs().sum() > 0 for grad in grads)  # every part is reached


def test_config_validation_and_errors():
    config = SFMConfig(channels=16, gate="unit", identity_init=True)
    assert SFMConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="identity_init"):
        SFMConfig(identity_init=True)
    with pytest.raises(ValueError, match="channels"):
        SFMConfig(channels=0)
    with pytest.raises(ValueError, match="1280"):
        SelfAdaptiveFilterModule()(torch.zeros(1, 640, 2, 8, 8))


def test_forward_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make(seed=9, channels=8)(torch.randn(1, 8, 2, 8, 8, dtype=torch.float64))
    assert os.listdir(tmp_path) == []
