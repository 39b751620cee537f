"""singer_core.ops.wavelet against independent references: PyWavelets (float64), a float64
matrix implementation of the official SINGER (WaveCNet) layer, and naive loops of eq. (1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch

from singer_core.ops import haar_kernels, wavelet
from singer_core.ops.wavelet import (
    HaarDWT1d,
    HaarDWT2d,
    HaarIDWT1d,
    HaarIDWT2d,
    haar_dwt1d,
    haar_dwt2,
    haar_idwt1d,
    haar_idwt2,
    haar_wavedec1d,
    haar_wavedec2,
    haar_waverec1d,
    haar_waverec2,
)

SHAPES_2D = [(1, 1), (2, 2), (1, 2), (3, 1), (6, 8), (7, 5), (2, 3, 9, 11), (4, 1, 768, 50), (1, 130), (257, 3)]
PYWT_MODES = ["symmetric", "constant", "periodization", "reflect", "zero", "periodic", "smooth", "antisymmetric"]


@pytest.fixture(params=["fused", "torch"])
def backend(request, monkeypatch):
    """Run a test on the fused numba kernels and on the plain torch path."""
    if request.param == "torch":
        monkeypatch.setattr(haar_kernels, "available", lambda t: False)
    else:
        assert haar_kernels._compiled() is not None, "numba is a dependency; the fused kernels must load"
    return request.param


def _pywt_dwt2(x: np.ndarray, mode: str) -> np.ndarray:
    ca, (ch, cv, cd) = pywt.dwt2(x, "haar", mode=mode, axes=(-2, -1))
    return np.stack([ca, ch, cv, cd], axis=-3)


def _random(shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- PyWavelets


@pytest.mark.parametrize("shape", SHAPES_2D)
@pytest.mark.parametrize("mode", PYWT_MODES)
def test_dwt2_matches_pywavelets(shape, mode, backend):
    if mode in ("reflect",) and min(shape[-2:]) < 2 and any(s % 2 for s in shape[-2:]):
        with pytest.raises(ValueError, match="reflect"):
            haar_dwt2(_random(shape), mode=mode)
        return
    x = _random(shape)
    y = haar_dwt2(x, mode=mode)
    expected = _pywt_dwt2(x.numpy(), mode)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-12)
    restored = haar_idwt2(y, size=shape[-2:])
    np.testing.assert_allclose(restored.numpy(), x.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(7,), (8,), (1,), (3, 1000), (5, 33, 4), (2, 3, 4, 5)])
@pytest.mark.parametrize("mode", ["symmetric", "zero", "periodic", "smooth"])
def test_dwt1d_matches_pywavelets_on_every_axis(shape, mode, backend):
    x = _random(shape, seed=1)
    for dim in range(-len(shape), len(shape)):
        y = haar_dwt1d(x, dim, mode=mode)
        ca, cd = pywt.dwt(x.numpy(), "haar", mode=mode, axis=dim)
        axis = dim % len(shape)
        assert y.shape == (*shape[:axis], 2, ca.shape[axis], *shape[axis + 1 :])
        np.testing.assert_allclose(y.select(axis, 0).numpy(), ca, atol=1e-12)
        np.testing.assert_allclose(y.select(axis, 1).numpy(), cd, atol=1e-12)
        np.testing.assert_allclose(haar_idwt1d(y, dim, size=shape[axis]).numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize("shape,levels", [((37, 20), 3), ((2, 64, 64), 6), ((3, 2, 15, 33), 2), ((9, 9), 3)])
def test_wavedec2_matches_pywavelets(shape, levels, backend):
    x = _random(shape, seed=2)
    approx, details = haar_wavedec2(x, levels)
    ref = pywt.wavedec2(x.numpy(), "haar", level=levels, axes=(-2, -1))
    np.testing.assert_allclose(approx.numpy(), ref[0], atol=1e-12)
    assert len(details) == levels
    for level, detail in enumerate(details, start=1):  # ours finest first, pywt coarsest first
        np.testing.assert_allclose(detail.numpy(), np.stack(ref[-level], axis=-3), atol=1e-12)
    np.testing.assert_allclose(haar_waverec2(approx, details, size=shape[-2:]).numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize("length,levels", [(11, 3), (1024, 10), (1000, 5)])
def test_wavedec1d_matches_pywavelets(length, levels):
    x = _random((2, length), seed=3)
    approx, details = haar_wavedec1d(x, levels)
    ref = pywt.wavedec(x.numpy(), "haar", level=levels)
    np.testing.assert_allclose(approx.numpy(), ref[0], atol=1e-12)
    for level, detail in enumerate(details, start=1):
        np.testing.assert_allclose(detail.numpy(), ref[-level], atol=1e-12)
    np.testing.assert_allclose(haar_waverec1d(approx, details, size=length).numpy(), x.numpy(), atol=1e-12)


def test_wavedec1d_on_a_middle_axis():
    x = _random((3, 50, 4), seed=4)
    approx, details = haar_wavedec1d(x, 2, dim=1)
    ref = pywt.wavedec(x.numpy(), "haar", level=2, axis=1)
    np.testing.assert_allclose(approx.numpy(), ref[0], atol=1e-12)
    np.testing.assert_allclose(details[1].numpy(), ref[1], atol=1e-12)
    np.testing.assert_allclose(haar_waverec1d(approx, details, dim=1, size=50).numpy(), x.numpy(), atol=1e-12)


def test_peers_agree_with_our_default_order():
    """ptwt and pytorch_wavelets use the same (cA, cH, cV, cD) order and sign as our default."""
    ptwt = pytest.importorskip("ptwt")
    pytorch_wavelets = pytest.importorskip("pytorch_wavelets")
    x = _random((2, 3, 16, 12), seed=5)
    ours = haar_dwt2(x)
    a, (h, v, d) = ptwt.wavedec2(x, "haar", level=1, mode="zero")
    torch.testing.assert_close(ours, torch.stack([a, h, v, d], dim=-3))
    yl, yh = pytorch_wavelets.DWTForward(J=1, wave="haar", mode="zero").double()(x)
    torch.testing.assert_close(ours, torch.cat([yl.unsqueeze(-3), yh[0]], dim=-3))


# ----------------------------------------------------------------------------- eq. (1) and the official layer


def _haar_matrices(n: int):
    """The official layer's (WaveCNet DWT_2D) analysis matrices for an even length n: rows of
    pywt's reconstruction filters rec_lo/rec_hi at stride 2 (float64)."""
    wav = pywt.Wavelet("haar")
    low = np.zeros((n // 2, n))
    high = np.zeros((n // 2, n))
    for i in range(n // 2):
        low[i, 2 * i : 2 * i + 2] = wav.rec_lo
        high[i, 2 * i : 2 * i + 2] = wav.rec_hi
    return low, high


def test_singer_order_reproduces_the_official_layer(backend):
    """Official DWT_2D: L = M_low0 @ x, H = M_high0 @ x, then LL = L @ M_low1^T, LH = L @ M_high1^T,
    HL = H @ M_low1^T, HH = H @ M_high1^T (dim -2 filtered first). Our order="singer" must
    return exactly those four, in that order; the inverse must match its IDWT_2D."""
    x = _random((2, 3, 12, 10), seed=6)
    low0, high0 = _haar_matrices(12)
    low1, high1 = _haar_matrices(10)
    xn = x.numpy()
    rows_low, rows_high = low0 @ xn, high0 @ xn
    official = np.stack([rows_low @ low1.T, rows_low @ high1.T, rows_high @ low1.T, rows_high @ high1.T], axis=-3)
    ours = haar_dwt2(x, order="singer")
    np.testing.assert_allclose(ours.numpy(), official, atol=1e-12)
    # official IDWT_2D: x = M_low0^T (LL M_low1 + LH M_high1) + M_high0^T (HL M_low1 + HH M_high1)
    ll, lh, hl, hh = (official[..., k, :, :] for k in range(4))
    restored = low0.T @ (ll @ low1 + lh @ high1) + high0.T @ (hl @ low1 + hh @ high1)
    np.testing.assert_allclose(haar_idwt2(ours, order="singer").numpy(), restored, atol=1e-12)
    # and it is the pywt order with the two single-high bands swapped
    np.testing.assert_allclose(ours.numpy()[..., [0, 2, 1, 3], :, :], haar_dwt2(x).numpy(), atol=1e-12)


def test_correlation_convention_is_eq1_applied_literally():
    """Slide eq. (1)'s filters L=[1,1]/sqrt2, H=[-1,1]/sqrt2 as dot products (float64 loops)."""
    lo_f = np.array([1.0, 1.0]) / math.sqrt(2)
    hi_f = np.array([-1.0, 1.0]) / math.sqrt(2)
    x = _random((6, 8), seed=7).numpy()
    expected = np.zeros((4, 3, 4))
    filters_w = {"L": lo_f, "H": hi_f}
    # pywt-order planes: (W filter, H filter) = LL, LH, HL, HH
    for k, (fw, fh) in enumerate([("L", "L"), ("L", "H"), ("H", "L"), ("H", "H")]):
        for i in range(3):
            for j in range(4):
                total = 0.0
                for p in range(2):
                    for q in range(2):
                        total += filters_w[fh][p] * filters_w[fw][q] * x[2 * i + p, 2 * j + q]
                expected[k, i, j] = total
    ours = haar_dwt2(torch.from_numpy(x), convention="correlation")
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(haar_idwt2(ours, convention="correlation").numpy(), x, atol=1e-12)
    # 1D: high = (x1 - x0)/sqrt2
    y = haar_dwt1d(torch.from_numpy(x[0]), convention="correlation")
    np.testing.assert_allclose(y[1].numpy(), (x[0, 1::2] - x[0, 0::2]) / math.sqrt(2), atol=1e-12)


def test_band_meanings_on_edges():
    """A horizontal edge (rows differ) lands in LH = cH; a vertical edge in HL = cV."""
    horizontal = -torch.ones(8, 8, dtype=torch.float64)
    horizontal[::2] = 1.0  # rows alternate +1/-1: no mean, only row-to-row change
    bands = haar_dwt2(horizontal)
    energy = bands.pow(2).sum(dim=(-1, -2))
    assert energy[1] > 0 and energy[0] == 0 and energy[2] == 0 and energy[3] == 0
    vertical = horizontal.T.contiguous()
    energy = haar_dwt2(vertical).pow(2).sum(dim=(-1, -2))
    assert energy[2] > 0 and energy[0] == 0 and energy[1] == 0 and energy[3] == 0


# ----------------------------------------------------------------------------- reconstruction, dtypes, autograd


@pytest.mark.parametrize("shape", [(16, 1, 768, 50), (3, 1280, 8, 8), (2, 5, 31, 17), (1, 4097)])
def test_perfect_reconstruction_float32(shape, backend):
    x = _random(shape, seed=8, dtype=torch.float32)
    if len(shape) == 2:
        restored = haar_idwt1d(haar_dwt1d(x), size=shape[-1])
    else:
        restored = haar_idwt2(haar_dwt2(x), size=shape[-2:])
    relative = (restored - x).norm() / x.norm()
    assert relative <= 1e-6
    approx, details = haar_wavedec2(x.reshape(-1, *shape[-2:])[:2], 2) if len(shape) > 2 and min(shape[-2:]) >= 4 else (None, None)
    if approx is not None:
        back = haar_waverec2(approx, details, size=shape[-2:])
        assert (back - x.reshape(-1, *shape[-2:])[:2]).norm() / x.norm() <= 1e-6


def test_orthonormal_energy_is_preserved(backend):
    x = _random((4, 16, 16), seed=9)
    torch.testing.assert_close(haar_dwt2(x).pow(2).sum(), x.pow(2).sum())


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1), (torch.float32, 1e-5),
                                        (torch.float64, 1e-12)])
def test_dtype_and_device_are_preserved(dtype, atol, backend):
    x64 = _random((2, 3, 10, 14), seed=10)
    x = x64.to(dtype)
    y = haar_dwt2(x)
    assert y.dtype == dtype and y.device == x.device
    np.testing.assert_allclose(y.double().numpy(), _pywt_dwt2(x.double().numpy(), "symmetric"), atol=atol)
    r = haar_idwt2(y)
    assert r.dtype == dtype
    y1 = haar_dwt1d(x, 2)
    assert y1.dtype == dtype and haar_idwt1d(y1, 2).dtype == dtype


def test_fused_and_torch_paths_agree(monkeypatch):
    x = _random((3, 4, 18, 22), seed=11, dtype=torch.float32)
    fused = [haar_dwt2(x, order=o, convention=c) for o in ("pywt", "singer") for c in ("convolution", "correlation")]
    fused1 = haar_dwt1d(x, 1)
    monkeypatch.setattr(haar_kernels, "available", lambda t: False)
    plain = [haar_dwt2(x, order=o, convention=c) for o in ("pywt", "singer") for c in ("convolution", "correlation")]
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(fused1, haar_dwt1d(x, 1))


def test_non_contiguous_and_expanded_inputs(backend):
    base = _random((4, 12, 10), seed=12)
    transposed = base.transpose(-1, -2)  # (4, 10, 12) non-contiguous
    np.testing.assert_allclose(haar_dwt2(transposed).numpy(), _pywt_dwt2(transposed.numpy(), "symmetric"), atol=1e-12)
    expanded = base[:1].expand(3, 12, 10)
    np.testing.assert_allclose(haar_dwt2(expanded).numpy(), _pywt_dwt2(expanded.numpy(), "symmetric"), atol=1e-12)


@pytest.mark.parametrize("mode", ["symmetric", "reflect", "zero", "periodic", "smooth", "antisymmetric"])
def test_gradcheck_float64(mode, backend):
    x = _random((2, 5, 7), seed=13).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: haar_dwt2(t, mode=mode), (x,))
    assert torch.autograd.gradcheck(lambda t: haar_dwt1d(t, 1, mode=mode), (x,))
    bands = _random((2, 4, 3, 4), seed=14).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: haar_idwt2(t, size=(5, 7), order="singer"), (bands,))
    b1 = _random((3, 2, 6), seed=15).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: haar_idwt1d(t, size=11), (b1,))


def test_gradgradcheck_and_multilevel_grad(backend):
    x = _random((2, 6, 8), seed=16).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: haar_dwt2(t, convention="correlation"), (x,))
    assert torch.autograd.gradcheck(lambda t: haar_wavedec2(t, 2)[0], (x,))


def test_backward_is_the_inverse_transform(backend):
    """For even sizes the transform is orthonormal: d<g, DWT(x)>/dx = IDWT(g)."""
    x = _random((3, 8, 6), seed=17).requires_grad_()
    g = _random((3, 4, 4, 3), seed=18)
    (haar_dwt2(x) * g).sum().backward()
    torch.testing.assert_close(x.grad, haar_idwt2(g))


# ----------------------------------------------------------------------------- out=, modules, errors


def test_out_buffers(backend):
    x = _random((2, 3, 8, 6), seed=19, dtype=torch.float32)
    out = torch.empty(2, 3, 4, 4, 3)
    result = haar_dwt2(x, out=out)
    assert result is out
    torch.testing.assert_close(out, haar_dwt2(x))
    restored = torch.empty(2, 3, 8, 6)
    assert haar_idwt2(out, out=restored) is restored
    torch.testing.assert_close(restored, x)
    cropped = torch.empty(2, 3, 7, 5)
    haar_idwt2(haar_dwt2(x[..., :7, :5]), size=(7, 5), out=cropped)
    torch.testing.assert_close(cropped, x[..., :7, :5])
    out1 = torch.empty(2, 3, 2, 4, 6)
    haar_dwt1d(x, 2, out=out1)
    torch.testing.assert_close(out1, haar_dwt1d(x, 2))
    back1 = torch.empty(2, 3, 8, 6)
    haar_idwt1d(out1, 2, out=back1)
    torch.testing.assert_close(back1, x)


def test_out_buffer_errors():
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="out has shape"):
        haar_dwt2(x, out=torch.empty(4, 3, 2))
    with pytest.raises(ValueError, match="expected torch.float32"):
        haar_dwt2(x, out=torch.empty(4, 2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="autograd"):
        haar_dwt2(x.requires_grad_(), out=torch.empty(4, 2, 3))


def test_modules_round_trip():
    x = _random((2, 3, 20, 13), seed=20)
    for levels in (1, 3):
        forward, inverse = HaarDWT2d(levels, order="singer"), HaarIDWT2d(levels, order="singer")
        torch.testing.assert_close(inverse(forward(x), size=(20, 13)), x)
        forward1, inverse1 = HaarDWT1d(levels, dim=2), HaarIDWT1d(levels, dim=2)
        torch.testing.assert_close(inverse1(forward1(x), size=20), x)
    assert "order=singer" in repr(HaarDWT2d(order="singer"))
    module_out = HaarDWT2d()(x)
    torch.testing.assert_close(module_out, haar_dwt2(x))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: haar_dwt2(torch.randn(5)), "at least 2 dims"),
        (lambda: haar_dwt2(torch.randn(3, 0)), ">= 1 sample"),
        (lambda: haar_dwt2(torch.ones(4, 4, dtype=torch.int64)), "floating-point"),
        (lambda: haar_dwt2(torch.randn(4, 4), mode="wrap"), "mode must be one of"),
        (lambda: haar_dwt2(torch.randn(4, 4), order="xyz"), "order must be"),
        (lambda: haar_dwt2(torch.randn(4, 4), convention="both"), "convention must be"),
        (lambda: haar_dwt2(torch.randn(1, 3), mode="reflect"), "reflect"),
        (lambda: haar_idwt2(torch.randn(3, 4, 4)), "4 sub-bands"),
        (lambda: haar_idwt2(torch.randn(4, 4)), "at least 3 dims"),
        (lambda: haar_idwt2(torch.randn(4, 3, 3), size=(4, 7)), "size=.* cannot come"),
        (lambda: haar_dwt1d(torch.randn(4, 5), dim=2), "out of range"),
        (lambda: haar_dwt1d(torch.randn(4, 0)), "empty"),
        (lambda: haar_idwt1d(torch.randn(3, 4), dim=0), "2 bands"),
        (lambda: haar_wavedec2(torch.randn(8, 8), 0), "levels must be an integer >= 1"),
        (lambda: haar_wavedec2(torch.randn(8, 8), 4), "at most 3 level"),
        (lambda: haar_wavedec2(torch.randn(8, 8), 2.0), "levels must be an integer"),
        (lambda: haar_wavedec1d(torch.randn(5), 3), "at most 2 level"),
        (lambda: haar_waverec2(torch.randn(4, 4), []), "details is empty"),
        (lambda: haar_waverec2(torch.randn(4, 4), [torch.randn(2, 4, 4)]), r"\(\*, 3, h, w\)"),
        (lambda: HaarDWT2d(levels=-1), "levels"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_type_error_for_non_tensors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        haar_dwt2(np.zeros((4, 4)))


def test_empty_batch_and_single_pixel(backend):
    assert haar_dwt2(torch.randn(0, 3, 6, 4)).shape == (0, 3, 4, 3, 2)
    one = torch.tensor([[5.0]], dtype=torch.float64)
    bands = haar_dwt2(one)  # symmetric: padded to [[5, 5], [5, 5]]
    np.testing.assert_allclose(bands.numpy(), _pywt_dwt2(one.numpy(), "symmetric"))
    torch.testing.assert_close(haar_idwt2(bands, size=(1, 1)), one)


def test_max_level_matches_pywavelets():
    for n in (1, 2, 3, 7, 8, 9, 50, 768, 1025):
        assert wavelet.max_level(n) == pywt.dwt_max_level(n, "haar")
