"""Orthonormal Haar DWT/IDWT in 1D and 2D (SINGER paper §3.1, eq. 1) -- the one implementation
every caller in the project uses (MSM, SFM, sub-band view).

Filters (eq. 1): L = [1, 1]/sqrt(2), H = [-1, 1]/sqrt(2).

Conventions
-----------
* **Sign** (``convention``). ``"convolution"`` (default) applies eq. (1)'s filters as a
  convolution, which is what PyWavelets, ptwt, pytorch_wavelets and the official SINGER layer
  (WaveCNet ``DWT_2D('haar')``) compute: for a pair (x0, x1) the detail is (x0 - x1)/sqrt(2).
  ``"correlation"`` slides eq. (1)'s H as a dot product, giving (x1 - x0)/sqrt(2): in 2D it
  flips the sign of the two single-high-pass bands (horizontal and vertical detail); the
  diagonal band and the approximation are unchanged.
* **Band order** (``order``) of the 2D sub-band axis. With a=x[2i,2j], b=x[2i,2j+1],
  c=x[2i+1,2j], d=x[2i+1,2j+1] and the default sign::

      LL = (a+b+c+d)/2   = pywt cA       low  along W, low  along H
      LH = (a+b-c-d)/2   = pywt cH       low  along W, high along H  (horizontal edges)
      HL = (a-b+c-d)/2   = pywt cV       high along W, low  along H  (vertical edges)
      HH = (a-b-c+d)/2   = pywt cD       high along both

  ``order="pywt"`` (default) stacks (LL, LH, HL, HH) = (cA, cH, cV, cD): the first letter
  names the filter along the width axis (dim -1), the second along the height axis (dim -2).
  ``order="singer"`` stacks (cA, cV, cH, cD): the order of the official SINGER code, whose
  WaveCNet layer names its outputs LL, LH, HL, HH with the *first* letter along the height
  axis. The official MSM/SFM weights multiply the bands in that order.
* **Odd sizes** (``mode``). An odd axis of length N is extended by one sample before the
  transform, with PyWavelets' rule for that mode: symmetric/constant/periodization repeat
  x[N-1]; reflect uses x[N-2]; zero uses 0; periodic uses x[0]; smooth uses 2x[N-1]-x[N-2];
  antisymmetric uses -x[N-1]. Coefficients therefore have ceil(N/2) samples and match
  ``pywt.dwt*(..., mode=mode)`` exactly. The inverse reconstructs 2*ceil(N/2) samples and,
  given ``size``, crops to the original length, restoring it exactly.

Shapes
------
* ``haar_dwt2(x)``: x (*, H, W) -> (*, 4, ceil(H/2), ceil(W/2)); any batch shape.
* ``haar_dwt1d(x, dim)``: a band axis of size 2 is inserted just before ``dim``, and ``dim``
  becomes ceil(N/2) long: x (B, N, C), dim=1 -> (B, 2, ceil(N/2), C).
* Multi-level: ``haar_wavedec2(x, levels)`` -> (approx (*, h_J, w_J), [details_1..details_J])
  with details_j (*, 3, h_j, w_j), finest level first (as pytorch_wavelets; PyWavelets lists
  coarsest first). 1D likewise, details shaped like the input with ``dim`` shortened.

Speed: CPU float32/float64 tensors go through fused single-pass kernels
(:mod:`singer_core.ops.haar_kernels`); other dtypes/devices use torch ops (half/bfloat16 are
computed in float32). Pass ``out=`` to write into a preallocated buffer. The transform is
linear and orthonormal, so the backward of the forward transform is the inverse transform and
vice versa; odd-size padding/cropping are ordinary differentiable torch ops around it.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch import nn

from . import haar_kernels

logger = logging.getLogger(__name__)

Mode = Literal[
    "symmetric", "constant", "periodization", "reflect", "zero", "periodic", "smooth", "antisymmetric"
]
BandOrder = Literal["pywt", "singer"]
Convention = Literal["convolution", "correlation"]

MODES: tuple[str, ...] = (
    "symmetric", "constant", "periodization", "reflect", "zero", "periodic", "smooth", "antisymmetric",
)
BAND_NAMES: dict[str, tuple[str, str, str, str]] = {
    # the four planes along the sub-band axis in stacking order, named in this module's
    # convention (first letter: filter along W, second: along H)
    "pywt": ("LL", "LH", "HL", "HH"),
    "singer": ("LL", "HL", "LH", "HH"),
}
PYWT_NAMES: dict[str, tuple[str, str, str, str]] = {
    "pywt": ("cA", "cH", "cV", "cD"),
    "singer": ("cA", "cV", "cH", "cD"),
}

_HALF_TYPES = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- validation


def _plane_indices(order: str) -> tuple[int, int]:
    """Return the plane index of (horizontal detail cH, vertical detail cV) for ``order``."""
    if order == "pywt":
        return 1, 2
    if order == "singer":
        return 2, 1
    raise ValueError(f"order must be 'pywt' or 'singer', got {order!r}")


def _sign(convention: str) -> float:
    if convention == "convolution":
        return 1.0
    if convention == "correlation":
        return -1.0
    raise ValueError(f"convention must be 'convolution' or 'correlation', got {convention!r}")


def _check_input(x: torch.Tensor, min_ndim: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name}: expected a tensor with at least {min_ndim} dims, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name}: expected a floating-point tensor (float16/bfloat16/float32/float64), got {x.dtype}; "
            "convert it with .float() first"
        )


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_out(out: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor, name: str) -> None:
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name}: out has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if out.dtype != like.dtype or out.device != like.device:
        raise ValueError(
            f"{name}: out is {out.dtype} on {out.device}, expected {like.dtype} on {like.device}"
        )
    if not out.is_contiguous():
        raise ValueError(f"{name}: out must be contiguous")
    if torch.is_grad_enabled() and like.requires_grad:
        raise RuntimeError(f"{name}: out= does not support autograd; call it under torch.no_grad()")


def max_level(size: int) -> int:
    """Deepest useful decomposition level for an axis of ``size`` samples (pywt.dwt_max_level)."""
    return int(math.floor(math.log2(size))) if size >= 1 else 0


def _check_levels(levels: int, sizes: tuple[int, ...], name: str) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"{name}: levels must be an integer >= 1, got {levels!r}")
    deepest = min(max_level(s) for s in sizes)
    if levels > deepest:
        raise ValueError(
            f"{name}: levels={levels} is too deep for size {sizes}: at most {deepest} level(s) "
            f"(each level halves the size; the smallest axis has {min(sizes)} samples)"
        )


# ----------------------------------------------------------------------------- padding


def _extra_sample(x: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
    """The one sample appended after x[N-1] along ``dim`` (odd N), following pywt's mode."""
    n = x.shape[dim]
    last = x.narrow(dim, n - 1, 1)
    if mode in ("symmetric", "constant", "periodization"):
        return last
    if mode == "zero":
        return torch.zeros_like(last)
    if mode == "periodic":
        return x.narrow(dim, 0, 1)
    if mode == "antisymmetric":
        return -last
    if n < 2:
        if mode == "reflect":
            raise ValueError("mode='reflect' needs at least 2 samples along a transformed axis (as pywt)")
        return last  # 'smooth' on a single sample extrapolates a constant
    prev = x.narrow(dim, n - 2, 1)
    return prev if mode == "reflect" else 2 * last - prev  # reflect / smooth


def _pad_even(x: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
    if x.shape[dim] % 2 == 0:
        return x
    return torch.cat([x, _extra_sample(x, dim, mode)], dim=dim)


# ----------------------------------------------------------------------------- even-size kernels


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF_TYPES else dtype


def _dwt2_raw(x3: torch.Tensor, ih: int, iv: int, sign: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """x3: contiguous (B, H, W), even H/W -> (B, 4, H/2, W/2)."""
    nb, height, width = x3.shape
    h, w = height // 2, width // 2
    if out is None:
        out = torch.empty((nb, 4, h, w), dtype=x3.dtype, device=x3.device)
    if nb == 0:
        return out
    if haar_kernels.available(x3):
        haar_kernels.dwt2(x3, out, ih, iv, sign)
        return out
    xv = x3.view(nb, h, 2, w, 2).to(_compute_dtype(x3.dtype))
    a, b = xv[:, :, 0, :, 0], xv[:, :, 0, :, 1]
    c, d = xv[:, :, 1, :, 0], xv[:, :, 1, :, 1]
    s0, d0, s1, d1 = a + b, a - b, c + d, c - d
    planes = [None] * 4
    planes[0] = 0.5 * (s0 + s1)
    planes[ih] = (0.5 * sign) * (s0 - s1)
    planes[iv] = (0.5 * sign) * (d0 + d1)
    planes[3] = 0.5 * (d0 - d1)
    torch.stack([p.to(x3.dtype) for p in planes], dim=1, out=out)
    return out


def _idwt2_raw(y4: torch.Tensor, ih: int, iv: int, sign: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """y4: contiguous (B, 4, h, w) -> (B, 2h, 2w)."""
    nb, _, h, w = y4.shape
    if out is None:
        out = torch.empty((nb, 2 * h, 2 * w), dtype=y4.dtype, device=y4.device)
    if nb == 0:
        return out
    if haar_kernels.available(y4):
        haar_kernels.idwt2(y4, out, ih, iv, sign)
        return out
    yc = y4.to(_compute_dtype(y4.dtype))
    ca, cd = yc[:, 0], yc[:, 3]
    ch, cv = sign * yc[:, ih], sign * yc[:, iv]
    p, q, u, v = ca + ch, ca - ch, cv + cd, cv - cd
    top = torch.stack([0.5 * (p + u), 0.5 * (p - u)], dim=-1)  # (B, h, w, 2): row 2i
    bottom = torch.stack([0.5 * (q + v), 0.5 * (q - v)], dim=-1)  # row 2i+1
    full = torch.stack([top, bottom], dim=2)  # (B, h, 2, w, 2)
    out.view(nb, h, 2, w, 2).copy_(full)
    return out


def _dwt1_raw(x3: torch.Tensor, sign: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """x3: contiguous (O, n, I), even n -> (O, 2, n/2, I)."""
    no, n, ni = x3.shape
    m = n // 2
    if out is None:
        out = torch.empty((no, 2, m, ni), dtype=x3.dtype, device=x3.device)
    if out.numel() == 0:
        return out
    if haar_kernels.available(x3):
        haar_kernels.dwt1(x3, out, sign)
        return out
    xv = x3.view(no, m, 2, ni).to(_compute_dtype(x3.dtype))
    a, b = xv[:, :, 0], xv[:, :, 1]
    r = 1.0 / math.sqrt(2.0)
    torch.stack([(r * (a + b)).to(x3.dtype), (r * sign * (a - b)).to(x3.dtype)], dim=1, out=out)
    return out


def _idwt1_raw(y4: torch.Tensor, sign: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """y4: contiguous (O, 2, m, I) -> (O, 2m, I)."""
    no, _, m, ni = y4.shape
    if out is None:
        out = torch.empty((no, 2 * m, ni), dtype=y4.dtype, device=y4.device)
    if out.numel() == 0:
        return out
    if haar_kernels.available(y4):
        haar_kernels.idwt1(y4, out, sign)
        return out
    yc = y4.to(_compute_dtype(y4.dtype))
    lo, hi = yc[:, 0], sign * yc[:, 1]
    r = 1.0 / math.sqrt(2.0)
    out.view(no, m, 2, ni).copy_(torch.stack([r * (lo + hi), r * (lo - hi)], dim=2))
    return out


class _Dwt2(torch.autograd.Function):
    """Even-size 2D forward transform; its adjoint (= inverse, orthonormal) is the backward."""

    @staticmethod
    def forward(ctx, x3, ih, iv, sign):
        ctx.params = (ih, iv, sign)
        return _dwt2_raw(x3, ih, iv, sign)

    @staticmethod
    def backward(ctx, grad):
        return _Idwt2.apply(grad.contiguous(), *ctx.params), None, None, None


class _Idwt2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y4, ih, iv, sign):
        ctx.params = (ih, iv, sign)
        return _idwt2_raw(y4, ih, iv, sign)

    @staticmethod
    def backward(ctx, grad):
        return _Dwt2.apply(grad.contiguous(), *ctx.params), None, None, None


class _Dwt1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x3, sign):
        ctx.sign = sign
        return _dwt1_raw(x3, sign)

    @staticmethod
    def backward(ctx, grad):
        return _Idwt1.apply(grad.contiguous(), ctx.sign), None


class _Idwt1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y4, sign):
        ctx.sign = sign
        return _idwt1_raw(y4, sign)

    @staticmethod
    def backward(ctx, grad):
        return _Dwt1.apply(grad.contiguous(), ctx.sign), None


# ----------------------------------------------------------------------------- 2D public API


def haar_dwt2(
    x: torch.Tensor,
    *,
    mode: Mode = "symmetric",
    order: BandOrder = "pywt",
    convention: Convention = "convolution",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One level of the 2D Haar DWT on the last two dims.

    Args:
        x: (*, H, W) floating tensor, any batch shape, H, W >= 1.
        mode: extension of odd axes (see module docstring), as in PyWavelets.
        order: "pywt" -> planes (cA, cH, cV, cD); "singer" -> (cA, cV, cH, cD), the official
            SINGER layer's (LL, LH, HL, HH).
        convention: "convolution" (PyWavelets/official sign) or "correlation".
        out: optional preallocated contiguous (*, 4, ceil(H/2), ceil(W/2)) buffer (no autograd).

    Returns:
        (*, 4, ceil(H/2), ceil(W/2)) sub-bands stacked on dim -3.
    """
    _check_input(x, 2, "haar_dwt2")
    _check_mode(mode)
    ih, iv = _plane_indices(order)
    sign = _sign(convention)
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"haar_dwt2: both transformed axes need >= 1 sample, got shape {tuple(x.shape)}")
    x = _pad_even(_pad_even(x, -2, mode), -1, mode)
    *batch, height, width = x.shape
    h, w = height // 2, width // 2
    x3 = x.reshape(-1, height, width).contiguous()
    if out is not None:
        _check_out(out, (*batch, 4, h, w), x, "haar_dwt2")
        _dwt2_raw(x3, ih, iv, sign, out.view(-1, 4, h, w))
        return out
    return _Dwt2.apply(x3, ih, iv, sign).view(*batch, 4, h, w)


def _check_size(size, coeff_shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    full = tuple(2 * s for s in coeff_shape)
    if size is None:
        return full
    size = tuple(int(s) for s in size)
    if len(size) != len(coeff_shape) or any(s not in (f - 1, f) or s < 1 for s, f in zip(size, full, strict=True)):
        raise ValueError(
            f"{name}: size={size} cannot come from coefficients of shape {coeff_shape}; "
            f"each entry must be 2*n or 2*n-1 for coefficient length n (here {full} or one less)"
        )
    return size


def haar_idwt2(
    bands: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    order: BandOrder = "pywt",
    convention: Convention = "convolution",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2`.

    Args:
        bands: (*, 4, h, w) sub-bands in the given ``order``.
        size: original (H, W); each must be 2h or 2h-1 (resp. w). Default (2h, 2w).
        out: optional preallocated contiguous (*, H, W) buffer (no autograd).

    Returns:
        (*, H, W) reconstruction.
    """
    _check_input(bands, 3, "haar_idwt2")
    if bands.shape[-3] != 4:
        raise ValueError(
            f"haar_idwt2: expected 4 sub-bands on dim -3, got shape {tuple(bands.shape)}"
        )
    ih, iv = _plane_indices(order)
    sign = _sign(convention)
    *batch, _, h, w = bands.shape
    height, width = _check_size(size, (h, w), "haar_idwt2")
    y4 = bands.reshape(-1, 4, h, w).contiguous()
    if out is not None:
        _check_out(out, (*batch, height, width), bands, "haar_idwt2")
        if (height, width) == (2 * h, 2 * w):
            _idwt2_raw(y4, ih, iv, sign, out.view(-1, 2 * h, 2 * w))
        else:
            out.copy_(_idwt2_raw(y4, ih, iv, sign).view(*batch, 2 * h, 2 * w)[..., :height, :width])
        return out
    full = _Idwt2.apply(y4, ih, iv, sign).view(*batch, 2 * h, 2 * w)
    if (height, width) != (2 * h, 2 * w):
        full = full[..., :height, :width]
    return full


def haar_wavedec2(
    x: torch.Tensor,
    levels: int,
    *,
    mode: Mode = "symmetric",
    order: BandOrder = "pywt",
    convention: Convention = "convolution",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """J-level 2D Haar decomposition.

    Returns:
        approx (*, h_J, w_J) and details [(*, 3, h_j, w_j) for j = 1..J], finest first; the
        three detail planes follow ``order`` without the approximation.
    """
    _check_input(x, 2, "haar_wavedec2")
    _check_levels(levels, tuple(x.shape[-2:]), "haar_wavedec2")
    details = []
    approx = x
    for _ in range(levels):
        bands = haar_dwt2(approx, mode=mode, order=order, convention=convention)
        approx = bands[..., 0, :, :]
        details.append(bands[..., 1:, :, :])
    return approx, details


def haar_waverec2(
    approx: torch.Tensor,
    details: list[torch.Tensor],
    *,
    size: tuple[int, int] | None = None,
    order: BandOrder = "pywt",
    convention: Convention = "convolution",
) -> torch.Tensor:
    """Inverse of :func:`haar_wavedec2`; ``size`` restores an odd original (H, W)."""
    if not details:
        raise ValueError("haar_waverec2: details is empty; pass the list returned by haar_wavedec2")
    current = approx
    for level in range(len(details) - 1, -1, -1):
        detail = details[level]
        if detail.ndim < 3 or detail.shape[-3] != 3:
            raise ValueError(
                f"haar_waverec2: details[{level}] must be (*, 3, h, w), got {tuple(detail.shape)}"
            )
        h, w = detail.shape[-2:]
        current = current[..., :h, :w]  # drop the sample an odd size gained at this level
        if tuple(current.shape[-2:]) != (h, w):
            raise ValueError(
                f"haar_waverec2: approximation {tuple(current.shape)} does not fit details[{level}] "
                f"{tuple(detail.shape)}"
            )
        bands = torch.cat([current.unsqueeze(-3), detail], dim=-3)
        current = haar_idwt2(bands, size=size if level == 0 else None, order=order, convention=convention)
    return current


# ----------------------------------------------------------------------------- 1D public API


def _normalize_dim(dim: int, ndim: int, name: str) -> int:
    if not -ndim <= dim < ndim:
        raise ValueError(f"{name}: dim={dim} is out of range for a {ndim}-d tensor")
    return dim % ndim


def haar_dwt1d(
    x: torch.Tensor,
    dim: int = -1,
    *,
    mode: Mode = "symmetric",
    convention: Convention = "convolution",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One level of the 1D Haar DWT along ``dim``.

    Args:
        x: (..., N, ...) floating tensor; N = x.shape[dim] >= 1.
        dim: the axis to transform.
        out: optional preallocated contiguous buffer of the result's shape (no autograd).

    Returns:
        x's shape with ``dim`` replaced by (2, ceil(N/2)): index 0 = low band, 1 = high band.
    """
    _check_input(x, 1, "haar_dwt1d")
    _check_mode(mode)
    sign = _sign(convention)
    axis = _normalize_dim(dim, x.ndim, "haar_dwt1d")
    if x.shape[axis] == 0:
        raise ValueError(f"haar_dwt1d: the transformed axis is empty (shape {tuple(x.shape)})")
    x = _pad_even(x, axis, mode)
    shape = tuple(x.shape)
    n = shape[axis]
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
    result_shape = (*shape[:axis], 2, n // 2, *shape[axis + 1 :])
    x3 = x.reshape(outer, n, inner).contiguous()
    if out is not None:
        _check_out(out, result_shape, x, "haar_dwt1d")
        _dwt1_raw(x3, sign, out.view(outer, 2, n // 2, inner))
        return out
    return _Dwt1.apply(x3, sign).view(result_shape)


def haar_idwt1d(
    bands: torch.Tensor,
    dim: int = -1,
    *,
    size: int | None = None,
    convention: Convention = "convolution",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inverse of :func:`haar_dwt1d`.

    Args:
        bands: (..., 2, m, ...) as returned by :func:`haar_dwt1d` for the same ``dim``.
        dim: the axis of the *reconstructed* signal (the value given to the forward call).
        size: original length N (2m or 2m-1). Default 2m.
    """
    _check_input(bands, 2, "haar_idwt1d")
    sign = _sign(convention)
    axis = _normalize_dim(dim, bands.ndim - 1, "haar_idwt1d")
    if bands.shape[axis] != 2:
        raise ValueError(
            f"haar_idwt1d: expected the 2 bands on dim {axis} (just before the coefficient axis), "
            f"got shape {tuple(bands.shape)}"
        )
    shape = tuple(bands.shape)
    m = shape[axis + 1]
    (length,) = _check_size(None if size is None else (size,), (m,), "haar_idwt1d")
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 2 :])
    y4 = bands.reshape(outer, 2, m, inner).contiguous()
    full_shape = (*shape[:axis], 2 * m, *shape[axis + 2 :])
    result_shape = (*shape[:axis], length, *shape[axis + 2 :])
    if out is not None:
        _check_out(out, result_shape, bands, "haar_idwt1d")
        if length == 2 * m:
            _idwt1_raw(y4, sign, out.view(outer, 2 * m, inner))
        else:
            out.copy_(_idwt1_raw(y4, sign).view(full_shape).narrow(axis, 0, length))
        return out
    full = _Idwt1.apply(y4, sign).view(full_shape)
    return full if length == 2 * m else full.narrow(axis, 0, length)


def haar_wavedec1d(
    x: torch.Tensor,
    levels: int,
    dim: int = -1,
    *,
    mode: Mode = "symmetric",
    convention: Convention = "convolution",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """J-level 1D decomposition along ``dim``: (approx, [detail_1 .. detail_J]), finest first;
    every array keeps x's layout with ``dim`` shortened."""
    _check_input(x, 1, "haar_wavedec1d")
    axis = _normalize_dim(dim, x.ndim, "haar_wavedec1d")
    _check_levels(levels, (x.shape[axis],), "haar_wavedec1d")
    details = []
    approx = x
    for _ in range(levels):
        bands = haar_dwt1d(approx, axis, mode=mode, convention=convention)
        approx = bands.select(axis, 0)
        details.append(bands.select(axis, 1))
    return approx, details


def haar_waverec1d(
    approx: torch.Tensor,
    details: list[torch.Tensor],
    dim: int = -1,
    *,
    size: int | None = None,
    convention: Convention = "convolution",
) -> torch.Tensor:
    """Inverse of :func:`haar_wavedec1d`; ``size`` restores an odd original length."""
    if not details:
        raise ValueError("haar_waverec1d: details is empty; pass the list returned by haar_wavedec1d")
    axis = _normalize_dim(dim, approx.ndim, "haar_waverec1d")
    current = approx
    for level in range(len(details) - 1, -1, -1):
        detail = details[level]
        m = detail.shape[axis]
        current = current.narrow(axis, 0, min(m, current.shape[axis]))
        if current.shape != detail.shape:
            raise ValueError(
                f"haar_waverec1d: approximation {tuple(current.shape)} does not fit details[{level}] "
                f"{tuple(detail.shape)}"
            )
        bands = torch.stack([current, detail], dim=axis)
        current = haar_idwt1d(bands, axis, size=size if level == 0 else None, convention=convention)
    return current


# ----------------------------------------------------------------------------- modules


class HaarDWT2d(nn.Module):
    """2D Haar analysis on the last two dims.

    Args:
        levels: 1 returns the (*, 4, h, w) sub-bands; J > 1 returns (approx, details) as
            :func:`haar_wavedec2`.
        mode: odd-size extension (PyWavelets names).
        order: "pywt" or "singer" (official SINGER layer order).
        convention: "convolution" (PyWavelets sign) or "correlation".
    """

    def __init__(self, levels: int = 1, mode: Mode = "symmetric", order: BandOrder = "pywt",
                 convention: Convention = "convolution"):
        super().__init__()
        _check_levels(levels, (1 << 30,), "HaarDWT2d")
        _check_mode(mode)
        _plane_indices(order)
        _sign(convention)
        self.levels, self.mode, self.order, self.convention = levels, mode, order, convention

    def forward(self, x: torch.Tensor):
        if self.levels == 1:
            return haar_dwt2(x, mode=self.mode, order=self.order, convention=self.convention)
        return haar_wavedec2(x, self.levels, mode=self.mode, order=self.order, convention=self.convention)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, mode={self.mode}, order={self.order}, convention={self.convention}"


class HaarIDWT2d(nn.Module):
    """Inverse of :class:`HaarDWT2d`: takes the sub-bands (levels=1) or (approx, details)."""

    def __init__(self, levels: int = 1, order: BandOrder = "pywt", convention: Convention = "convolution"):
        super().__init__()
        _check_levels(levels, (1 << 30,), "HaarIDWT2d")
        _plane_indices(order)
        _sign(convention)
        self.levels, self.order, self.convention = levels, order, convention

    def forward(self, coeffs, size: tuple[int, int] | None = None) -> torch.Tensor:
        if self.levels == 1:
            return haar_idwt2(coeffs, size=size, order=self.order, convention=self.convention)
        approx, details = coeffs
        return haar_waverec2(approx, details, size=size, order=self.order, convention=self.convention)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, order={self.order}, convention={self.convention}"


class HaarDWT1d(nn.Module):
    """1D Haar analysis along ``dim``: levels=1 -> bands tensor, J > 1 -> (approx, details)."""

    def __init__(self, levels: int = 1, dim: int = -1, mode: Mode = "symmetric",
                 convention: Convention = "convolution"):
        super().__init__()
        _check_levels(levels, (1 << 30,), "HaarDWT1d")
        _check_mode(mode)
        _sign(convention)
        self.levels, self.dim, self.mode, self.convention = levels, dim, mode, convention

    def forward(self, x: torch.Tensor):
        if self.levels == 1:
            return haar_dwt1d(x, self.dim, mode=self.mode, convention=self.convention)
        return haar_wavedec1d(x, self.levels, self.dim, mode=self.mode, convention=self.convention)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, dim={self.dim}, mode={self.mode}, convention={self.convention}"


class HaarIDWT1d(nn.Module):
    """Inverse of :class:`HaarDWT1d`."""

    def __init__(self, levels: int = 1, dim: int = -1, convention: Convention = "convolution"):
        super().__init__()
        _check_levels(levels, (1 << 30,), "HaarIDWT1d")
        _sign(convention)
        self.levels, self.dim, self.convention = levels, dim, convention

    def forward(self, coeffs, size: int | None = None) -> torch.Tensor:
        if self.levels == 1:
            return haar_idwt1d(coeffs, self.dim, size=size, convention=self.convention)
        approx, details = coeffs
        return haar_waverec1d(approx, details, self.dim, size=size, convention=self.convention)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, dim={self.dim}, convention={self.convention}"
