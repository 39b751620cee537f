"""LPIPS (Zhang et al. 2018) on user weight files: round trip of the files, the formula against a float64
numpy reference, and the errors for missing files."""

import numpy as np
import pytest
import torch
import torchvision

from singer_core.nerf.lpips import LPIPS, load_lpips

SHIFT = np.array([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
SCALE = np.array([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)
ALEX_CUTS = (2, 5, 8, 10, 12)  # torchvision alexnet.features: ReLU after conv1..conv5


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None)
    backbone = folder / "alexnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(backbone))  # whole model, as torchvision
    generator = torch.Generator().manual_seed(1)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator)
            for k, c in enumerate((64, 192, 384, 256, 256))}
    linear = folder / "alex.pth"
    torch.save(lins, linear)
    return backbone, linear, model.features.double().eval(), lins


def reference(features, lins, x, y):
    """float64: scale, five ReLU stages, channel-normalise, squared difference, lin weights, spatial mean, sum."""
    def stages(img):
        out, h = [], torch.from_numpy((img - SHIFT) / SCALE)
        start = 0
        for cut in ALEX_CUTS:
            for i in range(start, cut):
                h = features[i](h)
            out.append(h.numpy())
            start = cut
        return out

    total = np.zeros(x.shape[0])
    with torch.no_grad():
        for k, (a, b) in enumerate(zip(stages(x), stages(y), strict=True)):
            na = a / (np.sqrt((a ** 2).sum(axis=1, keepdims=True)) + 1e-10)
            nb = b / (np.sqrt((b ** 2).sum(axis=1, keepdims=True)) + 1e-10)
            w = lins[f"lin{k}.model.1.weight"].double().numpy().reshape(1, -1, 1, 1)
            total += (((na - nb) ** 2) * w).sum(axis=1).mean(axis=(1, 2))
    return total


def test_lpips_matches_float64_reference(weights):
    backbone, linear, features, lins = weights
    metric = load_lpips(backbone, linear)
    for k, param in enumerate(metric.lins):
        assert torch.equal(param.data, lins[f"lin{k}.model.1.weight"])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 64, 64))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1)
    got = metric(torch.from_numpy(x).float(), torch.from_numpy(y).float()).double().numpy()
    want = reference(features, lins, x, y)
    np.testing.assert_allclose(got, want, rtol=2e-4)
    assert float(metric(torch.from_numpy(x).float(), torch.from_numpy(x).float()).abs().max()) < 1e-6
    # normalize=True takes [0, 1] inputs
    got01 = metric(torch.from_numpy((x + 1) / 2).float(), torch.from_numpy((y + 1) / 2).float(), normalize=True)
    np.testing.assert_allclose(got01.double().numpy(), want, rtol=2e-4)


def test_lpips_is_differentiable(weights):
    backbone, linear, _, _ = weights
    metric = LPIPS("alex", backbone, linear)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    metric(x, torch.rand(1, 3, 32, 32), normalize=True).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in metric.parameters())


def test_lpips_missing_files_name_them(tmp_path, weights):
    backbone, linear, _, _ = weights
    with pytest.raises(FileNotFoundError, match="backbone.*alexnet-owt"):
        load_lpips(tmp_path / "nope.pth", linear)
    with pytest.raises(FileNotFoundError, match="linear-head.*alex.pth"):
        load_lpips(backbone, tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, bad)
    with pytest.raises(ValueError, match="lin0..lin4"):
        load_lpips(backbone, bad)
