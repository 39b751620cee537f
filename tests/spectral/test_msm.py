"""MSM (singer_core.spectral.msm) against float64 references written from the official code and eqs. 2-4."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from singer_core.spectral.msm import MSMConfig, MultiScaleSpectralModule
from tests.references import wavecnet_matrices

# ----------------------------------------------------------------------------- float64 references



def ref_dwt(plane: np.ndarray) -> list[np.ndarray]:
    """WaveCNet DWT_2D of (..., H, W): [LL, LH, HL, HH], first letter = filter along H."""
    lh, hh = wavecnet_matrices(plane.shape[-2])
    lw, hw = wavecnet_matrices(plane.shape[-1])
    low, high = lh @ plane, hh @ plane
    return [low @ lw.T, low @ hw.T, high @ lw.T, high @ hw.T]


def ref_idwt(bands: list[np.ndarray]) -> np.ndarray:
    ll, lh_, hl, hh_ = bands
    lh, hh = wavecnet_matrices(2 * ll.shape[-2])
    lw, hw = wavecnet_matrices(2 * ll.shape[-1])
    return lh.T @ (ll @ lw + lh_ @ hw) + hh.T @ (hl @ lw + hh_ @ hw)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_official(buffer, fc0, fc2, latents, audio, *, gate="official"):
    """Official MultiSpectralAttentionLayer forward, float64, from reading the code (loops over b, k, f)."""
    weight = buffer.sum(axis=(0, 2))  # einsum sums the buffer's batch and frame axes
    batch, channels, frames, height, width = latents.shape
    rows = height // 4
    band_w = np.zeros((batch, 4))
    for b in range(batch):
        for k in range(4):
            for f in range(frames):
                s = np.array(
                    [
                        (
                            latents[b, c, f, k * rows : (k + 1) * rows] * weight[c, k * rows : (k + 1) * rows]
                        ).sum()
                        for c in range(channels)
                    ]
                )
                g = sigmoid(fc2 @ np.maximum(fc0 @ s, 0.0))[0]
                band_w[b, k] += g if gate == "official" else 2.0 * g / frames
    return apply_band_weights(audio, band_w), band_w


def apply_band_weights(audio, band_w, pad=False):
    """audio (B, F, T, D) -> transpose(3, 1) -> DWT -> band k * w[b, k] -> IDWT -> back."""
    planes = np.transpose(audio, (0, 3, 2, 1))  # (B, D, T, F)
    size = planes.shape[-2:]
    if pad:  # PyWavelets 'symmetric' extension of an odd axis repeats the edge sample
        planes = np.pad(planes, [(0, 0), (0, 0), (0, size[0] % 2), (0, size[1] % 2)], mode="symmetric")
    bands = ref_dwt(planes)
    bands = [band * band_w[:, k, None, None, None] for k, band in enumerate(bands)]
    out = ref_idwt(bands)[..., : size[0], : size[1]]
    return np.transpose(out, (0, 3, 2, 1))


def official_module(seed=0, buffer_scale=0.02, **config):
    torch.manual_seed(seed)
    module = MultiScaleSpectralModule(MSMConfig(**config)).double()
    with torch.no_grad():
        module.dct_layer.weight.mul_(buffer_scale)  # keep the sigmoids out of saturation: a sharper test
    return module


def numpy_state(module):
    return (
        module.dct_layer.weight.detach().double().numpy(),
        module.fc[0].weight.detach().double().numpy(),
        module.fc[2].weight.detach().double().numpy(),
    )


# ----------------------------------------------------------------------------- official form


def test_official_state_dict_keys_shapes_and_buffer():
    module = MultiScaleSpectralModule()
    shapes = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    assert shapes == {"dct_layer.weight": (1, 4, 14, 64, 64), "fc.0.weight": (2, 4), "fc.2.weight": (1, 2)}
    assert "dct_layer.weight" not in dict(module.named_parameters())  # a buffer, as officially
    assert dict(module.named_buffers()).keys() == {"dct_layer.weight"}


def test_from_official_loads_prefixed_fp16_state():
    gen = torch.Generator().manual_seed(1)
    state = {
        "audioembed.dct_layer.weight": torch.randn(1, 4, 14, 64, 64, generator=gen).half(),
        "audioembed.fc.0.weight": torch.randn(2, 4, generator=gen).half(),
        "audioembed.fc.2.weight": torch.randn(1, 2, generator=gen).half(),
        "audioproj.proj1.weight": torch.zeros(3),
    }
    module = MultiScaleSpectralModule.from_official(state)
    assert torch.equal(module.fc[0].weight, state["audioembed.fc.0.weight"].float())
    assert torch.equal(module.dct_layer.weight, state["audioembed.dct_layer.weight"].float())
    bad = dict(state, **{"audioembed.fc.0.weight": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="fc.2.weight"):
        MultiScaleSpectralModule.from_official(bad)
    with pytest.raises(ValueError, match="dct_layer.weight"):
        MultiScaleSpectralModule.from_official({"x": torch.zeros(1)})


def test_official_forward_matches_float64_reference_at_official_shapes():
    module = official_module()
    gen = torch.Generator().manual_seed(2)
    latents = torch.randn(1, 4, 16, 64, 64, generator=gen, dtype=torch.float64)
    audio = torch.randn(1, 16, 32, 768, generator=gen, dtype=torch.float64)
    expected, band_w = ref_official(*numpy_state(module), latents.numpy(), audio.numpy())
    assert np.ptp(band_w) > 0.5  # the bands really get different weights
    got64 = module(audio, latents)
    np.testing.assert_allclose(module.band_weights(latents).detach().numpy(), band_w, rtol=1e-10)
    np.testing.assert_allclose(got64.detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    got32 = module.float()(audio.float(), latents.float())
    np.testing.assert_allclose(
        got32.detach().double().numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )


def test_official_raw_buffer_scale_also_matches():
    module = official_module(buffer_scale=1.0)
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 4, 4, 64, 64, generator=gen, dtype=torch.float64)
    audio = torch.randn(1, 4, 32, 8, generator=gen, dtype=torch.float64)
    expected, _ = ref_official(*numpy_state(module), latents.numpy(), audio.numpy())
    np.testing.assert_allclose(module(audio, latents).detach().numpy(), expected, rtol=1e-9, atol=1e-9)


def test_official_other_batch_and_frame_counts():
    module = official_module(seed=4)
    gen = torch.Generator().manual_seed(5)
    latents = torch.randn(2, 4, 6, 64, 64, generator=gen, dtype=torch.float64)
    audio = torch.randn(2, 6, 32, 16, generator=gen, dtype=torch.float64)
    expected, _ = ref_official(*numpy_state(module), latents.numpy(), audio.numpy())
    np.testing.assert_allclose(module(audio, latents).detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    # a latent batch of 1 broadcasts over the audio batch, as in the official view(4, n, 1, 1, 1)
    expected1, _ = ref_official(*numpy_state(module), latents[:1].numpy(), audio.numpy())
    np.testing.assert_allclose(module(audio, latents[:1]).detach().numpy(), expected1, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="batch"):
        module(audio.repeat(3, 1, 1, 1)[:3], latents)


def test_official_other_latent_size_is_pooled_to_buffer_size():
    module = official_module(seed=6)
    gen = torch.Generator().manual_seed(7)
    big = torch.randn(1, 4, 2, 128, 128, generator=gen, dtype=torch.float64)
    audio = torch.randn(1, 2, 8, 4, generator=gen, dtype=torch.float64)
    pooled = big.numpy().reshape(1, 4, 2, 64, 2, 64, 2).mean(axis=(4, 6))  # 2x2 block means
    expected, _ = ref_official(*numpy_state(module), pooled, audio.numpy())
    np.testing.assert_allclose(module(audio, big).detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    small = torch.randn(1, 4, 2, 32, 32, generator=gen, dtype=torch.float64)
    upsampled = small.numpy().repeat(2, axis=3).repeat(2, axis=4)  # adaptive pooling up = replication
    expected, _ = ref_official(*numpy_state(module), upsampled, audio.numpy())
    np.testing.assert_allclose(module(audio, small).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_odd_audio_sizes_use_symmetric_extension():
    module = official_module(seed=8)
    gen = torch.Generator().manual_seed(9)
    latents = torch.randn(1, 4, 3, 64, 64, generator=gen, dtype=torch.float64)
    audio = torch.randn(1, 3, 5, 6, generator=gen, dtype=torch.float64)  # F=3, T=5 both odd
    band_w = module.band_weights(latents).detach().numpy()
    expected = apply_band_weights(audio.numpy(), band_w, pad=True)
    got = module(audio, latents)
    assert got.shape == audio.shape
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_official_gradients_reach_fc_and_audio():
    module = official_module(seed=10).float()
    gen = torch.Generator().manual_seed(11)
    latents = torch.randn(1, 4, 2, 64, 64, generator=gen)
    audio = torch.randn(1, 2, 8, 4, generator=gen, requires_grad=True)
    (module(audio, latents) ** 2).sum().backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0
    assert module.fc[0].weight.grad.abs().sum() > 0 and module.fc[2].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- paper form


def ref_paper(w, fc0, fc2, latents, audio, gate):
    """Eqs. 2-4 as msm.py specifies: w*z, 4 width chunks, per-frame channel means, FC(concat) -> 4."""
    batch, channels, frames, height, width = latents.shape
    edges = [len(part) for part in np.array_split(np.arange(width), 4)]
    bounds = np.cumsum([0] + edges)
    band_w = np.zeros((batch, 4))
    for b in range(batch):
        for f in range(frames):
            wz = w[f] * latents[b, :, f]  # (C, H, W), eq. 2
            desc = np.concatenate([wz[:, :, bounds[k] : bounds[k + 1]].mean(axis=(1, 2)) for k in range(4)])
            g = sigmoid(fc2 @ np.maximum(fc0 @ desc, 0.0))
            band_w[b] += g if gate == "official" else 2.0 * g / frames
    return apply_band_weights(audio, band_w), band_w


def paper_module(seed=0, **config):
    torch.manual_seed(seed)
    module = MultiScaleSpectralModule(
        MSMConfig(form="paper", latent_height=8, latent_width=10, frames=3, hidden=6, **config)
    ).double()
    with torch.no_grad():
        module.latent_weight.normal_()
    return module


@pytest.mark.parametrize("gate", ["official", "unit"])
def test_paper_form_matches_float64_reference(gate):
    module = paper_module(gate=gate)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        "latent_weight": (3, 4, 8, 10),
        "fc.0.weight": (6, 16),
        "fc.2.weight": (4, 6),
    }
    gen = torch.Generator().manual_seed(12)
    latents = torch.randn(2, 4, 3, 8, 10, generator=gen, dtype=torch.float64)
    audio = torch.randn(2, 6, 4, 5, generator=gen, dtype=torch.float64)
    expected, band_w = ref_paper(
        module.latent_weight.detach().numpy(),
        module.fc[0].weight.detach().numpy(),
        module.fc[2].weight.detach().numpy(),
        latents.numpy(),
        audio.numpy(),
        gate,
    )
    assert np.ptp(band_w) > 1e-3
    np.testing.assert_allclose(module(audio, latents).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_paper_form_resamples_w_to_other_latent_sizes():
    module = paper_module(seed=13)
    gen = torch.Generator().manual_seed(14)
    latents = torch.randn(1, 4, 5, 12, 16, generator=gen, dtype=torch.float64)
    audio = torch.randn(1, 4, 4, 3, generator=gen, dtype=torch.float64)
    w = module.latent_weight.detach()
    resized = torch.nn.functional.interpolate(
        w.permute(1, 0, 2, 3)[None], size=(5, 12, 16), mode="trilinear", align_corners=False
    )[0].permute(1, 0, 2, 3)
    expected, _ = ref_paper(
        resized.numpy(),
        module.fc[0].weight.detach().numpy(),
        module.fc[2].weight.detach().numpy(),
        latents.numpy(),
        audio.numpy(),
        "official",
    )
    np.testing.assert_allclose(module(audio, latents).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_paper_gradients_reach_w_fc_and_audio():
    """Backward against central finite differences (float64 gradcheck) for the audio, W and both FC layers."""
    module = paper_module(seed=15)
    latents = torch.randn(1, 4, 3, 8, 10, dtype=torch.float64)
    audio = torch.randn(1, 4, 4, 6, dtype=torch.float64, requires_grad=True)
    names = ["latent_weight", "fc.0.weight", "fc.2.weight"]
    params = dict(module.named_parameters())
    values = [params[name].detach().clone().requires_grad_(True) for name in names]

    def loss(audio, *weights):
        out = torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (audio, latents))
        return (out ** 2).sum()

    assert torch.autograd.gradcheck(loss, (audio, *values), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
    grads = torch.autograd.grad(loss(audio, *values), (audio, *values))
    assert all(grad.abs().sum() > 0 for grad in grads)  # every part is reached


# ----------------------------------------------------------------------------- identity, config, files


@pytest.mark.parametrize("form", ["official", "paper"])
def test_identity_init_is_identity_and_trainable(form):
    torch.manual_seed(16)
    module = MultiScaleSpectralModule(MSMConfig(form=form, gate="unit", identity_init=True)).double()
    latents = torch.randn(1, 4, 5, 64, 64, dtype=torch.float64)
    audio = torch.randn(1, 5, 32, 12, dtype=torch.float64, requires_grad=True)
    out = module(audio, latents)
    assert torch.equal(module.band_weights(latents), torch.ones(1, 4, dtype=torch.float64))
    torch.testing.assert_close(out, audio, rtol=0, atol=1e-13)
    out.sum().backward()
    assert module.fc[2].weight.grad.abs().sum() > 0


def test_config_validation_and_json_round_trip():
    config = MSMConfig(form="paper", gate="unit", identity_init=True, latent_width=32)
    assert MSMConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="identity_init"):
        MSMConfig(identity_init=True)
    with pytest.raises(ValueError, match="form"):
        MSMConfig(form="fancy")
    with pytest.raises(ValueError, match="latent_height"):
        MSMConfig(latent_height=30)
    with pytest.raises(ValueError, match="unknown keys"):
        MSMConfig.from_json('{"chunks": 4}')
    with pytest.raises(ValueError, match="latents"):
        MultiScaleSpectralModule()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 2, 64, 64))


def test_forward_writes_no_file_and_pretrained_round_trip(tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    module = official_module(seed=17).float()
    latents, audio = torch.randn(1, 4, 2, 64, 64), torch.randn(1, 2, 4, 4)
    out = module(audio, latents)
    assert os.listdir(work) == []  # the official forward saves res.pt on every call; ours writes nothing
    module.save_pretrained(tmp_path / "msm")
    again = MultiScaleSpectralModule.from_pretrained(tmp_path / "msm")
    torch.testing.assert_close(again(audio, latents), out, rtol=0, atol=0)
