"""Fused Triton GPU kernels for the audio NeRF (DAMC §2.4 on ER-NeRF): the multi-resolution hash-grid encoding
(Instant-NGP §3, torch-ngp layout of ops/hashgrid.py) and alpha compositing (NeRF eq. 3 with Instant-NGP early
ray termination, ops/volume.py), each with its backward.

Dispatch
--------
``ops.hashgrid`` and ``ops.volume`` call :func:`use_triton` with their input tensors and a backend name:

* ``"torch"``: always the plain PyTorch path (the reference; CPU results never depend on this module);
* ``"auto"`` (default): Triton when every input is a CUDA tensor of dtype float32 / float16, ``triton``
  imports and CUDA works; otherwise torch. CPU tensors never import triton;
* ``"triton"``: Triton or a ValueError saying why it cannot run. With ``TRITON_INTERPRET=1`` in the
  environment *before the first kernel is built*, CPU tensors run through Triton's interpreter (tests).

``backend=None`` (the default of ``composite`` and the encoders) means the process-wide default, ``"auto"``
unless changed with :func:`set_backend` or temporarily with ``with use_backend("torch"): ...``.

Nothing happens on import: triton is imported and the kernels are compiled on the first call that needs
them (:func:`_kernels`, cached). The kernel bodies are plain functions here; the builder wraps them with
``triton.jit`` and publishes ``tl`` in this module's namespace, where Triton resolves names.

Numerics (both kernels compute in float32 whatever the input dtype; outputs take the torch path's dtype):

* hash grid: positions ``u * scale_l + 0.5`` in float32 (the torch path computes them in the input
  dtype, so float16 inputs are *more* precise here); the spatial hash is evaluated in int64 with the
  y-prime reduced mod 2^31, which leaves the low ``log2_table_size <= 30`` bits unchanged.
* compositing: the same formulas as the torch path (exclusive cumulative optical depth, alpha,
  ``T >= early_stop`` test), accumulated chunk by chunk along the ray; colours and depths of samples
  past the termination point are not read at all (they would get weight 0). Its backward is a Triton
  kernel too (analytic, two passes over the samples, nothing recomputed through torch); the suffix sums
  it needs are taken as total minus prefix, which roughly doubles the torch path's float32 rounding error
  on the gradients (about 2e-5 of the largest gradient in the tests).
* hash-grid backward: table gradients by float32 atomic adds (order-dependent rounding, like any
  scatter-add on a GPU); coordinate gradients when the inputs require grad, as the torch path gives.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "triton")
TRITON_DTYPES = (torch.float32, torch.float16)
HASH_BLOCK = 128                  # points per program of the hash-grid kernels
COMPOSITE_TILE = 1024             # rays x samples per program of the compositing kernels
PRIME_Y_LOW31 = 2654435761 & 0x7FFFFFFF  # Instant-NGP's y prime mod 2^31 (same low 31 bits, fits int32)
PRIME_Z = 805459861               # Instant-NGP's z prime
_FIX = ("put the inputs on a CUDA device as float32/float16 tensors with triton installed (it ships with "
        "the CUDA builds of torch), or use backend='auto' / 'torch'")

_default_backend = "auto"

# Filled in by _kernels(): the Triton language module, looked up by name from the kernel bodies below.
tl = None


# ------------------------------------------------------------------------------------------- dispatch

def set_backend(name: str) -> None:
    """Set the process-wide default backend ("auto", "torch" or "triton") used where backend=None."""
    global _default_backend
    _default_backend = check_backend(name, "set_backend")


def get_backend() -> str:
    """The process-wide default backend."""
    return _default_backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: run the enclosed code with another default backend (restored on exit)."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def check_backend(name, where: str) -> str:
    """`name` if it is one of BACKENDS, else a ValueError naming `where`."""
    if name not in BACKENDS:
        raise ValueError(f"{where}: backend={name!r}; use one of {', '.join(map(repr, BACKENDS))} "
                         "(or None for the default set with set_backend)")
    return name


def interpreting() -> bool:
    """True when TRITON_INTERPRET asks for Triton's CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


@functools.cache
def _import_error() -> str | None:
    """None if triton imports, else the reason (cached: importing triton once is enough)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as error:  # ImportError, or a broken install raising anything else
        return f"triton cannot be imported ({type(error).__name__}: {error})"
    return None


def available() -> bool:
    """True when the Triton kernels can run: triton imports and CUDA works (or TRITON_INTERPRET=1)."""
    if _import_error() is not None:
        return False
    return interpreting() or torch.cuda.is_available()


def _why_not(tensors: Sequence[torch.Tensor]) -> str | None:
    """None when the Triton kernels can take these tensors, else the reason."""
    bad = [str(x.dtype).replace("torch.", "") for x in tensors if x.dtype not in TRITON_DTYPES]
    if bad:
        return f"dtype {', '.join(sorted(set(bad)))} (the kernels take float32 or float16)"
    devices = {x.device for x in tensors}
    if len(devices) > 1:
        return f"inputs are on several devices ({', '.join(sorted(map(str, devices)))})"
    device = next(iter(devices))
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        return (f"inputs are on {device.type}; the kernels need CUDA tensors (CPU tensors only under "
                "TRITON_INTERPRET=1, Triton's interpreter)")
    if device.type == "cuda" and not interpreting():
        major, minor = _capability(device.index if device.index is not None else torch.cuda.current_device())
        if major < 7:
            return f"{device} has compute capability {major}.{minor}; Triton needs 7.0 or newer"
    return _import_error()


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def use_triton(where: str, tensors: Sequence[torch.Tensor], backend: str | None) -> bool:
    """Whether `where` (a caller's name, for messages) runs the Triton kernels on `tensors`.

    Args:
        where: name of the calling function or module, quoted in errors.
        tensors: the floating-point inputs that must all be CUDA float32/float16 tensors.
        backend: "auto", "torch", "triton" or None (the default of set_backend).
    Raises:
        ValueError: backend is not a known name, or "triton" was asked for where it cannot run.
    """
    backend = check_backend(get_backend() if backend is None else backend, where)
    if backend == "torch":
        return False
    if backend == "auto":
        if not all(x.is_cuda for x in tensors):   # the common CPU case: never import triton
            return False
        return _why_not(tensors) is None and torch.cuda.is_available()
    reason = _why_not(tensors)
    if reason is not None:
        raise ValueError(f"{where}: backend='triton' cannot run here: {reason}; {_FIX}")
    return True


def _device_guard(tensor: torch.Tensor):
    """Launch on the tensor's own GPU (Triton launches on the current device)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


# --------------------------------------------------------------------------------- hash-grid kernels
# Plain functions wrapped by triton.jit in _kernels(). Layout as in ops/hashgrid.py: coords (N, P, D)
# contiguous, table (P * grid_rows, F) contiguous (grid p's rows start at p * grid_rows), per-level
# scale (L,) float32, stride (L,) int64 (= resolution + 1), offset (L,) int64, dense levels first;
# output (N, P * L * F) grid-major, then level, then feature.

def _hash_level_setup(coords_ptr, scale_ptr, stride_ptr, offset_ptr, points, grid, level, valid, num_dense,
                      grid_rows, P: tl.constexpr, D: tl.constexpr):
    """Per point of one level: lower vertex, fraction per axis, stride, row base, dense flag, position scale."""
    base_ptr = coords_ptr + (points * P + grid) * D
    u0 = tl.minimum(tl.maximum(tl.load(base_ptr, mask=valid, other=0.0).to(tl.float32), 0.0), 1.0)
    u1 = tl.minimum(tl.maximum(tl.load(base_ptr + 1, mask=valid, other=0.0).to(tl.float32), 0.0), 1.0)
    scale = tl.load(scale_ptr + level)
    p0 = u0 * scale + 0.5
    p1 = u1 * scale + 0.5
    low0 = tl.floor(p0)
    low1 = tl.floor(p1)
    if D == 3:
        u2 = tl.minimum(tl.maximum(tl.load(base_ptr + 2, mask=valid, other=0.0).to(tl.float32), 0.0), 1.0)
        p2 = u2 * scale + 0.5
        low2 = tl.floor(p2)
        f2 = p2 - low2
    else:                            # no z axis: vertex z = 0 with weight 1 (fraction 0)
        low2 = tl.zeros_like(low0)
        f2 = tl.zeros_like(low0)
    stride = tl.load(stride_ptr + level)
    row0 = tl.load(offset_ptr + level) + grid.to(tl.int64) * grid_rows
    dense = level < num_dense
    return (low0.to(tl.int64), low1.to(tl.int64), low2.to(tl.int64), p0 - low0, p1 - low1, f2,
            stride, row0, dense, scale)


def _hash_corner(x0, y0, z0, f0, f1, f2, inside, stride, row0, dense, hash_mask, CORNER: tl.constexpr,
                 PRIME_Y: tl.constexpr, PRIME_Z: tl.constexpr):
    """Row and weight of corner CORNER (bit d set = upper vertex on axis d), and the partial weights."""
    if CORNER & 1:
        vx = x0 + 1
        wx = f0
    else:
        vx = x0
        wx = 1.0 - f0
    if CORNER & 2:
        vy = y0 + 1
        wy = f1
    else:
        vy = y0
        wy = 1.0 - f1
    if CORNER & 4:
        vz = z0 + 1
        wz = f2
    else:
        vz = z0
        wz = 1.0 - f2
    dense_row = vx + vy * stride + vz * (stride * stride)
    hashed_row = (vx ^ (vy * PRIME_Y) ^ (vz * PRIME_Z)) & hash_mask
    row = row0 + tl.where(dense, dense_row, hashed_row)
    weight = wx * inside * wy * wz
    return row, weight, wx, wy, wz


def _hash_grid_forward_kernel(coords_ptr, table_ptr, scale_ptr, stride_ptr, offset_ptr, out_ptr, num_points,
                              num_levels, num_dense, hash_mask, grid_rows, P: tl.constexpr, D: tl.constexpr,
                              F: tl.constexpr, FP: tl.constexpr, BLOCK: tl.constexpr, PRIME_Y: tl.constexpr,
                              PRIME_Z: tl.constexpr):
    """One program: BLOCK points of grid program_id(1), all levels; out[n, (p*L + l)*F + f]."""
    grid = tl.program_id(1)
    points = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = points < num_points
    feats = tl.arange(0, FP)
    feat_ok = feats < F
    # 1. inside test on the raw coordinates (outside [0, 1] in any axis: encodes to 0)
    base_ptr = coords_ptr + (points * P + grid) * D
    inside_b = in_range
    for axis in tl.static_range(D):
        value = tl.load(base_ptr + axis, mask=in_range, other=0.0).to(tl.float32)
        inside_b = inside_b & (value >= 0.0) & (value <= 1.0)
    inside = inside_b.to(tl.float32)
    gather_mask = inside_b[:, None] & feat_ok[None, :]
    out_cols = out_ptr + points[:, None] * (P * num_levels * F) + feats[None, :]
    for level in range(num_levels):
        # 2. lower vertex and fractions of this level
        x0, y0, z0, f0, f1, f2, stride, row0, dense, scale = _hash_level_setup(
            coords_ptr, scale_ptr, stride_ptr, offset_ptr, points, grid, level, in_range, num_dense,
            grid_rows, P, D)
        # 3. gather the 2**D corners and interpolate
        acc = tl.zeros([BLOCK, FP], dtype=tl.float32)
        for corner in tl.static_range(1 << D):
            row, weight, wx, wy, wz = _hash_corner(x0, y0, z0, f0, f1, f2, inside, stride, row0, dense,
                                                   hash_mask, corner, PRIME_Y, PRIME_Z)
            values = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=gather_mask, other=0.0)
            acc += weight[:, None] * values.to(tl.float32)
        column = (grid * num_levels + level) * F
        tl.store(out_cols + column, acc.to(out_ptr.dtype.element_ty), mask=in_range[:, None] & feat_ok[None, :])


def _hash_grid_backward_kernel(coords_ptr, table_ptr, scale_ptr, stride_ptr, offset_ptr, grad_out_ptr,
                               grad_table_ptr, grad_coords_ptr, num_points, num_levels, num_dense, hash_mask,
                               grid_rows, P: tl.constexpr, D: tl.constexpr, F: tl.constexpr, FP: tl.constexpr,
                               BLOCK: tl.constexpr, PRIME_Y: tl.constexpr, PRIME_Z: tl.constexpr,
                               TABLE_GRAD: tl.constexpr, COORD_GRAD: tl.constexpr):
    """Table gradient by atomic adds (float32 buffer); coordinate gradient (float32, (N, P, D)) if asked."""
    grid = tl.program_id(1)
    points = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = points < num_points
    feats = tl.arange(0, FP)
    feat_ok = feats < F
    base_ptr = coords_ptr + (points * P + grid) * D
    inside_b = in_range
    for axis in tl.static_range(D):
        value = tl.load(base_ptr + axis, mask=in_range, other=0.0).to(tl.float32)
        inside_b = inside_b & (value >= 0.0) & (value <= 1.0)
    inside = inside_b.to(tl.float32)
    point_mask = inside_b[:, None] & feat_ok[None, :]
    grad_cols = grad_out_ptr + points[:, None] * (P * num_levels * F) + feats[None, :]
    du0 = tl.zeros([BLOCK], dtype=tl.float32)
    du1 = tl.zeros([BLOCK], dtype=tl.float32)
    du2 = tl.zeros([BLOCK], dtype=tl.float32)
    for level in range(num_levels):
        x0, y0, z0, f0, f1, f2, stride, row0, dense, scale = _hash_level_setup(
            coords_ptr, scale_ptr, stride_ptr, offset_ptr, points, grid, level, in_range, num_dense,
            grid_rows, P, D)
        column = (grid * num_levels + level) * F
        grad = tl.load(grad_cols + column, mask=point_mask, other=0.0).to(tl.float32)     # (BLOCK, FP)
        df0 = tl.zeros([BLOCK], dtype=tl.float32)
        df1 = tl.zeros([BLOCK], dtype=tl.float32)
        df2 = tl.zeros([BLOCK], dtype=tl.float32)
        for corner in tl.static_range(1 << D):
            row, weight, wx, wy, wz = _hash_corner(x0, y0, z0, f0, f1, f2, inside, stride, row0, dense,
                                                   hash_mask, corner, PRIME_Y, PRIME_Z)
            flat = row[:, None] * F + feats[None, :]
            if TABLE_GRAD:
                tl.atomic_add(grad_table_ptr + flat, weight[:, None] * grad, mask=point_mask, sem="relaxed")
            if COORD_GRAD:
                values = tl.load(table_ptr + flat, mask=point_mask, other=0.0).to(tl.float32)
                dot = tl.sum(values * grad, axis=1) * inside                               # (BLOCK,)
                if corner & 1:               # d weight / d fraction_x = +-(wy * wz), likewise y and z
                    df0 += dot * (wy * wz)
                else:
                    df0 -= dot * (wy * wz)
                if corner & 2:
                    df1 += dot * (wx * wz)
                else:
                    df1 -= dot * (wx * wz)
                if D == 3:
                    if corner & 4:
                        df2 += dot * (wx * wy)
                    else:
                        df2 -= dot * (wx * wy)
        du0 += df0 * scale
        du1 += df1 * scale
        du2 += df2 * scale
    if COORD_GRAD:
        out_ptr = grad_coords_ptr + (points * P + grid) * D
        tl.store(out_ptr, du0, mask=in_range)
        tl.store(out_ptr + 1, du1, mask=in_range)
        if D == 3:
            tl.store(out_ptr + 2, du2, mask=in_range)


# ------------------------------------------------------------------------------- compositing kernels
# sigma, delta, t, mask: (R, S) with strides (any, e.g. an expanded delta); rgb: (R, S, 3) with strides.

def _composite_tile(sigma_ptr, delta_ptr, mask_ptr, rays, cols, ok, ss_r, ss_s, sd_r, sd_s, sm_r, sm_s,
                    carry, early_stop, HAS_MASK: tl.constexpr):
    """One (rays x samples) tile: optical depths tau, T before each sample, alpha and kept weights."""
    sigma = tl.load(sigma_ptr + rays[:, None] * ss_r + cols[None, :] * ss_s, mask=ok, other=0.0).to(tl.float32)
    delta = tl.load(delta_ptr + rays[:, None] * sd_r + cols[None, :] * sd_s, mask=ok, other=0.0).to(tl.float32)
    live = ok
    if HAS_MASK:
        flag = tl.load(mask_ptr + rays[:, None] * sm_r + cols[None, :] * sm_s, mask=ok, other=0)
        live = ok & (flag != 0)
    tau = tl.where(live, sigma * delta, 0.0)
    accumulated = tl.cumsum(tau, axis=1) + carry[:, None]
    transmittance = tl.exp(-(accumulated - tau))
    alpha = 1.0 - tl.exp(-tau)
    keep = ok & ((transmittance >= early_stop) | (early_stop <= 0.0))
    weight = tl.where(keep, transmittance * alpha, 0.0)
    return sigma, delta, live, tau, transmittance, weight, keep


def _composite_forward_kernel(sigma_ptr, rgb_ptr, delta_ptr, t_ptr, mask_ptr, rgb_out_ptr, depth_ptr,
                              opacity_ptr, weights_ptr, trans_ptr, num_rays, num_samples, ss_r, ss_s, sc_r,
                              sc_s, sc_c, sd_r, sd_s, st_r, st_s, sm_r, sm_s, early_stop,
                              HAS_MASK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """One program: BLOCK_R rays, samples in chunks of BLOCK_S; rgb without background."""
    rays = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    ray_ok = rays < num_rays
    carry = tl.zeros([BLOCK_R], dtype=tl.float32)
    red = tl.zeros([BLOCK_R], dtype=tl.float32)
    green = tl.zeros([BLOCK_R], dtype=tl.float32)
    blue = tl.zeros([BLOCK_R], dtype=tl.float32)
    depth = tl.zeros([BLOCK_R], dtype=tl.float32)
    opacity = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in range(0, num_samples, BLOCK_S):
        cols = start + tl.arange(0, BLOCK_S)
        ok = ray_ok[:, None] & (cols < num_samples)[None, :]
        sigma, delta, live, tau, transmittance, weight, keep = _composite_tile(
            sigma_ptr, delta_ptr, mask_ptr, rays, cols, ok, ss_r, ss_s, sd_r, sd_s, sm_r, sm_s, carry,
            early_stop, HAS_MASK)
        colour_ptr = rgb_ptr + rays[:, None] * sc_r + cols[None, :] * sc_s
        red += tl.sum(weight * tl.load(colour_ptr, mask=keep, other=0.0).to(tl.float32), axis=1)
        green += tl.sum(weight * tl.load(colour_ptr + sc_c, mask=keep, other=0.0).to(tl.float32), axis=1)
        blue += tl.sum(weight * tl.load(colour_ptr + 2 * sc_c, mask=keep, other=0.0).to(tl.float32), axis=1)
        distance = tl.load(t_ptr + rays[:, None] * st_r + cols[None, :] * st_s, mask=keep, other=0.0)
        depth += tl.sum(weight * distance.to(tl.float32), axis=1)
        opacity += tl.sum(weight, axis=1)
        tl.store(weights_ptr + rays[:, None] * num_samples + cols[None, :],
                 weight.to(weights_ptr.dtype.element_ty), mask=ok)
        carry += tl.sum(tau, axis=1)
    element = rgb_out_ptr.dtype.element_ty
    tl.store(rgb_out_ptr + rays * 3, red.to(element), mask=ray_ok)
    tl.store(rgb_out_ptr + rays * 3 + 1, green.to(element), mask=ray_ok)
    tl.store(rgb_out_ptr + rays * 3 + 2, blue.to(element), mask=ray_ok)
    tl.store(depth_ptr + rays, depth.to(element), mask=ray_ok)
    tl.store(opacity_ptr + rays, opacity.to(element), mask=ray_ok)
    tl.store(trans_ptr + rays, tl.exp(-carry).to(element), mask=ray_ok)


def _composite_upstream(rgb_ptr, t_ptr, rays, cols, keep, sc_r, sc_s, sc_c, st_r, st_s, g_red, g_green, g_blue,
                        g_depth, g_opacity, g_weights_ptr, num_samples, ok):
    """dL/dw_i = g_rgb . c_i + g_depth t_i + g_opacity + g_weights_i for one tile (0 where not kept)."""
    colour_ptr = rgb_ptr + rays[:, None] * sc_r + cols[None, :] * sc_s
    red = tl.load(colour_ptr, mask=keep, other=0.0).to(tl.float32)
    green = tl.load(colour_ptr + sc_c, mask=keep, other=0.0).to(tl.float32)
    blue = tl.load(colour_ptr + 2 * sc_c, mask=keep, other=0.0).to(tl.float32)
    distance = tl.load(t_ptr + rays[:, None] * st_r + cols[None, :] * st_s, mask=keep, other=0.0).to(tl.float32)
    g_weight = tl.load(g_weights_ptr + rays[:, None] * num_samples + cols[None, :], mask=ok, other=0.0)
    upstream = (g_red[:, None] * red + g_green[:, None] * green + g_blue[:, None] * blue
                + g_depth[:, None] * distance + g_opacity[:, None] + g_weight.to(tl.float32))
    return tl.where(keep, upstream, 0.0), distance


def _composite_backward_kernel(sigma_ptr, rgb_ptr, delta_ptr, t_ptr, mask_ptr, g_rgb_ptr, g_depth_ptr,
                               g_opacity_ptr, g_weights_ptr, g_trans_ptr, d_sigma_ptr, d_rgb_ptr, d_delta_ptr,
                               d_t_ptr, num_rays, num_samples, ss_r, ss_s, sc_r, sc_s, sc_c, sd_r, sd_s, st_r,
                               st_s, sm_r, sm_s, early_stop, HAS_MASK: tl.constexpr, NEED_SIGMA: tl.constexpr,
                               NEED_RGB: tl.constexpr, NEED_DELTA: tl.constexpr, NEED_T: tl.constexpr,
                               BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """Analytic backward (float32 outputs, contiguous): with G_i = dL/dw_i and kept samples K,

        dL/dtau_i = [i in K] G_i T_i exp(-tau_i) - sum_{j > i} G_j w_j - g_trans T_final
        dL/dsigma_i = dL/dtau_i delta_i, dL/ddelta_i = dL/dtau_i sigma_i (0 on masked samples),
        dL/dc_i = w_i g_rgb, dL/dt_i = w_i g_depth.

    Pass 1 sums G_j w_j per ray, pass 2 recomputes the tiles and takes the suffix sums as total - prefix.
    """
    rays = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    ray_ok = rays < num_rays
    g_red = tl.load(g_rgb_ptr + rays * 3, mask=ray_ok, other=0.0).to(tl.float32)
    g_green = tl.load(g_rgb_ptr + rays * 3 + 1, mask=ray_ok, other=0.0).to(tl.float32)
    g_blue = tl.load(g_rgb_ptr + rays * 3 + 2, mask=ray_ok, other=0.0).to(tl.float32)
    g_depth = tl.load(g_depth_ptr + rays, mask=ray_ok, other=0.0).to(tl.float32)
    g_opacity = tl.load(g_opacity_ptr + rays, mask=ray_ok, other=0.0).to(tl.float32)
    g_trans = tl.load(g_trans_ptr + rays, mask=ray_ok, other=0.0).to(tl.float32)
    # 1. per ray: total optical depth and sum_j G_j w_j
    carry = tl.zeros([BLOCK_R], dtype=tl.float32)
    total = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in range(0, num_samples, BLOCK_S):
        cols = start + tl.arange(0, BLOCK_S)
        ok = ray_ok[:, None] & (cols < num_samples)[None, :]
        sigma, delta, live, tau, transmittance, weight, keep = _composite_tile(
            sigma_ptr, delta_ptr, mask_ptr, rays, cols, ok, ss_r, ss_s, sd_r, sd_s, sm_r, sm_s, carry,
            early_stop, HAS_MASK)
        upstream, distance = _composite_upstream(rgb_ptr, t_ptr, rays, cols, keep, sc_r, sc_s, sc_c, st_r, st_s,
                                                 g_red, g_green, g_blue, g_depth, g_opacity, g_weights_ptr,
                                                 num_samples, ok)
        total += tl.sum(upstream * weight, axis=1)
        carry += tl.sum(tau, axis=1)
    final_term = g_trans * tl.exp(-carry)
    # 2. per sample gradients
    carry = tl.zeros([BLOCK_R], dtype=tl.float32)
    prefix = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in range(0, num_samples, BLOCK_S):
        cols = start + tl.arange(0, BLOCK_S)
        ok = ray_ok[:, None] & (cols < num_samples)[None, :]
        sigma, delta, live, tau, transmittance, weight, keep = _composite_tile(
            sigma_ptr, delta_ptr, mask_ptr, rays, cols, ok, ss_r, ss_s, sd_r, sd_s, sm_r, sm_s, carry,
            early_stop, HAS_MASK)
        upstream, distance = _composite_upstream(rgb_ptr, t_ptr, rays, cols, keep, sc_r, sc_s, sc_c, st_r, st_s,
                                                 g_red, g_green, g_blue, g_depth, g_opacity, g_weights_ptr,
                                                 num_samples, ok)
        contribution = upstream * weight
        inclusive = tl.cumsum(contribution, axis=1) + prefix[:, None]
        after = total[:, None] - inclusive
        d_tau = upstream * transmittance * tl.exp(-tau) - after - final_term[:, None]
        d_tau = tl.where(live, d_tau, 0.0)
        dense = rays[:, None] * num_samples + cols[None, :]
        if NEED_SIGMA:
            tl.store(d_sigma_ptr + dense, d_tau * delta, mask=ok)
        if NEED_DELTA:
            tl.store(d_delta_ptr + dense, d_tau * sigma, mask=ok)
        if NEED_T:
            tl.store(d_t_ptr + dense, weight * g_depth[:, None], mask=ok)
        if NEED_RGB:
            tl.store(d_rgb_ptr + dense * 3, weight * g_red[:, None], mask=ok)
            tl.store(d_rgb_ptr + dense * 3 + 1, weight * g_green[:, None], mask=ok)
            tl.store(d_rgb_ptr + dense * 3 + 2, weight * g_blue[:, None], mask=ok)
        prefix += tl.sum(contribution, axis=1)
        carry += tl.sum(tau, axis=1)


# ------------------------------------------------------------------------------------------- builder

_KERNEL_BODIES = ("_hash_level_setup", "_hash_corner", "_hash_grid_forward_kernel",
                  "_hash_grid_backward_kernel", "_composite_tile", "_composite_forward_kernel", "_composite_upstream",
                  "_composite_backward_kernel")


@functools.cache
def _kernels() -> SimpleNamespace:
    """Import triton, wrap every kernel body with triton.jit (once per process) and return them by name.

    Whether they run compiled or in the interpreter is fixed here, by TRITON_INTERPRET at this first call.
    """
    reason = _import_error()
    if reason is not None:
        raise RuntimeError(f"triton_kernels: {reason}; install triton or use backend='torch'")
    import triton
    import triton.language as language

    namespace = globals()
    namespace["tl"] = language
    for name in _KERNEL_BODIES:
        namespace[name] = triton.jit(namespace[name])
    logger.debug("triton kernels built (interpreter: %s)", interpreting())
    return SimpleNamespace(**{name.strip("_"): namespace[name] for name in _KERNEL_BODIES})


# ------------------------------------------------------------------------------------ hash-grid entry

class _TritonHashGrid(torch.autograd.Function):
    """Fused hash-grid encoding; backward: table gradient (atomic adds) and coordinate gradient."""

    @staticmethod
    def forward(ctx, table, coords, scale, stride, offset, num_dense, hash_mask, grid_rows, block):
        num, grids, dim = coords.shape
        levels, features = scale.shape[0], table.shape[1]
        out = torch.empty(num, grids * levels * features, device=table.device, dtype=table.dtype)
        if num:
            kernels = _kernels()
            with _device_guard(table):
                kernels.hash_grid_forward_kernel[(triton_cdiv(num, block), grids)](
                    coords, table, scale, stride, offset, out, num, levels, num_dense, hash_mask, grid_rows,
                    P=grids, D=dim, F=features, FP=_next_power_of_2(features), BLOCK=block,
                    PRIME_Y=PRIME_Y_LOW31, PRIME_Z=PRIME_Z, num_warps=4)
        ctx.save_for_backward(table, coords, scale, stride, offset)
        ctx.meta = (num_dense, hash_mask, grid_rows, block)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        table, coords, scale, stride, offset = ctx.saved_tensors
        num_dense, hash_mask, grid_rows, block = ctx.meta
        need_table, need_coords = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        num, grids, dim = coords.shape
        features = table.shape[1]
        zeros = functools.partial(torch.zeros, device=table.device, dtype=torch.float32)
        grad_table = zeros(table.shape) if need_table else None
        grad_coords = zeros(coords.shape) if need_coords else None
        if num and (need_table or need_coords):
            kernels = _kernels()
            with _device_guard(table):
                kernels.hash_grid_backward_kernel[(triton_cdiv(num, block), grids)](
                    coords, table, scale, stride, offset, grad_out.contiguous(),
                    grad_table if need_table else table, grad_coords if need_coords else coords, num,
                    scale.shape[0], num_dense, hash_mask, grid_rows, P=grids, D=dim, F=features,
                    FP=_next_power_of_2(features), BLOCK=block, PRIME_Y=PRIME_Y_LOW31, PRIME_Z=PRIME_Z,
                    TABLE_GRAD=need_table, COORD_GRAD=need_coords, num_warps=4)
        return (None if grad_table is None else grad_table.to(table.dtype),
                None if grad_coords is None else grad_coords.to(coords.dtype),
                None, None, None, None, None, None, None)


def hash_grid_encode(table: torch.Tensor, coords: torch.Tensor, scale: torch.Tensor, stride: torch.Tensor,
                     offset: torch.Tensor, *, num_dense: int, hash_mask: int, grid_rows: int = 0,
                     block: int = HASH_BLOCK) -> torch.Tensor:
    """Fused multi-resolution hash-grid encoding of P grids sharing one level layout (Triton).

    Args:
        table: (P * grid_rows, F) float32/float16 (P = 1: any rows); grid p's levels start at row p * grid_rows.
        coords: (N, P, D) float32/float16 in [0, 1], D = 2 or 3; outside [0, 1]^D encodes to 0 (no gradient).
        scale: (L,) float32 level scales; stride: (L,) int64 vertices per axis; offset: (L,) int64 first rows.
        num_dense: the first num_dense levels index densely, the others by the spatial hash.
        hash_mask: table size of the hashed levels minus one (a power of two minus one, < 2**30).
        grid_rows: rows per grid in `table` (P > 1); block: points per program (a power of two).
    Returns:
        (N, P * L * F) in table's dtype, grid-major, then level, then feature; differentiable in `table` and
        `coords` (first order).
    """
    if coords.dim() != 3 or coords.shape[2] not in (2, 3):
        raise ValueError(f"hash_grid_encode: coords have shape {tuple(coords.shape)}; need (N, P, D) with "
                         "D = 2 or 3")
    if table.dim() != 2 or (coords.shape[1] > 1 and table.shape[0] != coords.shape[1] * grid_rows):
        raise ValueError(f"hash_grid_encode: table {tuple(table.shape)} must be (P * grid_rows, F) = "
                         f"({coords.shape[1]} * {grid_rows}, F)")
    if not 0 <= hash_mask < 2 ** 30 or hash_mask & (hash_mask + 1):
        raise ValueError(f"hash_grid_encode: hash_mask={hash_mask}; need 2**k - 1 with k <= 30")
    if block < 1 or block & (block - 1):
        raise ValueError(f"hash_grid_encode: block={block} must be a power of two")
    device = table.device
    return _TritonHashGrid.apply(table.contiguous(), coords.contiguous(),
                                 scale.to(device=device, dtype=torch.float32).contiguous(),
                                 stride.to(device=device, dtype=torch.int64).contiguous(),
                                 offset.to(device=device, dtype=torch.int64).contiguous(),
                                 int(num_dense), int(hash_mask), int(grid_rows), int(block))


# ---------------------------------------------------------------------------------- compositing entry

class _TritonComposite(torch.autograd.Function):
    """Fused compositing; backward: the analytic Triton kernel above (no recomputation through torch)."""

    @staticmethod
    def forward(ctx, sigmas, rgbs, deltas, t, mask, early_stop, tile):
        num_rays, num_samples = sigmas.shape
        dtype = functools.reduce(torch.promote_types, (sigmas.dtype, rgbs.dtype, deltas.dtype, t.dtype))
        device = sigmas.device
        rgb = torch.empty(num_rays, 3, device=device, dtype=dtype)
        depth = torch.empty(num_rays, device=device, dtype=dtype)
        opacity = torch.empty(num_rays, device=device, dtype=dtype)
        weights = torch.empty(num_rays, num_samples, device=device, dtype=dtype)
        transmittance = torch.empty(num_rays, device=device, dtype=dtype)
        block_s, block_r = _composite_blocks(num_samples, tile)
        mask_u8 = mask.view(torch.uint8) if mask is not None else None
        kernels = _kernels()
        with _device_guard(sigmas):
            kernels.composite_forward_kernel[(triton_cdiv(num_rays, block_r),)](
                sigmas, rgbs, deltas, t, sigmas if mask_u8 is None else mask_u8, rgb, depth, opacity, weights,
                transmittance, num_rays, num_samples, *sigmas.stride(), *rgbs.stride(), *deltas.stride(),
                *t.stride(), *(mask_u8.stride() if mask_u8 is not None else (0, 0)), float(early_stop),
                HAS_MASK=mask_u8 is not None, BLOCK_R=block_r, BLOCK_S=block_s, num_warps=4)
        ctx.save_for_backward(sigmas, rgbs, deltas, t, mask_u8)
        ctx.early_stop, ctx.tile = float(early_stop), tile
        return rgb, depth, opacity, weights, transmittance

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_rgb, g_depth, g_opacity, g_weights, g_trans):
        sigmas, rgbs, deltas, t, mask_u8 = ctx.saved_tensors
        need_sigma, need_rgb, need_delta, need_t = ctx.needs_input_grad[:4]
        num_rays, num_samples = sigmas.shape
        device = sigmas.device

        def buffer(shape, needed):
            return torch.empty(shape, device=device, dtype=torch.float32) if needed else None

        d_sigma = buffer((num_rays, num_samples), need_sigma)
        d_rgb = buffer((num_rays, num_samples, 3), need_rgb)
        d_delta = buffer((num_rays, num_samples), need_delta)
        d_t = buffer((num_rays, num_samples), need_t)
        block_s, block_r = _composite_blocks(num_samples, ctx.tile)
        dummy = sigmas
        kernels = _kernels()
        with _device_guard(sigmas):
            kernels.composite_backward_kernel[(triton_cdiv(num_rays, block_r),)](
                sigmas, rgbs, deltas, t, dummy if mask_u8 is None else mask_u8, g_rgb.contiguous(),
                g_depth.contiguous(), g_opacity.contiguous(), g_weights.contiguous(), g_trans.contiguous(),
                dummy if d_sigma is None else d_sigma, dummy if d_rgb is None else d_rgb,
                dummy if d_delta is None else d_delta, dummy if d_t is None else d_t, num_rays, num_samples,
                *sigmas.stride(), *rgbs.stride(), *deltas.stride(), *t.stride(),
                *(mask_u8.stride() if mask_u8 is not None else (0, 0)), ctx.early_stop,
                HAS_MASK=mask_u8 is not None, NEED_SIGMA=need_sigma, NEED_RGB=need_rgb, NEED_DELTA=need_delta,
                NEED_T=need_t, BLOCK_R=block_r, BLOCK_S=block_s, num_warps=4)

        def cast(grad, like):
            return None if grad is None else grad.to(like.dtype)

        return cast(d_sigma, sigmas), cast(d_rgb, rgbs), cast(d_delta, deltas), cast(d_t, t), None, None, None


def composite_triton(sigmas: torch.Tensor, rgbs: torch.Tensor, deltas: torch.Tensor, t: torch.Tensor,
                     mask: torch.Tensor | None = None, early_stop: float = 1e-4, *, tile: int = COMPOSITE_TILE
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused alpha compositing without background (ops.volume.composite adds it), Triton.

    Args:
        sigmas, deltas, t: (R, S) float32/float16 (any strides); rgbs: (R, S, 3); mask: (R, S) bool or None.
        early_stop: samples whose transmittance is below this get weight 0 (0 = off), as in the torch path.
        tile: rays x samples per program (a power of two; samples are processed in chunks of at most 64).
    Returns:
        rgb (R, 3) (no background), depth (R,), opacity (R,), weights (R, S), transmittance (R,) in the promoted
        dtype of the inputs; differentiable in sigmas, rgbs, deltas and t (first order).
    """
    if sigmas.dim() != 2 or rgbs.shape != sigmas.shape + (3,) or deltas.shape != sigmas.shape \
            or t.shape != sigmas.shape or (mask is not None and mask.shape != sigmas.shape):
        raise ValueError(f"composite_triton: sigmas {tuple(sigmas.shape)}, rgbs {tuple(rgbs.shape)}, deltas "
                         f"{tuple(deltas.shape)}, t {tuple(t.shape)}; need (R, S), (R, S, 3), (R, S), (R, S)")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"composite_triton: mask must be bool, got {mask.dtype}")
    if tile < 1 or tile & (tile - 1):
        raise ValueError(f"composite_triton: tile={tile} must be a power of two")
    return _TritonComposite.apply(sigmas, rgbs, deltas, t, mask, float(early_stop), int(tile))


def _composite_blocks(num_samples: int, tile: int) -> tuple[int, int]:
    """(samples per chunk, rays per program) for a tile budget."""
    block_s = min(_next_power_of_2(max(num_samples, 1)), 64, tile)
    return block_s, max(1, tile // block_s)


def _next_power_of_2(value: int) -> int:
    return 1 << max(0, int(value) - 1).bit_length()


def triton_cdiv(a: int, b: int) -> int:
    """ceil(a / b) for launch grids."""
    return -(-a // b)
