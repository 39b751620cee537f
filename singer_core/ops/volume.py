"""Volume rendering kernels (NeRF, Mildenhall et al. 2020, eq. 3; Instant-NGP occupancy grid and early
ray termination; DAMC §2.4): camera rays, ray/box intersection, stratified sampling, an occupancy grid
that skips empty space, and alpha compositing.

Camera convention (documented once, used everywhere): **OpenGL / NeRF (Blender)**. A camera-to-world
matrix ``c2w`` (4, 4) or (3, 4) maps camera coordinates to world coordinates; in camera space the camera
looks along -z, +x points right and +y up. Pixel (row v, column u) of an H x W image has its centre at
(u + 0.5, v + 0.5) and the camera-space direction ``((u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1)``
(rows grow downwards in the image, so y flips). ``convention="opencv"`` gives the OpenCV / COLMAP
camera instead (+z forward, +y down): ``((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)``.

Compositing (per ray, samples i in order of increasing t)::

    alpha_i = 1 - exp(-sigma_i * delta_i)
    T_i     = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} sigma_j * delta_j)
    w_i     = T_i * alpha_i              (0 where T_i < early_stop: the march stopped before sample i)
    rgb     = sum_i w_i c_i + (1 - sum_i w_i) * background
    depth   = sum_i w_i t_i   (not normalised; background depth 0),  opacity = sum_i w_i

Samples are laid out padded, (R, S) per ray, with a boolean mask of live samples (after occupancy
skipping); masked samples contribute nothing. Everything is differentiable with ordinary autograd and
device-agnostic (no CUDA extension); T uses an exclusive cumulative sum in log space, which avoids the
unstable backward of cumprod through zeros. On CUDA float32/float16 inputs ``composite`` runs a fused Triton
kernel (forward and analytic backward) when triton imports; ``backend=`` forces either path
(``ops/triton_kernels.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from . import triton_kernels

logger = logging.getLogger(__name__)

Convention = Literal["opengl", "opencv"]


# ----------------------------------------------------------------------------------------------- cameras

@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """A pinhole camera: intrinsics in pixels and a camera-to-world pose (OpenGL convention by default).

    Args:
        c2w: (4, 4) or (3, 4) camera-to-world matrix.
        fx, fy: focal lengths in pixels; cx, cy: principal point in pixels (column, row).
        width, height: image size the intrinsics refer to.
        convention: "opengl" (NeRF, -z forward, +y up) or "opencv" (+z forward, +y down).
    """

    c2w: torch.Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    convention: Convention = "opengl"

    def resized(self, height: int, width: int) -> PinholeCamera:
        """The same camera rendering an image of (height, width): intrinsics scaled per axis."""
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height,
                             self.convention)

    def rays(self, *, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(origins (H, W, 3), directions (H, W, 3) unit length) in world space."""
        return camera_rays(self.c2w.to(device=device, dtype=dtype), self.fx, self.fy, self.cx, self.cy,
                           self.height, self.width, convention=self.convention)


def camera_rays(c2w: torch.Tensor, fx: float, fy: float, cx: float, cy: float, height: int, width: int, *,
                convention: Convention = "opengl", normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel centre.

    Args:
        c2w: (4, 4) or (3, 4) camera-to-world (see the module docstring for the axes).
        fx, fy, cx, cy: intrinsics in pixels; height, width: image size.
        convention: "opengl" or "opencv".
        normalize: return unit directions (else camera-space z = -1 / +1 before rotation).
    Returns:
        origins: (H, W, 3), directions: (H, W, 3), on c2w's device and dtype.
    """
    if c2w.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"camera_rays: c2w has shape {tuple(c2w.shape)}; give a (4, 4) or (3, 4) "
                         "camera-to-world matrix")
    if convention not in ("opengl", "opencv"):
        raise ValueError(f"camera_rays: convention={convention!r}; use 'opengl' (NeRF) or 'opencv'")
    device, dtype = c2w.device, c2w.dtype
    u = torch.arange(width, device=device, dtype=dtype) + 0.5
    v = torch.arange(height, device=device, dtype=dtype) + 0.5
    x = ((u - cx) / fx)[None, :].expand(height, width)
    y = ((v - cy) / fy)[:, None].expand(height, width)
    if convention == "opengl":
        cam = torch.stack([x, -y, -torch.ones_like(x)], dim=-1)
    else:
        cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    directions = cam @ c2w[:3, :3].T
    if normalize:
        directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[:3, 3].expand(height, width, 3)
    return origins, directions


def pixel_rays(pose: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, fl_x: float, fl_y: float, cx: float,
               cy: float, convention: str = "opengl") -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres (rows, cols) (R,) of a camera: the rays of camera_rays at those pixels only.

    Returns origins (R, 3), unit directions (R, 3).
    """
    x = (cols.to(pose.dtype) + 0.5 - cx) / fl_x
    y = (rows.to(pose.dtype) + 0.5 - cy) / fl_y
    if convention == "opengl":
        cam = torch.stack([x, -y, -torch.ones_like(x)], dim=-1)
    else:
        cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    directions = cam @ pose[:3, :3].T
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return pose[:3, 3].expand_as(directions), directions


# ---------------------------------------------------------------------------------------- box + samples

def ray_aabb(origins: torch.Tensor, directions: torch.Tensor, aabb: torch.Tensor | tuple[float, ...], *,
             min_near: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab intersection of rays with an axis-aligned box.

    Args:
        origins, directions: (R, 3) (directions need not be unit; t is in their units).
        aabb: (6,) (xmin, ymin, zmin, xmax, ymax, zmax).
        min_near: the near distance is at least this (a camera inside the box starts here).
    Returns:
        near (R,), far (R,), hit (R,) bool; rays that miss get near = far = min_near.
    """
    if origins.shape != directions.shape or origins.shape[-1] != 3:
        raise ValueError(f"ray_aabb: origins {tuple(origins.shape)} and directions {tuple(directions.shape)} "
                         "must both be (R, 3)")
    box = torch.as_tensor(aabb, device=origins.device, dtype=origins.dtype)
    safe = torch.where(directions.abs() < 1e-15, torch.full_like(directions, 1e-15), directions)
    safe = torch.where(directions < 0, -safe.abs(), safe.abs())
    inv = 1.0 / safe
    t0 = (box[:3] - origins) * inv
    t1 = (box[3:] - origins) * inv
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(min_near)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    near = torch.where(hit, near, torch.full_like(near, min_near))
    far = torch.where(hit, far, near)
    return near, far, hit


def stratified_samples(near: torch.Tensor, far: torch.Tensor, num_samples: int, *, perturb: bool = False,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split [near, far] of every ray into `num_samples` equal bins and take one sample per bin.

    Args:
        near, far: (R,); num_samples: S.
        perturb: sample uniformly inside each bin (training); else the bin centres (inference).
        generator: torch.Generator for the perturbation (seeded runs); on the rays' device.
    Returns:
        t: (R, S) sample distances, increasing; deltas: (R, S) bin widths (the delta of eq. 3).
    """
    if num_samples < 1:
        raise ValueError(f"stratified_samples: num_samples={num_samples} must be >= 1")
    step = (far - near) / num_samples                                            # (R,)
    edges = near[:, None] + step[:, None] * torch.arange(num_samples, device=near.device, dtype=near.dtype)
    if perturb:
        offset = torch.rand(edges.shape, generator=generator, device=near.device, dtype=near.dtype)
    else:
        offset = torch.full_like(edges, 0.5)
    t = edges + offset * step[:, None]
    return t, step[:, None].expand_as(t)


# ------------------------------------------------------------------------------------------- occupancy

class OccupancyGrid(nn.Module):
    """Instant-NGP-style occupancy grid: an EMA of the density on a res^3 lattice over the box, and a
    bitfield of cells worth sampling.

    update(): for every cell, sigma at a point in the cell (the centre, or a random point with
    `jitter`) -> density = max(density * decay, sigma); occupied = density > min(mean density, threshold).
    Cells never updated keep density -1 (unknown = occupied until first seen, as torch-ngp marks them).

    Args:
        aabb: (xmin, ymin, zmin, xmax, ymax, zmax) of the grid.
        resolution: cells per axis (ER-NeRF / torch-ngp: 128).
        threshold: density threshold for a cell to count as occupied (torch-ngp `density_thresh`: 10).
    Buffers: density (res, res, res) float32, occupied (res, res, res) bool, indexed [x, y, z].
    """

    def __init__(self, aabb: tuple[float, ...] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0), resolution: int = 128,
                 threshold: float = 10.0):
        super().__init__()
        if len(aabb) != 6 or any(aabb[i] >= aabb[i + 3] for i in range(3)):
            raise ValueError(f"OccupancyGrid: aabb={aabb}; give (xmin, ymin, zmin, xmax, ymax, zmax), min < max")
        if resolution < 1:
            raise ValueError(f"OccupancyGrid: resolution={resolution} must be >= 1")
        self.resolution, self.threshold = int(resolution), float(threshold)
        box = torch.tensor(aabb, dtype=torch.float32)
        self.register_buffer("aabb", box)
        self.register_buffer("density", torch.full((resolution,) * 3, -1.0))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))

    def cell_index(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) world -> (flat cell index (N,) long, inside box (N,) bool)."""
        box = self.aabb.to(points.dtype)
        unit = (points - box[:3]) / (box[3:] - box[:3])
        inside = ((unit >= 0) & (unit <= 1)).all(dim=-1)
        cell = (unit * self.resolution).long().clamp(0, self.resolution - 1)
        flat = (cell[:, 0] * self.resolution + cell[:, 1]) * self.resolution + cell[:, 2]
        return flat, inside

    def query(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) -> (...) bool: inside the box and in an occupied cell."""
        flat, inside = self.cell_index(points.reshape(-1, 3))
        return (self.occupied.reshape(-1)[flat] & inside).reshape(points.shape[:-1])

    def cell_points(self, *, jitter: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """(res^3, 3) one point per cell (centre, or uniform in the cell), flat order [x, y, z]."""
        res, box = self.resolution, self.aabb
        idx = torch.arange(res, device=box.device, dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), dim=-1).reshape(-1, 3)
        if jitter:
            grid = grid + torch.rand(grid.shape, generator=generator).to(box.device)  # CPU generator: seeded anywhere
        else:
            grid = grid + 0.5
        return box[:3] + grid / res * (box[3:] - box[:3])

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], *, decay: float = 0.95,
               jitter: bool = True, fraction: float = 1.0, generator: torch.Generator | None = None,
               chunk: int = 262144) -> None:
        """Refresh the grid from `density_fn` ((N, 3) world points -> (N,) sigma).

        Args:
            decay: EMA decay of the previous densities (torch-ngp / Instant-NGP: 0.95; 0 = replace).
            jitter: evaluate at a random point of every cell (else its centre).
            fraction: share of the cells refreshed this time, drawn at random (Instant-NGP refreshes a
                subset per step); the others keep their density.
            generator: seeds the jitter and the subset (CPU generator); chunk: points per density_fn call.
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"OccupancyGrid.update: fraction={fraction}; use a share of cells in (0, 1]")
        points = self.cell_points(jitter=jitter, generator=generator)
        cells = None
        if fraction < 1.0:
            count = max(1, int(round(fraction * points.shape[0])))
            cells = torch.randperm(points.shape[0], generator=generator)[:count].to(points.device)
            points = points[cells]
        sigma = torch.cat([density_fn(points[i:i + chunk]).reshape(-1).float()
                           for i in range(0, points.shape[0], chunk)])
        density = self.density.reshape(-1)
        old = density if cells is None else density[cells]
        new = torch.where(old < 0, sigma, torch.maximum(old * decay, sigma))
        if cells is None:
            density.copy_(new)
        else:
            density[cells] = new
        known = density[density >= 0]
        mean = float(known.mean()) if known.numel() else 0.0
        self.occupied.copy_(self.density > min(mean, self.threshold))
        self.occupied |= self.density < 0  # never seen: keep sampling it

    def occupancy_ratio(self) -> float:
        return float(self.occupied.float().mean())


# ------------------------------------------------------------------------------------------ compositing

def composite(sigmas: torch.Tensor, rgbs: torch.Tensor, deltas: torch.Tensor, t: torch.Tensor, *,
              mask: torch.Tensor | None = None, background: torch.Tensor | float | None = None,
              early_stop: float = 1e-4, backend: str | None = None) -> dict[str, torch.Tensor]:
    """Alpha-composite padded samples along each ray (module docstring for the equations).

    Args:
        sigmas: (R, S) densities >= 0; rgbs: (R, S, 3) colours; deltas: (R, S) segment lengths;
        t: (R, S) sample distances (for depth), increasing along S.
        mask: (R, S) bool, False = skipped sample (contributes nothing); None = all live.
        background: (3,), (R, 3) or a scalar colour behind the volume; None = black.
        early_stop: a sample whose transmittance T_i is below this is dropped (Instant-NGP: 1e-4; 0 = off).
        backend: "auto" (the fused Triton kernel for CUDA float32/float16 inputs when triton imports, else
            torch), "torch", "triton" (ValueError where it cannot run) or None (triton_kernels.set_backend's
            default, "auto" unless changed).
    Returns:
        dict rgb (R, 3), depth (R,), opacity (R,), weights (R, S), transmittance (R,) after the last sample.
    """
    if sigmas.dim() != 2 or rgbs.shape != sigmas.shape + (3,) or deltas.shape != sigmas.shape \
            or t.shape != sigmas.shape:
        raise ValueError(f"composite: sigmas {tuple(sigmas.shape)}, rgbs {tuple(rgbs.shape)}, deltas "
                         f"{tuple(deltas.shape)}, t {tuple(t.shape)}; need (R, S), (R, S, 3), (R, S), (R, S)")
    if triton_kernels.use_triton("composite", (sigmas, rgbs, deltas, t), backend) and sigmas.numel():
        rgb, depth, opacity, weights, transmittance = triton_kernels.composite_triton(
            sigmas, rgbs, deltas, t, mask, early_stop)
        if background is not None:
            bg = torch.as_tensor(background, device=rgb.device, dtype=rgb.dtype)
            rgb = rgb + (1.0 - opacity)[:, None] * bg
        return {"rgb": rgb, "depth": depth, "opacity": opacity, "weights": weights,
                "transmittance": transmittance}
    # 1. optical depth of every segment; skipped samples are empty space
    tau = sigmas * deltas
    if mask is not None:
        tau = torch.where(mask, tau, torch.zeros_like(tau))
    # 2. transmittance before each sample (exclusive cumulative sum) and alpha
    accumulated = torch.cumsum(tau, dim=-1)
    transmittance = torch.exp(-(accumulated - tau))
    alpha = 1.0 - torch.exp(-tau)
    weights = transmittance * alpha
    if early_stop > 0:
        weights = torch.where(transmittance >= early_stop, weights, torch.zeros_like(weights))
    # 3. accumulate colour, depth, opacity; background fills the rest
    opacity = weights.sum(dim=-1)
    rgb = (weights[..., None] * rgbs).sum(dim=-2)
    if background is not None:
        bg = torch.as_tensor(background, device=rgb.device, dtype=rgb.dtype)
        rgb = rgb + (1.0 - opacity)[:, None] * bg
    depth = (weights * t).sum(dim=-1)
    return {"rgb": rgb, "depth": depth, "opacity": opacity, "weights": weights,
            "transmittance": torch.exp(-accumulated[:, -1]) if tau.shape[1] else torch.ones_like(opacity)}
