"""Fused single-pass Haar kernels for CPU tensors (float32/float64), compiled with numba.

Every kernel reads its input once and writes its output once, so a transform costs about
one memory copy (see ``benchmarks/wavelet.py``). The kernels handle even sizes only; the
public functions in :mod:`singer_core.ops.wavelet` pad odd sizes before calling them and
fall back to plain torch ops for other devices/dtypes or when numba is missing.

numba is imported on first use, never at import time (importing it costs ~0.3 s), and each
kernel is compiled on its first call.

The kernels are serial on purpose (as the renderer's, ``face/render.py``). Compiled with
``parallel=True`` they ran on numba's "omp" threading layer (its default when OpenMP is present): a
second OpenMP pool beside torch's, whose threads keep spinning after every region. On the 2-core
machine, under load, a forward + inverse pair on (16, 1280, 8, 8) took 1.4 ms at best in parallel
but 9-21 ms whenever the cores were contended (the region's barrier waits for a descheduled pool
thread); serially it takes 1.4-1.7 ms steadily, and large, memory-bound transforms run as fast
(``python benchmarks/wavelet.py --interference`` times torch work and Haar calls interleaved).
OpenMP's wait policy is read once, when the runtime loads, and numba's "workqueue" layer (which does
not spin) aborts when two threads launch kernels at once. The serial kernels release the GIL and are
re-entrant: callers on several threads run them concurrently, without a lock.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import torch

logger = logging.getLogger(__name__)

_SQRT_HALF = 1.0 / math.sqrt(2.0)
# Rows at least this wide use the two-stage 2D kernels. Measured on 2 cores, float32,
# (1024..4096, 32, W): the two-stage forward wins from W=16, the two-stage inverse from W~48.
_WIDE_FORWARD = 16
_WIDE_INVERSE = 48


@functools.lru_cache(maxsize=1)
def _compiled():
    """Return the dict of compiled kernels, or None when numba is unavailable."""
    try:
        from numba import njit
    except Exception as error:  # ImportError, or a broken llvmlite install
        logger.info("numba unavailable (%s); Haar transforms use the torch path", error)
        return None

    # No on-disk cache: numba's cache records the importing module's name, and ComfyUI imports
    # this package under a path-derived name, so a cache written inside ComfyUI breaks the
    # plain `singer_core` import (and vice versa). Compiling costs < 1 s per kernel, once per
    # process, on first use.
    opts = dict(fastmath=True, cache=False, nogil=True)  # serial: see the module docstring

    def make_2d(ih: int, iv: int):
        """Kernels for one band order; ih/iv (plane of cH/cV) are compile-time constants so the
        stores vectorise. Scale factors arrive as scalars of the array's dtype (a Python float
        would be typed float64 and push float32 arithmetic to float64): ``half`` = 0.5 and
        ``half_sg`` = 0.5 * sign, where sign (+-1) is the high-pass convention."""

        # x: (B, h, 2, w, 2) view of (B, H, W); out: (B, 4, h, w)
        @njit(**opts)
        def dwt2_images(x, out, half, half_sg):
            nb, h, _, w, _ = x.shape
            for b in range(nb):
                for i in range(h):
                    for j in range(w):
                        a = x[b, i, 0, j, 0]
                        bb = x[b, i, 0, j, 1]
                        c = x[b, i, 1, j, 0]
                        d = x[b, i, 1, j, 1]
                        s0 = a + bb
                        d0 = a - bb
                        s1 = c + d
                        d1 = c - d
                        out[b, 0, i, j] = half * (s0 + s1)
                        out[b, ih, i, j] = half_sg * (s0 - s1)
                        out[b, iv, i, j] = half_sg * (d0 + d1)
                        out[b, 3, i, j] = half * (d0 - d1)

        # y: (B, 4, h, w); out: (B, h, 2, w, 2) view of (B, H, W)
        @njit(**opts)
        def idwt2_images(y, out, half, half_sg):
            nb, _, h, w = y.shape
            for b in range(nb):
                for i in range(h):
                    for j in range(w):
                        ca = half * y[b, 0, i, j]
                        ch = half_sg * y[b, ih, i, j]
                        cv = half_sg * y[b, iv, i, j]
                        cd = half * y[b, 3, i, j]
                        p = ca + ch
                        q = ca - ch
                        u = cv + cd
                        v = cv - cd
                        out[b, i, 0, j, 0] = (p + u)
                        out[b, i, 0, j, 1] = (p - u)
                        out[b, i, 1, j, 0] = (q + v)
                        out[b, i, 1, j, 1] = (q - v)

        # Two-stage variants for wide rows: the vertical butterfly runs on contiguous
        # rows, the horizontal one on two row-sized temporaries that stay in L1.
        # x: (B, h, 2, W); out: (B, 4, h, W/2)
        @njit(**opts)
        def dwt2_wide(x, out, half, half_sg):
            nb, h, _, width = x.shape
            w = width // 2
            s = np.empty(width, x.dtype)
            d = np.empty(width, x.dtype)
            for b in range(nb):
                for i in range(h):
                    for j in range(width):
                        top = x[b, i, 0, j]
                        bottom = x[b, i, 1, j]
                        s[j] = top + bottom
                        d[j] = top - bottom
                    for j in range(w):
                        out[b, 0, i, j] = half * (s[2 * j] + s[2 * j + 1])
                        out[b, iv, i, j] = half_sg * (s[2 * j] - s[2 * j + 1])
                        out[b, ih, i, j] = half_sg * (d[2 * j] + d[2 * j + 1])
                        out[b, 3, i, j] = half * (d[2 * j] - d[2 * j + 1])

        # y: (B, 4, h, w); out: (B, h, 2, 2w)
        @njit(**opts)
        def idwt2_wide(y, out, half, half_sg):
            nb, _, h, w = y.shape
            width = 2 * w
            low = np.empty(width, y.dtype)
            high = np.empty(width, y.dtype)
            for b in range(nb):
                for i in range(h):
                    for j in range(w):
                        ca = half * y[b, 0, i, j]
                        ch = half_sg * y[b, ih, i, j]
                        cv = half_sg * y[b, iv, i, j]
                        cd = half * y[b, 3, i, j]
                        low[2 * j] = ca + cv
                        low[2 * j + 1] = ca - cv
                        high[2 * j] = ch + cd
                        high[2 * j + 1] = ch - cd
                    for j in range(width):
                        out[b, i, 0, j] = low[j] + high[j]
                        out[b, i, 1, j] = low[j] - high[j]

        return {"dwt2_images": dwt2_images, "idwt2_images": idwt2_images,
                "dwt2_wide": dwt2_wide, "idwt2_wide": idwt2_wide}

    # ------------------------------------------------------------------ 1D
    # x: (O, m, 2, I) view of (O, n, I); out: (O, 2, m, I)
    @njit(**opts)
    def dwt1(x, out, scale, scale_sg):
        no, m, _, ni = x.shape
        for o in range(no):
            for k in range(m):
                for t in range(ni):
                    a = x[o, k, 0, t]
                    b = x[o, k, 1, t]
                    out[o, 0, k, t] = scale * (a + b)
                    out[o, 1, k, t] = scale_sg * (a - b)

    # x: (O, m, 2) view of (O, n) -- the transformed axis is the last one
    @njit(**opts)
    def dwt1_last(x, out, scale, scale_sg):
        no, m, _ = x.shape
        for o in range(no):
            for k in range(m):
                a = x[o, k, 0]
                b = x[o, k, 1]
                out[o, 0, k] = scale * (a + b)
                out[o, 1, k] = scale_sg * (a - b)

    @njit(**opts)
    def idwt1(y, out, scale, scale_sg):
        no, _, m, ni = y.shape
        for o in range(no):
            for k in range(m):
                for t in range(ni):
                    lo = scale * y[o, 0, k, t]
                    hi = scale_sg * y[o, 1, k, t]
                    out[o, k, 0, t] = lo + hi
                    out[o, k, 1, t] = lo - hi

    @njit(**opts)
    def idwt1_last(y, out, scale, scale_sg):
        no, _, m = y.shape
        for o in range(no):
            for k in range(m):
                lo = scale * y[o, 0, k]
                hi = scale_sg * y[o, 1, k]
                out[o, k, 0] = lo + hi
                out[o, k, 1] = lo - hi

    return {
        (1, 2): make_2d(1, 2),  # pywt order: cH in plane 1, cV in plane 2
        (2, 1): make_2d(2, 1),  # official SINGER order
        "dwt1": dwt1,
        "dwt1_last": dwt1_last,
        "idwt1": idwt1,
        "idwt1_last": idwt1_last,
    }


def available(t: torch.Tensor) -> bool:
    """Whether the fused kernels can handle ``t`` (CPU float32/float64, numba importable)."""
    return (
        t.is_cpu
        and t.dtype in (torch.float32, torch.float64)
        and not t.is_conj()
        and _compiled() is not None
    )


@functools.cache
def _scalars(dtype: torch.dtype, *values: float):
    """Python floats -> numpy scalars of ``dtype`` (numba would type a float as float64)."""
    kind = np.float32 if dtype == torch.float32 else np.float64
    return tuple(kind(v) for v in values)


def dwt2(x: torch.Tensor, out: torch.Tensor, ih: int, iv: int, sign: float) -> None:
    """x: contiguous (B, H, W), H and W even -> out: contiguous (B, 4, H/2, W/2)."""
    kernels = _compiled()[(ih, iv)]
    nb, height, width = x.shape
    half, half_sg = _scalars(x.dtype, 0.5, 0.5 * sign)
    if width >= _WIDE_FORWARD:
        kernels["dwt2_wide"](x.numpy().reshape(nb, height // 2, 2, width), out.numpy(), half, half_sg)
    else:
        kernels["dwt2_images"](x.numpy().reshape(nb, height // 2, 2, width // 2, 2), out.numpy(), half, half_sg)


def idwt2(y: torch.Tensor, out: torch.Tensor, ih: int, iv: int, sign: float) -> None:
    """y: contiguous (B, 4, h, w) -> out: contiguous (B, 2h, 2w)."""
    kernels = _compiled()[(ih, iv)]
    nb, _, h, w = y.shape
    half, half_sg = _scalars(y.dtype, 0.5, 0.5 * sign)
    if 2 * w >= _WIDE_INVERSE:
        kernels["idwt2_wide"](y.numpy(), out.numpy().reshape(nb, h, 2, 2 * w), half, half_sg)
    else:
        kernels["idwt2_images"](y.numpy(), out.numpy().reshape(nb, h, 2, w, 2), half, half_sg)


def dwt1(x: torch.Tensor, out: torch.Tensor, sign: float) -> None:
    """x: contiguous (O, n, I), n even -> out: contiguous (O, 2, n/2, I)."""
    k = _compiled()
    no, n, ni = x.shape
    scale, scale_sg = _scalars(x.dtype, _SQRT_HALF, _SQRT_HALF * sign)
    if ni == 1:
        k["dwt1_last"](x.numpy().reshape(no, n // 2, 2), out.numpy().reshape(no, 2, n // 2), scale, scale_sg)
    else:
        k["dwt1"](x.numpy().reshape(no, n // 2, 2, ni), out.numpy(), scale, scale_sg)


def idwt1(y: torch.Tensor, out: torch.Tensor, sign: float) -> None:
    """y: contiguous (O, 2, m, I) -> out: contiguous (O, 2m, I)."""
    k = _compiled()
    no, _, m, ni = y.shape
    scale, scale_sg = _scalars(y.dtype, _SQRT_HALF, _SQRT_HALF * sign)
    if ni == 1:
        k["idwt1_last"](y.numpy().reshape(no, 2, m), out.numpy().reshape(no, m, 2), scale, scale_sg)
    else:
        k["idwt1"](y.numpy(), out.numpy().reshape(no, m, 2, ni), scale, scale_sg)
