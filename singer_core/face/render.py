"""Batched z-buffer mesh renderer for morphable faces: triangle rasterisation with perspective-correct
barycentric interpolation, back-face culling, optional supersampling, and Deep3DFaceRecon's Lambertian
spherical-harmonics shading (27 = 3 colours x 9 coefficients; github sicxu/Deep3DFaceRecon_pytorch,
``models/bfm.py``, ``compute_color``).

Rasterisation
-------------
A pixel (row i, column j) is sampled at its centre (x=j, y=i) (see :mod:`.morphable` for the frames).
It is covered by a triangle when its three edge functions have the triangle's orientation (>= 0: a
pixel centre exactly on an edge belongs to both neighbours, so a closed mesh has no cracks; each
edge function is evaluated from the lower vertex id of the edge, so both neighbours compute exactly
opposite values). Among covering triangles the nearest (smallest perspective-interpolated depth)
wins, ties going to the smaller triangle id. Culled are triangles that face away (clockwise in the
model frame, i.e. positive signed area in pixels), triangles with a vertex at depth <= ``NEAR`` and
degenerate ones.

Two interchangeable backends produce identical triangle-id maps: ``"torch"`` (any device; candidate
(triangle, pixel) pairs over the triangles' bounding boxes, z-buffer by ``scatter_reduce`` of packed
(depth bits, triangle id) keys) and ``"numba"`` (CPU; compiled serial loops over triangles and their
bounding boxes, see :func:`_numba_kernels`). Visibility is not differentiable; when gradients are
needed, barycentrics, depth and interpolated attributes are recomputed in torch from the winning
triangles and carry gradients to vertex positions and colours (otherwise numba computes them on CPU).

Speed (``benchmarks/render.py``, 2 CPU cores, procedural head with 46k triangles): about 110 frames/s
at 128^2 and 256^2 one frame at a time, 150-250 frames/s in batches of 8.

Shading (Deep3DFaceRecon)
-------------------------
colour = albedo * (sum_k Y_k(n) * (gamma_c,k + init_c,k) + ambient), with gamma reshaped (B, 3, 9)
(red, green, blue), the initial light ``init`` = 0.8 on the constant coefficient of every colour, n the
unit normal in the world frame, and the basis Y (constants a = (pi, 2 pi / sqrt 3, 2 pi / sqrt 8),
c = (1 / sqrt(4 pi), sqrt 3 / sqrt(4 pi), 3 sqrt 5 / sqrt(12 pi))):
Y = (a0 c0, -a1 c1 ny, a1 c1 nz, -a1 c1 nx, a2 c2 nx ny, -a2 c2 ny nz, a2 c2 (3 nz^2 - 1) / (2 sqrt 3),
-a2 c2 nx nz, a2 c2 (nx^2 - ny^2) / 2). ``ambient`` (default 0, Deep3DFaceRecon's behaviour) adds a
uniform term. With gamma = 0 the face is lit uniformly at a0 c0 0.8 = 0.709 of its albedo.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .morphable import (
    Camera,
    MorphableModel,
    euler_to_rotation,
    project_camera,
    split_coeffs,
    to_camera,
    vertex_normals,
)

logger = logging.getLogger(__name__)

SH_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))  # Deep3DFaceRecon SH.a
SH_C = (1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
        3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi))  # Deep3DFaceRecon SH.c
INIT_LIGHT = 0.8  # added to gamma[:, c, 0] of each colour c (Deep3DFaceRecon init_lit)
NEAR = 1e-3  # triangles with a vertex closer to the camera than this are culled
MIN_SIZE, MAX_SIZE = 16, 2048  # accepted image sizes (64-512 px is the tested range)
_CHUNK = 1 << 20  # candidate (triangle, pixel) pairs per torch rasterisation chunk (~100 MB of temporaries)
_EMPTY_KEY = torch.iinfo(torch.int64).max


@dataclasses.dataclass(frozen=True)
class RenderOutput:
    """What a render returns (H = W = image_size)."""

    images: Tensor  # (B, 3, H, W) float in 0..1 (face over background)
    mask: Tensor  # (B, 1, H, W) float in 0..1: face coverage (fractional with antialias > 1)
    landmarks: Tensor  # (B, K, 2) projected landmark vertices in pixels (K = 68 for render_coeffs, else 0)
    depth: Tensor  # (B, 1, H, W) camera-frame depth of the visible surface, inf on the background
    triangle_ids: Tensor  # (B, H, W) int64 visible triangle per pixel, -1 on the background
    normals: Tensor | None = None  # (B, 3, H, W) interpolated unit normals (zero on the background)
    vertices2d: Tensor | None = None  # (B, V, 2) every vertex projected to pixels


@dataclasses.dataclass(frozen=True)
class Fragments:
    """Per-pixel rasterisation result."""

    triangle_ids: Tensor  # (B, H, W) int64, -1 where no triangle covers the pixel centre
    bary: Tensor  # (B, H, W, 3) perspective-correct barycentric weights (zero on the background)
    depth: Tensor  # (B, H, W) interpolated camera depth, inf on the background


# ----------------------------------------------------------------------------- spherical harmonics


def sh_basis(normals: Tensor) -> Tensor:
    """Deep3DFaceRecon's 9 spherical-harmonics basis values (constants included).

    Args:
        normals: (..., 3) unit normals in the world frame (x right, y up, z towards the camera).

    Returns:
        (..., 9) basis values Y_0 .. Y_8 (see the module docstring).
    """
    nx, ny, nz = normals.unbind(-1)
    a0c0 = SH_A[0] * SH_C[0]
    a1c1 = SH_A[1] * SH_C[1]
    a2c2 = SH_A[2] * SH_C[2]
    return torch.stack([
        torch.full_like(nx, a0c0), -a1c1 * ny, a1c1 * nz, -a1c1 * nx, a2c2 * nx * ny,
        -a2c2 * ny * nz, 0.5 * a2c2 / math.sqrt(3.0) * (3.0 * nz * nz - 1.0), -a2c2 * nx * nz,
        0.5 * a2c2 * (nx * nx - ny * ny),
    ], dim=-1)


def sh_irradiance(normals: Tensor, gamma: Tensor) -> Tensor:
    """Per-colour irradiance sum_k Y_k(n) (gamma_c,k + init_c,k).

    Args:
        normals: (B, N, 3) unit normals (world frame); N is vertices or pixels.
        gamma: (B, 27) lighting coefficients (red 0-8, green 9-17, blue 18-26), without the init offset.

    Returns:
        (B, N, 3) RGB irradiance.
    """
    if gamma.dim() != 2 or gamma.shape[1] != 27:
        raise ValueError(f"sh_irradiance: gamma must be shaped (B, 27), got {tuple(gamma.shape)}")
    if normals.dim() != 3 or normals.shape[-1] != 3 or normals.shape[0] != gamma.shape[0]:
        raise ValueError(f"sh_irradiance: normals must be shaped (B, N, 3) with B = {gamma.shape[0]}, got "
                         f"{tuple(normals.shape)}")
    lit = gamma.to(normals.dtype).reshape(-1, 3, 9).clone()
    lit[:, :, 0] += INIT_LIGHT
    return sh_basis(normals) @ lit.transpose(1, 2)


def shade(albedo: Tensor, normals: Tensor, gamma: Tensor, ambient: float = 0.0) -> Tensor:
    """Lambertian SH shading: albedo * (irradiance(normals, gamma) + ambient).

    Args:
        albedo: (B, N, 3) RGB albedo in 0..1.
        normals: (B, N, 3) unit world-frame normals.
        gamma: (B, 27) SH lighting (Deep3DFaceRecon layout, init offset added here).
        ambient: uniform extra irradiance (0 = Deep3DFaceRecon).

    Returns:
        (B, N, 3) shaded colour (not clamped).
    """
    return albedo * (sh_irradiance(normals, gamma) + ambient)


# ----------------------------------------------------------------------------- rasterisation


def _triangle_setup(pixels: Tensor, depth: Tensor, triangles: Tensor, image_size: int, cull_backfaces: bool):
    """Per-triangle set-up shared by both backends (float32 arithmetic, fixed evaluation order).

    Returns (image index (N,), triangle id (N,), edges (N, 3, 5): ax, ay, dx, dy, sign with inside <=>
    sign * (dx * (py - ay) - dy * (px - ax)) >= 0 for all three, abs area (N,), inverse depths (N, 3),
    bbox (N, 4) int64 xmin, xmax, ymin, ymax) for the triangles that survive culling and clipping."""
    batch = pixels.shape[0]
    pix = pixels.detach().to(torch.float32)
    inv_z = 1.0 / depth.detach().to(torch.float32)
    corners = pix[:, triangles]  # (B, T, 3, 2)
    corner_depth = depth.detach()[:, triangles]  # (B, T, 3)
    p0, p1, p2 = corners.unbind(2)
    area = ((p1[..., 0] - p0[..., 0]) * (p2[..., 1] - p0[..., 1])
            - (p1[..., 1] - p0[..., 1]) * (p2[..., 0] - p0[..., 0]))
    valid = (corner_depth > NEAR).all(-1) & torch.isfinite(area) & (area.abs() > 1e-12)
    if cull_backfaces:
        valid &= area < 0  # counter-clockwise in the y-up model frame = clockwise in y-down pixels
    lo = corners.amin(2)
    hi = corners.amax(2)
    last = image_size - 1
    xmin = torch.ceil(lo[..., 0]).clamp(min=0)
    ymin = torch.ceil(lo[..., 1]).clamp(min=0)
    xmax = torch.floor(hi[..., 0]).clamp(max=last)
    ymax = torch.floor(hi[..., 1]).clamp(max=last)
    valid &= (xmin <= xmax) & (ymin <= ymax)
    image_index, tri_index = valid.nonzero(as_tuple=True)  # sorted by image, then triangle
    corners = corners[image_index, tri_index]  # (N, 3, 2)
    area = area[image_index, tri_index]
    vids = triangles[tri_index]  # (N, 3)
    orient = torch.where(area < 0, -1.0, 1.0).to(torch.float32)
    edges = []
    for k in range(3):  # edge k runs from vertex k+1 to vertex k+2 (its function is lambda_k * area)
        a, b = (k + 1) % 3, (k + 2) % 3
        swap = vids[:, a] > vids[:, b]
        start = torch.where(swap[:, None], corners[:, b], corners[:, a])
        end = torch.where(swap[:, None], corners[:, a], corners[:, b])
        sign = torch.where(swap, -orient, orient)
        delta = end - start
        edges.append(torch.stack([start[:, 0], start[:, 1], delta[:, 0], delta[:, 1], sign], dim=-1))
    bbox = torch.stack([xmin, xmax, ymin, ymax], dim=-1)[image_index, tri_index].to(torch.int64)
    inv_z = inv_z[image_index[:, None], vids]  # (N, 3)
    edges = torch.stack(edges, dim=1).contiguous()
    return image_index, tri_index, edges, area.abs(), inv_z.contiguous(), bbox, batch


def _rasterize_torch(setup, image_size: int) -> Tensor:
    image_index, tri_index, edges, area_abs, inv_z, bbox, batch = setup
    device = edges.device
    keys = torch.full((batch * image_size * image_size,), _EMPTY_KEY, dtype=torch.int64, device=device)
    if image_index.numel() == 0:
        return keys
    widths = bbox[:, 1] - bbox[:, 0] + 1
    counts = widths * (bbox[:, 3] - bbox[:, 2] + 1)
    ends = torch.cumsum(counts, 0)
    # chunk boundaries by candidate count (bounded memory at any size)
    first = 0
    count_total = image_index.numel()
    ends_cpu = ends.cpu()
    while first < count_total:
        base = int(ends_cpu[first - 1]) if first > 0 else 0
        last = int(torch.searchsorted(ends_cpu, torch.tensor(base + _CHUNK), right=True))
        last = max(last, first + 1)
        last = min(last, count_total)
        span = slice(first, last)
        chunk_counts = counts[span]
        n = int(ends_cpu[last - 1]) - base
        owner = torch.repeat_interleave(torch.arange(last - first, device=device), chunk_counts,
                                        output_size=n)
        local = torch.arange(n, device=device) - (ends[span] - chunk_counts - base)[owner]
        width = widths[span][owner]
        box = bbox[span][owner]
        px = (box[:, 0] + local % width).to(torch.float32)
        py = (box[:, 2] + local // width).to(torch.float32)
        edge = edges[span][owner]  # (n, 3, 5)
        ax, ay, dx, dy, sign = edge.unbind(-1)
        values = sign * (dx * (py[:, None] - ay) - dy * (px[:, None] - ax))  # (n, 3)
        inside = (values >= 0).all(-1)
        lam = values / area_abs[span][owner][:, None]
        iz = inv_z[span][owner]
        zinv = lam[:, 0] * iz[:, 0] + lam[:, 1] * iz[:, 1] + lam[:, 2] * iz[:, 2]
        z = 1.0 / zinv
        inside &= z > 0
        bits = z.contiguous().view(torch.int32).to(torch.int64)
        key = (bits << 32) | tri_index[span][owner]
        pixel = (image_index[span][owner] * image_size + py.to(torch.int64)) * image_size + px.to(torch.int64)
        keys.scatter_reduce_(0, pixel[inside], key[inside], reduce="amin", include_self=True)
        first = last
    return keys


@functools.lru_cache(maxsize=1)
def _numba_kernels():
    """The compiled CPU kernels {setup, raster, bary, interp}, or None when numba is unavailable.

    numba is imported on first use (never at import time); each kernel compiles on its first call
    (about 1-2 s in all, once per process; no on-disk cache, see ``ops/haar_kernels.py``).

    The kernels are serial on purpose: with numba's "omp" threading layer (its default when OpenMP
    is present) the pool's threads spin after every parallel region and, on a 2-core machine, slowed
    the torch half of a render 2.5x; the serial kernels cost less than that. They release the GIL and
    are re-entrant, so callers on several threads run them concurrently."""
    try:
        from numba import njit
    except Exception as error:  # ImportError or a broken llvmlite
        logger.info("numba unavailable (%s); the renderer uses the torch rasteriser", error)
        return None

    # setup and raster run without fastmath: their float32 arithmetic rounds exactly like the torch
    # path (same operations in the same order, no fused multiply-adds), so both pick the same triangles.
    @njit(cache=False, nogil=True)
    def setup(pix, depth, tris, size, cull, near, tiny, edges, area_abs, inv_z, bbox, valid):
        images, count = pix.shape[0], tris.shape[0]
        last = np.float32(size - 1)
        zero = np.float32(0.0)
        one = np.float32(1.0)
        for job in range(images * count):
            b = job // count
            t = job % count
            valid[b, t] = False
            v0, v1, v2 = tris[t, 0], tris[t, 1], tris[t, 2]
            z0, z1, z2 = depth[b, v0], depth[b, v1], depth[b, v2]
            if not (z0 > near and z1 > near and z2 > near):
                continue
            x0, y0 = pix[b, v0, 0], pix[b, v0, 1]
            x1, y1 = pix[b, v1, 0], pix[b, v1, 1]
            x2, y2 = pix[b, v2, 0], pix[b, v2, 1]
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            if not (np.isfinite(area) and abs(area) > tiny):
                continue
            if cull and not area < zero:
                continue
            xmin = max(np.ceil(min(x0, x1, x2)), zero)
            ymin = max(np.ceil(min(y0, y1, y2)), zero)
            xmax = min(np.floor(max(x0, x1, x2)), last)
            ymax = min(np.floor(max(y0, y1, y2)), last)
            if not (xmin <= xmax and ymin <= ymax):
                continue
            valid[b, t] = True
            bbox[b, t, 0], bbox[b, t, 1] = int(xmin), int(xmax)
            bbox[b, t, 2], bbox[b, t, 3] = int(ymin), int(ymax)
            area_abs[b, t] = abs(area)
            orient = -one if area < zero else one
            inv_z[b, t, 0], inv_z[b, t, 1], inv_z[b, t, 2] = one / z0, one / z1, one / z2
            for k in range(3):
                a, e = (k + 1) % 3, (k + 2) % 3
                va, ve = tris[t, a], tris[t, e]
                sign = orient
                if va > ve:
                    va, ve = ve, va
                    sign = -orient
                ax, ay = pix[b, va, 0], pix[b, va, 1]
                edges[b, t, k, 0] = ax
                edges[b, t, k, 1] = ay
                edges[b, t, k, 2] = pix[b, ve, 0] - ax
                edges[b, t, k, 3] = pix[b, ve, 1] - ay
                edges[b, t, k, 4] = sign

    @njit(cache=False, nogil=True)
    def raster(edges, area_abs, inv_z, bbox, valid, zbuf, ids):
        images, count = valid.shape[0], valid.shape[1]
        for b in range(images):
            for t in range(count):
                if not valid[b, t]:
                    continue
                edge = edges[b, t]
                ax0, ay0, dx0, dy0, s0 = edge[0, 0], edge[0, 1], edge[0, 2], edge[0, 3], edge[0, 4]
                ax1, ay1, dx1, dy1, s1 = edge[1, 0], edge[1, 1], edge[1, 2], edge[1, 3], edge[1, 4]
                ax2, ay2, dx2, dy2, s2 = edge[2, 0], edge[2, 1], edge[2, 2], edge[2, 3], edge[2, 4]
                area = area_abs[b, t]
                iz0, iz1, iz2 = inv_z[b, t, 0], inv_z[b, t, 1], inv_z[b, t, 2]
                for y in range(bbox[b, t, 2], bbox[b, t, 3] + 1):
                    fy = np.float32(y)
                    for x in range(bbox[b, t, 0], bbox[b, t, 1] + 1):
                        fx = np.float32(x)
                        e0 = s0 * (dx0 * (fy - ay0) - dy0 * (fx - ax0))
                        if e0 < 0:
                            continue
                        e1 = s1 * (dx1 * (fy - ay1) - dy1 * (fx - ax1))
                        if e1 < 0:
                            continue
                        e2 = s2 * (dx2 * (fy - ay2) - dy2 * (fx - ax2))
                        if e2 < 0:
                            continue
                        zinv = (e0 / area) * iz0 + (e1 / area) * iz1 + (e2 / area) * iz2
                        z = np.float32(1.0) / zinv
                        if not z > 0:
                            continue
                        best = zbuf[b, y, x]
                        if z < best or (z == best and t < ids[b, y, x]):
                            zbuf[b, y, x] = z
                            ids[b, y, x] = t

    @njit(cache=False, nogil=True, fastmath=True)
    def bary(pix, depth, tris, ids, near, out_bary, out_depth):
        images, size = ids.shape[0], ids.shape[1]
        for job in range(images * size):
            b = job // size
            y = job % size
            for x in range(size):
                t = ids[b, y, x]
                if t < 0:
                    out_bary[b, y, x, 0] = 0.0
                    out_bary[b, y, x, 1] = 0.0
                    out_bary[b, y, x, 2] = 0.0
                    out_depth[b, y, x] = np.inf
                    continue
                v0, v1, v2 = tris[t, 0], tris[t, 1], tris[t, 2]
                x0, y0, x1, y1 = pix[b, v0, 0], pix[b, v0, 1], pix[b, v1, 0], pix[b, v1, 1]
                x2, y2 = pix[b, v2, 0], pix[b, v2, 1]
                lam0 = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
                lam1 = (x0 - x2) * (y - y2) - (y0 - y2) * (x - x2)
                lam2 = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)
                total = lam0 + lam1 + lam2
                w0 = max(lam0 / total, 0.0) / max(depth[b, v0], near)
                w1 = max(lam1 / total, 0.0) / max(depth[b, v1], near)
                w2 = max(lam2 / total, 0.0) / max(depth[b, v2], near)
                weight_sum = w0 + w1 + w2
                out_bary[b, y, x, 0] = w0 / weight_sum
                out_bary[b, y, x, 1] = w1 / weight_sum
                out_bary[b, y, x, 2] = w2 / weight_sum
                out_depth[b, y, x] = 1.0 / weight_sum

    @njit(cache=False, nogil=True, fastmath=True)
    def interp(attr, tris, ids, weights, out):
        images, size, channels = ids.shape[0], ids.shape[1], attr.shape[2]
        for job in range(images * size):
            b = job // size
            y = job % size
            for x in range(size):
                t = ids[b, y, x]
                if t < 0:
                    for c in range(channels):
                        out[b, c, y, x] = 0.0
                    continue
                v0, v1, v2 = tris[t, 0], tris[t, 1], tris[t, 2]
                w0, w1, w2 = weights[b, y, x, 0], weights[b, y, x, 1], weights[b, y, x, 2]
                for c in range(channels):
                    out[b, c, y, x] = w0 * attr[b, v0, c] + w1 * attr[b, v1, c] + w2 * attr[b, v2, c]

    return {"setup": setup, "raster": raster, "bary": bary, "interp": interp}


def _rasterize_numba(pixels: Tensor, depth: Tensor, triangles: Tensor, image_size: int, cull_backfaces: bool,
                     kernels) -> Tensor:
    """Triangle ids (B, S, S) int64 (-1 background) from the numba kernels (CPU)."""
    pix = pixels.detach().to(torch.float32).contiguous().numpy()
    z = depth.detach().to(torch.float32).contiguous().numpy()
    tris = triangles.contiguous().numpy()
    batch, count = pix.shape[0], tris.shape[0]
    edges = np.empty((batch, count, 3, 5), dtype=np.float32)
    area_abs = np.empty((batch, count), dtype=np.float32)
    inv_z = np.empty((batch, count, 3), dtype=np.float32)
    bbox = np.empty((batch, count, 4), dtype=np.int64)
    valid = np.empty((batch, count), dtype=np.bool_)
    zbuf = np.full((batch, image_size, image_size), np.inf, dtype=np.float32)
    ids = np.full((batch, image_size, image_size), -1, dtype=np.int64)
    kernels["setup"](pix, z, tris, image_size, cull_backfaces, np.float32(NEAR), np.float32(1e-12), edges,
                     area_abs, inv_z, bbox, valid)
    kernels["raster"](edges, area_abs, inv_z, bbox, valid, zbuf, ids)  # empty pixels: zbuf inf, id -1
    return torch.from_numpy(ids)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def rasterize(pixels: Tensor, depth: Tensor, triangles: Tensor, image_size: int, *,
              cull_backfaces: bool = True, backend: str = "auto") -> Fragments:
    """Z-buffer rasterisation of projected triangles at pixel centres.

    Args:
        pixels: (B, V, 2) projected vertices (x right, y down, pixel centres at integers).
        depth: (B, V) camera depth of each vertex (> 0 in front of the camera).
        triangles: (T, 3) int64 vertex ids, counter-clockwise in the y-up model frame for front faces.
        image_size: output size S (square).
        cull_backfaces: drop triangles whose projection is counter-clockwise in pixels (facing away).
        backend: "auto" (numba on CPU when available, else torch), "torch" or "numba".

    Returns:
        Fragments with triangle ids (B, S, S), perspective-correct barycentrics (B, S, S, 3) and depth
        (differentiable with respect to `pixels` and `depth` when they require grad).
    """
    if pixels.dim() != 3 or pixels.shape[-1] != 2:
        raise ValueError(f"rasterize: pixels must be shaped (B, V, 2), got {tuple(pixels.shape)}")
    if tuple(depth.shape) != tuple(pixels.shape[:2]):
        raise ValueError(f"rasterize: depth must be shaped (B, V) = {tuple(pixels.shape[:2])}, got "
                         f"{tuple(depth.shape)}")
    triangles = _check_triangles(triangles, pixels.shape[1], "rasterize").to(pixels.device)
    _check_size(image_size, "rasterize")
    if backend not in ("auto", "torch", "numba"):
        raise ValueError(f"rasterize: backend must be 'auto', 'torch' or 'numba', got {backend!r}")
    kernels = None
    if backend != "torch" and pixels.device.type == "cpu":
        kernels = _numba_kernels()
    if backend == "numba" and kernels is None:
        raise RuntimeError("rasterize: backend='numba' needs numba and CPU tensors; install numba or use "
                           "backend='torch'")
    batch = pixels.shape[0]
    # 1. visibility: the nearest triangle at every pixel centre
    if kernels is not None:
        ids = _rasterize_numba(pixels, depth, triangles, image_size, cull_backfaces, kernels)
    else:
        setup = _triangle_setup(pixels, depth, triangles, image_size, cull_backfaces)
        keys = _rasterize_torch(setup, image_size)
        ids = torch.where(keys == _EMPTY_KEY, torch.full_like(keys, -1), keys & 0xFFFFFFFF)
        ids = ids.reshape(batch, image_size, image_size)
    # 2. perspective-correct barycentrics of the winners
    if kernels is not None and not _needs_grad(pixels, depth):
        bary = np.empty((batch, image_size, image_size, 3), dtype=np.float32)
        frag_depth = np.empty((batch, image_size, image_size), dtype=np.float32)
        pix = pixels.detach().to(torch.float32).contiguous().numpy()
        z = depth.detach().to(torch.float32).contiguous().numpy()
        kernels["bary"](pix, z, triangles.contiguous().numpy(), ids.numpy(), NEAR, bary, frag_depth)
        dtype = pixels.dtype if pixels.is_floating_point() else torch.float32
        return Fragments(triangle_ids=ids, bary=torch.from_numpy(bary).to(dtype),
                         depth=torch.from_numpy(frag_depth).to(dtype))
    bary, frag_depth = _barycentrics(pixels, depth, triangles, ids)
    return Fragments(triangle_ids=ids, bary=bary, depth=frag_depth)


def _barycentrics(pixels: Tensor, depth: Tensor, triangles: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Perspective-correct barycentrics and depth of the winning triangle at every pixel centre (torch)."""
    batch, size = ids.shape[0], ids.shape[1]
    pixel_count = size * size
    flat = ids.reshape(batch, pixel_count)
    covered = flat >= 0
    vids = triangles[flat.clamp(min=0)]  # (B, P, 3)
    gather = vids.reshape(batch, pixel_count * 3)
    corners = torch.gather(pixels, 1, gather[..., None].expand(-1, -1, 2)).reshape(batch, pixel_count, 3, 2)
    corner_depth = torch.gather(depth, 1, gather).reshape(batch, pixel_count, 3)
    coords = torch.arange(size, device=ids.device, dtype=pixels.dtype)
    py, px = torch.meshgrid(coords, coords, indexing="ij")
    point = torch.stack([px.reshape(-1), py.reshape(-1)], dim=-1)[None, :, :]  # (1, P, 2)
    lam = []
    for k in range(3):
        a, b = corners[:, :, (k + 1) % 3], corners[:, :, (k + 2) % 3]
        lam.append((b[..., 0] - a[..., 0]) * (point[..., 1] - a[..., 1])
                   - (b[..., 1] - a[..., 1]) * (point[..., 0] - a[..., 0]))
    lam = torch.stack(lam, dim=-1)
    lam = lam / lam.sum(-1, keepdim=True).where(covered[..., None], torch.ones_like(lam[..., :1]))
    lam = lam.clamp(min=0.0)
    weights = lam / corner_depth.clamp(min=NEAR)
    zinv = weights.sum(-1, keepdim=True)
    bary = weights / zinv.where(covered[..., None], torch.ones_like(zinv))
    frag_depth = 1.0 / zinv[..., 0]
    bary = torch.where(covered[..., None], bary, torch.zeros_like(bary))
    frag_depth = torch.where(covered, frag_depth, torch.full_like(frag_depth, math.inf))
    return bary.reshape(batch, size, size, 3), frag_depth.reshape(batch, size, size)


def interpolate(attributes: Tensor, triangles: Tensor, fragments: Fragments) -> Tensor:
    """Interpolate per-vertex attributes with the fragments' barycentrics.

    Args:
        attributes: (B, V, C) per-vertex values.
        triangles: (T, 3) int64 vertex ids (the ones given to :func:`rasterize`).
        fragments: the Fragments of :func:`rasterize`.

    Returns:
        (B, C, H, W) interpolated values, zero on the background (differentiable in `attributes` and
        the barycentrics).
    """
    ids = fragments.triangle_ids
    batch, size = ids.shape[0], ids.shape[1]
    if attributes.dim() != 3 or attributes.shape[0] != batch:
        raise ValueError(f"interpolate: attributes must be shaped (B={batch}, V, C), got "
                         f"{tuple(attributes.shape)}")
    channels = attributes.shape[-1]
    triangles = triangles.to(ids.device)
    if (attributes.device.type == "cpu" and attributes.dtype in (torch.float32, torch.float64)
            and not _needs_grad(attributes, fragments.bary)):
        kernels = _numba_kernels()
        if kernels is not None:
            values = attributes.detach().contiguous().numpy()
            weights = fragments.bary.detach().to(attributes.dtype).contiguous().numpy()
            out = np.empty((batch, channels, size, size), dtype=values.dtype)
            kernels["interp"](values, triangles.contiguous().numpy(), ids.contiguous().numpy(), weights, out)
            return torch.from_numpy(out)
    pixel_count = size * size
    vids = triangles[ids.reshape(batch, pixel_count).clamp(min=0)].reshape(batch, pixel_count * 3)
    values = torch.gather(attributes, 1, vids[..., None].expand(-1, -1, channels))
    values = values.reshape(batch, pixel_count, 3, channels)
    bary = fragments.bary.reshape(batch, pixel_count, 3, 1).to(attributes.dtype)
    out = (values * bary).sum(2)  # (B, P, C); background bary is zero
    return out.transpose(1, 2).reshape(batch, channels, size, size)


# ----------------------------------------------------------------------------- rendering


def _unit(vectors: Tensor, dim: int) -> Tensor:
    """Normalise along `dim` (zero vectors stay zero)."""
    return vectors * torch.rsqrt((vectors * vectors).sum(dim, keepdim=True).clamp(min=1e-30))


def _check_size(image_size, where: str) -> None:
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or not (
            MIN_SIZE <= image_size <= MAX_SIZE):
        raise ValueError(f"{where}: image_size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] (64-512 px "
                         f"tested), got {image_size!r}")


def _check_triangles(triangles: Tensor, vertices: int, where: str) -> Tensor:
    if not isinstance(triangles, Tensor) or triangles.dim() != 2 or triangles.shape[1] != 3:
        shape = tuple(triangles.shape) if isinstance(triangles, Tensor) else type(triangles).__name__
        raise ValueError(f"{where}: triangles must be an integer tensor shaped (T, 3), got {shape}")
    triangles = triangles.to(torch.int64)
    if triangles.numel() and (int(triangles.min()) < 0 or int(triangles.max()) >= vertices):
        raise ValueError(f"{where}: triangles hold vertex ids outside [0, {vertices})")
    return triangles


def _background(background, batch: int, size: int, dtype, device, where: str) -> Tensor:
    """(B, 3, S, S) background from None, an RGB triple or an image tensor."""
    if background is None:
        return torch.zeros(1, 3, 1, 1, dtype=dtype, device=device).expand(batch, 3, size, size)
    if isinstance(background, Tensor) and background.dim() == 4:
        if background.shape[1:] != (3, size, size) or background.shape[0] not in (1, batch):
            raise ValueError(f"{where}: a background image must be shaped (B={batch} or 1, 3, {size}, "
                             f"{size}) (resize it to image_size first), got {tuple(background.shape)}")
        return background.to(device=device, dtype=dtype).expand(batch, 3, size, size)
    if isinstance(background, Tensor):
        background = background.detach().cpu().reshape(-1).tolist()
    if isinstance(background, Sequence) and len(background) == 3 and all(
            isinstance(v, (int, float, np.floating, np.integer)) for v in background):
        rgb = torch.tensor([float(v) for v in background], dtype=dtype, device=device)
        return rgb.reshape(1, 3, 1, 1).expand(batch, 3, size, size)
    raise ValueError(f"{where}: background must be None (black), an RGB triple in 0..1 or an image tensor "
                     f"(B or 1, 3, H, W); got {type(background).__name__}")


def render_mesh(vertices: Tensor, colors: Tensor, triangles: Tensor, *, image_size: int,
                camera: Camera | None = None, background=None, normals: Tensor | None = None,
                landmarks: Tensor | None = None, antialias: int = 1, cull_backfaces: bool = True,
                pixel_shader: Callable[[Tensor, Tensor], Tensor] | None = None,
                backend: str = "auto") -> RenderOutput:
    """Rasterise a coloured mesh given in the camera frame and composite it over a background.

    Args:
        vertices: (B, V, 3) camera-frame positions (x right, y up, z = depth > 0; see
            :func:`.morphable.to_camera`).
        colors: (B, V, 3) per-vertex RGB (interpolated; clamped to 0..1 after shading).
        triangles: (T, 3) int64 vertex ids, counter-clockwise seen from outside in the y-up frame.
        image_size: output size S (16..2048; 64..512 tested).
        camera: Camera giving the focal length (default Camera()); its distance is not used here.
        background: None (black), an RGB triple in 0..1, or an image tensor (B or 1, 3, S, S).
        normals: optional (B, V, 3) world-frame normals, interpolated into ``RenderOutput.normals``
            and handed to `pixel_shader`.
        landmarks: optional (K,) int64 vertex ids whose projections fill ``RenderOutput.landmarks``.
        antialias: supersampling factor k >= 1 (renders k S x k S and averages k x k blocks).
        cull_backfaces: drop triangles facing away from the camera.
        pixel_shader: optional f(colors (B, 3, h, w), normals (B, 3, h, w)) -> (B, 3, h, w) applied per
            pixel to the interpolated colours (needs `normals`); used for per-pixel SH shading.
        backend: rasteriser backend, see :func:`rasterize`.

    Returns:
        RenderOutput (images, mask, landmarks, depth, triangle_ids, normals, vertices2d).
    """
    where = "render_mesh"
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"{where}: vertices must be shaped (B, V, 3) in the camera frame, got "
                         f"{tuple(vertices.shape)}")
    batch, count = vertices.shape[:2]
    if tuple(colors.shape) != (batch, count, 3):
        raise ValueError(f"{where}: colors must be shaped (B, V, 3) = {(batch, count, 3)}, got "
                         f"{tuple(colors.shape)}")
    if normals is not None and tuple(normals.shape) != (batch, count, 3):
        raise ValueError(f"{where}: normals must be shaped (B, V, 3) = {(batch, count, 3)}, got "
                         f"{tuple(normals.shape)}")
    if pixel_shader is not None and normals is None:
        raise ValueError(f"{where}: pixel_shader needs per-vertex normals; pass normals=")
    _check_size(image_size, where)
    if not isinstance(antialias, int) or not 1 <= antialias <= 8:
        raise ValueError(f"{where}: antialias must be an integer supersampling factor in [1, 8], got "
                         f"{antialias!r}")
    triangles = _check_triangles(triangles, count, where).to(vertices.device)
    camera = Camera() if camera is None else camera
    dtype = colors.dtype if colors.is_floating_point() else torch.float32
    back = _background(background, batch, image_size, dtype, vertices.device, where)

    # 1. project and rasterise at the supersampled size
    hi = image_size * antialias
    pixels_hi, depth = project_camera(vertices, camera, hi)
    fragments = rasterize(pixels_hi, depth, triangles, hi, cull_backfaces=cull_backfaces, backend=backend)
    covered = (fragments.triangle_ids >= 0).to(dtype)[:, None]  # (B, 1, hi, hi)
    # 2. interpolate colours (and normals), shade per pixel if asked
    face = interpolate(colors.to(dtype), triangles, fragments)
    pixel_normals = None
    if normals is not None:
        pixel_normals = _unit(interpolate(normals.to(dtype), triangles, fragments), dim=1)
        if pixel_shader is not None:
            face = pixel_shader(face, pixel_normals) * covered
    face = face.clamp(0.0, 1.0)
    frag_depth = fragments.depth[:, None]
    ids = fragments.triangle_ids
    # 3. average the supersamples (face colour premultiplied by coverage)
    if antialias > 1:
        pool = torch.nn.functional.avg_pool2d
        face = pool(face, antialias)
        covered = pool(covered, antialias)
        if pixel_normals is not None:
            pixel_normals = _unit(pool(pixel_normals, antialias), dim=1)
        frag_depth = -torch.nn.functional.max_pool2d(-frag_depth, antialias)
        ids = ids[:, antialias // 2::antialias, antialias // 2::antialias]
    # 4. composite
    images = face + (1.0 - covered) * back
    pixels = pixels_hi if antialias == 1 else project_camera(vertices, camera, image_size)[0]
    if landmarks is None:
        marks = pixels.new_zeros(batch, 0, 2)
    else:
        marks = pixels[:, landmarks.to(vertices.device).long()]
    return RenderOutput(images=images, mask=covered, landmarks=marks, depth=frag_depth, triangle_ids=ids,
                        normals=pixel_normals, vertices2d=pixels)


def render_coeffs(model: MorphableModel, coeffs: Tensor, *, image_size: int = 224,
                  camera: Camera | None = None, background=None, shading: str = "vertex",
                  ambient: float = 0.0, antialias: int = 1,
                  return_normals: bool = False, backend: str = "auto") -> RenderOutput:
    """Render Deep3DFaceRecon coefficients with a morphable model.

    Args:
        model: the MorphableModel (e.g. :func:`.procedural.procedural_model` or a loaded BFM).
        coeffs: (B, 257) coefficients (id, exp, tex, angle, gamma, trans; see
            :data:`.morphable.COEFF_SLICES`).
        image_size: output size S in pixels (64..512 tested).
        camera: Camera (default Camera(): focal 1015 at 224 px, distance 10; focal scales with S).
        background: None (black), an RGB triple in 0..1, or an image tensor (B or 1, 3, S, S).
        shading: "vertex" (shade vertices, interpolate colours: Deep3DFaceRecon) or "pixel"
            (interpolate albedo and normals, shade every pixel).
        ambient: uniform irradiance added to the SH lighting (0 = Deep3DFaceRecon).
        antialias: supersampling factor (1 = off).
        return_normals: also return the interpolated world-frame normals (always with "pixel").
        backend: rasteriser backend, see :func:`rasterize`.

    Returns:
        RenderOutput: images (B, 3, S, S), mask (B, 1, S, S), landmarks (B, 68, 2) pixels, depth
        (B, 1, S, S), triangle ids (B, S, S), normals (B, 3, S, S) or None, vertices2d (B, V, 2).
    """
    if not isinstance(coeffs, Tensor) or coeffs.dim() != 2 or coeffs.shape[1] != 257:
        shape = tuple(coeffs.shape) if isinstance(coeffs, Tensor) else type(coeffs).__name__
        raise ValueError(f"render_coeffs: coeffs must be shaped (B, 257) in the Deep3DFaceRecon layout; got "
                         f"{shape} (use join_coeffs to build them, unsqueeze(0) for one frame)")
    if shading not in ("vertex", "pixel"):
        raise ValueError(f"render_coeffs: shading must be 'vertex' or 'pixel', got {shading!r}")
    coeffs = coeffs.to(device=model.device, dtype=model.dtype)
    parts = split_coeffs(coeffs)
    # 1. shape and pose
    shape = model.vertices(parts["id"], parts["exp"])
    rotation = euler_to_rotation(parts["angle"])
    world = shape @ rotation.transpose(1, 2) + parts["trans"][:, None, :]
    normals = vertex_normals(shape, model.triangles) @ rotation.transpose(1, 2)
    # 2. albedo and lighting
    albedo = model.albedo(parts["tex"])
    gamma = parts["gamma"]
    if shading == "vertex":
        colors, shader = shade(albedo, normals, gamma, ambient), None
    else:
        def shader(color_img: Tensor, normal_img: Tensor) -> Tensor:
            batch, _, height, width = normal_img.shape
            flat_normals = normal_img.flatten(2).transpose(1, 2)
            flat_albedo = color_img.flatten(2).transpose(1, 2)
            lit = shade(flat_albedo, flat_normals, gamma, ambient)
            return lit.transpose(1, 2).reshape(batch, 3, height, width)

        colors = albedo
    # 3. rasterise and composite
    keep_normals = return_normals or shading == "pixel"
    return render_mesh(to_camera(world, camera), colors, model.triangles, image_size=image_size,
                       camera=camera, background=background, normals=normals if keep_normals else None,
                       landmarks=model.landmarks68, antialias=antialias, pixel_shader=shader, backend=backend)


def default_lighting(strength: float = 1.0, *, direction: tuple[float, float, float] = (-0.35, 0.55, 0.75),
                     ambient: float = 0.0) -> Tensor:
    """Gamma (27,) for a soft white key light from `direction` (world frame, towards the light; default
    upper front left of the image) on top of Deep3DFaceRecon's initial light.

    Args:
        strength: scale of the directional (first-order) part; 0 gives the flat default light.
        direction: unit-ised vector pointing towards the light.
        ambient: added to the constant coefficient of every colour.

    Returns:
        (27,) float32 gamma (without the init offset, which the renderer adds).
    """
    d = torch.tensor(direction, dtype=torch.float64)
    d = d / d.norm()
    # irradiance is linear in n for the first band: Y1..3 = a1 c1 (-ny, nz, -nx); the light direction
    # maximises n . d, so the coefficients are proportional to (-dy, dz, -dx)
    first = 0.35 * strength * torch.stack([-d[1], d[2], -d[0]])
    gamma = torch.zeros(3, 9, dtype=torch.float64)
    gamma[:, 1:4] = first
    gamma[:, 0] = ambient
    return gamma.reshape(27).to(torch.float32)
