"""Multi-resolution hash-grid encoding (Instant-NGP, Müller et al. 2022, §3) and the tri-plane encoder of
ER-NeRF / DAMC §2.4 (f_g = H_XY(x, y) ⊕ H_YZ(y, z) ⊕ H_XZ(x, z)), in plain PyTorch (no CUDA extension).

Grid layout (the torch-ngp ``gridencoder`` that RAD-NeRF / ER-NeRF build on, ``align_corners=False``)
-------------------------------------------------------------------------------------------------
* Level l (0..L-1) has the continuous scale ``scale_l = base_resolution * b**l - 1`` where the per-level
  growth ``b = exp2(log2(max_resolution / base_resolution) / (L - 1))`` (or ``per_level_scale`` given) and
  ``resolution_l = ceil(scale_l) + 1``; a level stores ``resolution_l + 1`` vertices per axis.
* An input ``u`` in [0, 1]^D maps to ``p = u * scale_l + 0.5``; the lower corner is ``floor(p)`` and the
  interpolation weights are the usual (bi/tri)linear ones of ``frac(p)``.
* Vertex index: if ``(resolution_l + 1)**D <= T`` (T = 2**log2_table_size) the level is dense,
  ``index = x + y * (resolution_l + 1) [+ z * (resolution_l + 1)**2]``; otherwise it is hashed,
  ``index = (x * 1 xor y * 2654435761 [xor z * 805459861]) mod 2**32``. Either is then taken modulo the
  level's table size ``min(T, (resolution_l + 1)**D)`` (rounded up to ``table_alignment``).
* An input outside [0, 1] in any coordinate encodes to 0 (and gets no gradient), as the CUDA kernel does.
* Tables are one flat parameter ``embeddings`` (sum of table sizes, features_per_level), levels stacked in
  order, initialised uniform in [-init_scale, init_scale] (torch-ngp: 1e-4).

The scale is computed in float64 here (the CUDA kernel uses float32 ``exp2f``); the difference is far
below one grid cell.

Gradients: with respect to the tables through a custom autograd function whose backward is one
``index_add_`` (scatter-add) per call; with respect to the input coordinates when the inputs require
grad (then the whole encoding runs through ordinary differentiable torch ops).

GPU: CUDA float32/float16 inputs run one fused Triton kernel per call (all levels and corners; backward by
atomic adds, coordinate gradients included) when triton imports; ``backend="torch"`` / ``"triton"`` on the
encoders (or ``triton_kernels.set_backend``) forces either path. See ``ops/triton_kernels.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..io.config import JsonConfig
from . import triton_kernels

logger = logging.getLogger(__name__)

HASH_PRIMES = (1, 2654435761, 805459861)  # Instant-NGP's per-axis primes (x, y, z)
_UINT32_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class HashGridConfig(JsonConfig):
    """One multi-resolution hash grid (defaults: one plane of ER-NeRF's tri-plane)."""

    input_dim: int = 2                      # D: coordinates per point (2 for a plane, 3 for a volume)
    num_levels: int = 12                    # L: resolution levels
    features_per_level: int = 1             # F: features stored per vertex
    log2_table_size: int = 14               # T = 2**log2_table_size entries per level at most
    base_resolution: int = 64               # coarsest level resolution
    max_resolution: float | None = 512.0    # finest level resolution (sets the per-level scale); ER-NeRF 512*bound
    per_level_scale: float | None = None    # growth per level; used only when max_resolution is None
    table_alignment: int = 1                # round each level's table size up to a multiple of this (8 in newer torch-ngp)
    init_scale: float = 1e-4                # tables start uniform in [-init_scale, init_scale]

    def __post_init__(self):
        if self.input_dim not in (2, 3):
            raise ValueError(f"HashGridConfig: input_dim={self.input_dim}; use 2 (plane) or 3 (volume)")
        if self.num_levels < 1 or self.features_per_level < 1 or self.base_resolution < 1:
            raise ValueError(f"HashGridConfig: num_levels={self.num_levels}, features_per_level="
                             f"{self.features_per_level}, base_resolution={self.base_resolution} must all be >= 1")
        if not 1 <= self.log2_table_size <= 30:
            raise ValueError(f"HashGridConfig: log2_table_size={self.log2_table_size}; use 1..30 (ER-NeRF: 14)")
        if self.max_resolution is None and self.per_level_scale is None:
            raise ValueError("HashGridConfig: give max_resolution (finest level) or per_level_scale")
        if self.table_alignment < 1:
            raise ValueError(f"HashGridConfig: table_alignment={self.table_alignment} must be >= 1")

    @property
    def growth(self) -> float:
        """The per-level resolution factor b."""
        if self.max_resolution is not None:
            if self.num_levels == 1:
                return 1.0
            return float(2.0 ** (math.log2(self.max_resolution / self.base_resolution) / (self.num_levels - 1)))
        return float(self.per_level_scale)

    @property
    def output_dim(self) -> int:
        return self.num_levels * self.features_per_level


@dataclass(frozen=True)
class LevelGeometry:
    """Per-level constants derived from a HashGridConfig (plain Python numbers)."""

    scale: float        # continuous scale: p = u * scale + 0.5
    resolution: int     # ceil(scale) + 1; vertices per axis = resolution + 1
    table_size: int     # entries stored for this level
    offset: int         # first row of this level in the flat table
    dense: bool         # True: direct indexing; False: spatial hash


def level_geometry(config: HashGridConfig) -> list[LevelGeometry]:
    """The L levels of `config`: scale, resolution, table size, offset and dense/hashed flag."""
    levels, offset, max_params = [], 0, 2 ** config.log2_table_size
    if max_params % config.table_alignment:
        raise ValueError(f"HashGridConfig: table_alignment={config.table_alignment} must divide the table "
                         f"size 2**{config.log2_table_size}")
    for level in range(config.num_levels):
        scale = config.base_resolution * config.growth ** level - 1.0
        resolution = int(math.ceil(scale)) + 1
        full = (resolution + 1) ** config.input_dim
        size = min(max_params, full)
        size = -(-size // config.table_alignment) * config.table_alignment
        levels.append(LevelGeometry(scale, resolution, size, offset, full <= max_params))
        offset += size
    return levels


class HashGridTables:
    """Device tensors of the level constants, cached per (device, dtype) by HashGridEncoder."""

    def __init__(self, levels: list[LevelGeometry], device, dtype):
        self.num_dense = sum(lv.dense for lv in levels)  # dense levels come first (resolution grows)
        self.scale = torch.tensor([lv.scale for lv in levels], device=device, dtype=dtype)
        self.stride = torch.tensor([lv.resolution + 1 for lv in levels], device=device, dtype=torch.long)
        self.offset = torch.tensor([lv.offset for lv in levels], device=device, dtype=torch.long)
        self.hash_mask = max([lv.table_size - 1 for lv in levels if not lv.dense], default=0)
        self.rows = levels[-1].offset + levels[-1].table_size  # rows of one grid
        self.corner = torch.arange(2, device=device)[:, None, None]  # (2, 1, 1): lower / upper vertex


def _outer(terms: list[torch.Tensor], op, out: torch.Tensor | None = None) -> torch.Tensor:
    """Combine per-axis (L, 2, N, P) terms over all 2**D corners into (L, 2, ..., 2, N, P), axis 0 (x) last.

    The corner axes sit before the point axes so every elementwise op runs over long contiguous rows.
    The last combination writes into `out` (viewed to that shape) when given.
    """
    dim = len(terms)
    result = None
    for d, term in enumerate(terms):
        levels, _, num, grids = term.shape
        shape = (levels,) + tuple(2 if e == dim - 1 - d else 1 for e in range(dim)) + (num, grids)
        term = term.view(shape)
        if result is None:
            result = term
        elif d == dim - 1 and out is not None:
            result = op(result, term, out=out.view((levels,) + (2,) * dim + (num, grids)))
        else:
            result = op(result, term)
    return result


def hash_grid_corners(coords: torch.Tensor, tables: HashGridTables, grid_rows: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and interpolation weights of every corner of every level of one or more grids.

    Args:
        coords: (N, P, D) coordinates in [0, 1] for P grids sharing one level layout (P = 3 for a
            tri-plane); a point outside [0, 1]^D on a grid gets weight 0 there.
        tables: level constants (HashGridEncoder.tables(...)).
        grid_rows: rows per grid in the flat table (grid p starts at row p * grid_rows).
    Returns:
        index: (L, 2**D, N, P) int32 rows into the flat table (int64 beyond 2^31 rows); corner k takes the upper vertex on axis d
            iff bit d of k is set. Levels first (one level's table is read at a time), points innermost.
        weights: (L, 2**D, N, P), differentiable in `coords` if it requires grad.
    """
    num, grids, dim = coords.shape
    levels, dense = tables.scale.shape[0], tables.num_dense
    # 1. continuous position per level, lower corner and fraction: (L, D, N, P)
    inside = ((coords >= 0) & (coords <= 1)).all(dim=-1).to(coords.dtype)                # (N, P)
    # clamped value, identity gradient: a point on the boundary (0 or 1) keeps the one-sided derivative of its
    # cell (as the Triton kernel and torch <= 2.13's clamp give); torch 2.14's clamp backward is 0 there
    unit = coords + (coords.clamp(0.0, 1.0) - coords).detach() if coords.requires_grad else coords.clamp(0.0, 1.0)
    unit = unit.permute(2, 0, 1)                                                         # (D, N, P)
    pos = unit[None] * tables.scale[:, None, None, None].to(coords.dtype) + 0.5
    lower = torch.floor(pos.detach())
    frac = pos - lower
    vertex = lower.long()[:, :, None] + tables.corner                                    # (L, D, 2, N, P)
    # 2. weights: product of per-axis (1 - frac, frac); outside points weigh 0
    axis_w = torch.stack([1.0 - frac, frac], dim=2)                                      # (L, D, 2, N, P)
    axis_terms = [axis_w[:, d] for d in range(dim)]
    axis_terms[0] = axis_terms[0] * inside
    weights = _outer(axis_terms, torch.mul).reshape(levels, -1, num, grids)
    # 3. rows: dense levels x + y * s (+ z * s^2); hashed levels (x ^ y * p1 (^ z * p2)) mod 2^log2 T.
    #    Per-axis terms are reduced below 2^31 first, so the corner tensors can be int32.
    base = tables.offset[:, None, None] + grid_rows * torch.arange(grids, device=coords.device)   # (L, 1, P)
    itype = torch.int32 if max(grid_rows, tables.rows) * grids < 2 ** 31 else torch.long
    index = torch.empty(weights.shape, dtype=itype, device=coords.device)
    if dense > 0:
        stride = tables.stride[:dense, None, None, None]
        terms = [vertex[:dense, d] * stride ** d for d in range(dim)]
        terms[0] = terms[0] + base[:dense, None]
        _outer([term.to(itype) for term in terms], torch.add, out=index[:dense])
    if dense < levels:
        terms = [((vertex[dense:, d] * HASH_PRIMES[d]) & tables.hash_mask).to(itype) for d in range(dim)]
        _outer(terms, torch.bitwise_xor, out=index[dense:])
        index[dense:] += base[dense:, None].to(itype)
    return index, weights


def _flat_index(index: torch.Tensor, features: int) -> torch.Tensor:
    """Rows -> positions in the flattened (rows * F,) table: (...,) -> (..., F) (or (...,) when F = 1)."""
    if features == 1:
        return index
    return index[..., None] * features + torch.arange(features, device=index.device, dtype=index.dtype)


class _GatherInterpolate(torch.autograd.Function):
    """out[l, m, :] = sum_k weights[l, k, m] * table[index[l, k, m], :]; backward: one index_add_.

    Works on the flattened table: 1-D index_select / index_add_ are several times faster on CPU than
    their row-wise 2-D forms when F is small (ER-NeRF: F = 1).
    """

    @staticmethod
    def forward(ctx, table, index, weights):
        levels, corners, num = index.shape
        features = table.shape[1]
        flat = _flat_index(index, features)
        gathered = table.reshape(-1).index_select(0, flat.reshape(-1)).view(levels, corners, num, features)
        out = (gathered * weights.to(table.dtype)[..., None]).sum(dim=1)          # (L, M, F)
        ctx.save_for_backward(index, weights)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        index, weights = ctx.saved_tensors
        grad_table = None
        if ctx.needs_input_grad[0]:
            rows, features = ctx.table_shape
            contrib = grad_out[:, None] * weights[..., None].to(grad_out.dtype)   # (L, K, M, F)
            grad_table = grad_out.new_zeros(rows * features)
            grad_table.index_add_(0, _flat_index(index, features).reshape(-1), contrib.reshape(-1))
            grad_table = grad_table.view(rows, features)
        return grad_table, None, None


def interpolate_table(table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor,
                      differentiable_weights: bool) -> torch.Tensor:
    """Sum over the corner axis of weights * table[index].

    Args:
        table: (rows, F); index, weights: (L, K, N, P) from hash_grid_corners.
        differentiable_weights: True to let autograd reach the weights (input-coordinate gradients).
    Returns:
        (N, P * L * F): grid-major, then level, then feature.
    """
    levels, corners, num, grids = index.shape
    if differentiable_weights:
        gathered = table[index.long()]                                            # (L, K, N, P, F)
        out = (gathered * weights[..., None].to(gathered.dtype)).sum(dim=1)       # (L, N, P, F)
    else:
        out = _GatherInterpolate.apply(table, index.view(levels, corners, -1), weights.view(levels, corners, -1))
        out = out.view(levels, num, grids, table.shape[1])
    return out.permute(1, 2, 0, 3).reshape(num, -1)


def _encode_triton(table: torch.Tensor, coords: torch.Tensor, tables: HashGridTables, grid_rows: int = 0
                   ) -> torch.Tensor:
    """The fused Triton encoding: table (rows, F), coords (N, P, D), float32 level tables -> (N, P * L * F)."""
    return triton_kernels.hash_grid_encode(table, coords, tables.scale, tables.stride, tables.offset,
                                           num_dense=tables.num_dense, hash_mask=tables.hash_mask,
                                           grid_rows=grid_rows)


class HashGridEncoder(nn.Module):
    """Multi-resolution hash-grid encoding of points in [0, 1]^D.

    Args:
        config: HashGridConfig (levels, features, table size, resolutions); keyword overrides replace
            its fields.
        backend: "auto" (Triton for CUDA float32/float16 inputs when triton imports, else torch), "torch",
            "triton" (error where it cannot run) or None (the default of triton_kernels.set_backend). Settable
            later as the attribute ``backend``.
    Forward:
        inputs: (..., D) in [0, 1] (outside: encodes to 0) -> (..., L * F), levels in order, features inner.
    Parameters:
        embeddings: (sum of level table sizes, F) -- the name torch-ngp / ER-NeRF checkpoints use.
    """

    def __init__(self, config: HashGridConfig | None = None, *, backend: str | None = None, **overrides):
        super().__init__()
        config = dataclasses.replace(config or HashGridConfig(), **overrides)
        self.config = config
        self.backend = None if backend is None else triton_kernels.check_backend(backend, "HashGridEncoder")
        self.levels = level_geometry(config)
        total = self.levels[-1].offset + self.levels[-1].table_size
        self.embeddings = nn.Parameter(torch.empty(total, config.features_per_level))
        self._tables: dict = {}
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform in [-init_scale, init_scale] (seeded through `generator` if given)."""
        with torch.no_grad():
            values = torch.rand(self.embeddings.shape, generator=generator, dtype=torch.float64)
            self.embeddings.copy_((values * 2 - 1) * self.config.init_scale)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def tables(self, device, dtype) -> HashGridTables:
        key = (str(device), dtype)
        if key not in self._tables:
            self._tables[key] = HashGridTables(self.levels, device, dtype)
        return self._tables[key]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        dim = self.config.input_dim
        if inputs.shape[-1] != dim:
            raise ValueError(f"HashGridEncoder: inputs have shape {tuple(inputs.shape)}; the last axis must be "
                             f"{dim} coordinates in [0, 1]")
        prefix = inputs.shape[:-1]
        flat = inputs.reshape(-1, dim)
        if not flat.is_floating_point():
            raise ValueError(f"HashGridEncoder: inputs must be floating point, got {inputs.dtype}")
        if triton_kernels.use_triton("HashGridEncoder", (flat, self.embeddings), self.backend):
            out = _encode_triton(self.embeddings, flat[:, None, :], self.tables(flat.device, torch.float32))
        else:
            index, weights = hash_grid_corners(flat[:, None, :], self.tables(flat.device, flat.dtype))
            out = interpolate_table(self.embeddings, index, weights, flat.requires_grad)  # (N, L * F)
        return out.reshape(*prefix, self.output_dim)

    def extra_repr(self) -> str:
        cfg = self.config
        dense = sum(lv.dense for lv in self.levels)
        return (f"input_dim={cfg.input_dim}, levels={cfg.num_levels}x{cfg.features_per_level}, resolution "
                f"{cfg.base_resolution}->{self.levels[-1].resolution}, growth={cfg.growth:.4f}, "
                f"table=2^{cfg.log2_table_size}, dense_levels={dense}, params={tuple(self.embeddings.shape)}")


@dataclass(frozen=True)
class TriPlaneConfig(JsonConfig):
    """Tri-plane hash encoder (ER-NeRF / DAMC §2.4): three 2D hash grids on the xy, yz and xz planes."""

    aabb: tuple[float, ...] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)  # (xmin, ymin, zmin, xmax, ymax, zmax) normalised to [0, 1]
    num_levels: int = 12                    # levels per plane
    features_per_level: int = 1             # features per level
    log2_table_size: int = 14               # per-level table size 2**log2_table_size
    base_resolution: int = 64               # coarsest resolution
    max_resolution: float | None = 512.0    # finest resolution (ER-NeRF: 512 * bound)
    per_level_scale: float | None = None    # used when max_resolution is None
    table_alignment: int = 1                # see HashGridConfig
    init_scale: float = 1e-4                # table initialisation range

    def __post_init__(self):
        if len(self.aabb) != 6 or any(self.aabb[i] >= self.aabb[i + 3] for i in range(3)):
            raise ValueError(f"TriPlaneConfig: aabb={self.aabb}; give (xmin, ymin, zmin, xmax, ymax, zmax) "
                             "with every min < max")

    def plane_config(self) -> HashGridConfig:
        return HashGridConfig(input_dim=2, num_levels=self.num_levels, features_per_level=self.features_per_level,
                              log2_table_size=self.log2_table_size, base_resolution=self.base_resolution,
                              max_resolution=self.max_resolution, per_level_scale=self.per_level_scale,
                              table_alignment=self.table_alignment, init_scale=self.init_scale)


PLANES = (("xy", (0, 1)), ("yz", (1, 2)), ("xz", (0, 2)))  # plane name and the coordinate axes it reads


class TriPlaneEncoder(nn.Module):
    """f = H_XY(x, y) ⊕ H_YZ(y, z) ⊕ H_XZ(x, z) for points in an axis-aligned box.

    Args:
        config: TriPlaneConfig.
        backend: "auto", "torch", "triton" or None, as for HashGridEncoder (attribute ``backend``).
    Forward:
        points: (..., 3) world coordinates; the box `config.aabb` is mapped to [0, 1]^3 (points outside
            encode to 0 on the planes where they fall outside) -> (..., 3 * L * F), order xy, yz, xz.
    Submodules ``encoder_xy``, ``encoder_yz``, ``encoder_xz`` (the names ER-NeRF uses).
    """

    def __init__(self, config: TriPlaneConfig | None = None, *, backend: str | None = None):
        super().__init__()
        self.config = config or TriPlaneConfig()
        self.backend = None if backend is None else triton_kernels.check_backend(backend, "TriPlaneEncoder")
        plane = self.config.plane_config()
        self.encoder_xy = HashGridEncoder(plane)
        self.encoder_yz = HashGridEncoder(plane)
        self.encoder_xz = HashGridEncoder(plane)
        aabb = torch.tensor(self.config.aabb, dtype=torch.float32)
        self.register_buffer("aabb_min", aabb[:3].clone(), persistent=False)
        self.register_buffer("aabb_size", (aabb[3:] - aabb[:3]).clone(), persistent=False)

    @property
    def output_dim(self) -> int:
        return 3 * self.encoder_xy.output_dim

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for encoder in (self.encoder_xy, self.encoder_yz, self.encoder_xz):
            encoder.reset_parameters(generator)

    def normalize(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) world -> (..., 3) box coordinates in [0, 1]."""
        return (points - self.aabb_min.to(points.dtype)) / self.aabb_size.to(points.dtype)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.shape[-1] != 3:
            raise ValueError(f"TriPlaneEncoder: points have shape {tuple(points.shape)}; need (..., 3)")
        # 1. box -> [0, 1]^3, then the three planes' coordinate pairs: (N, 3, 2)
        prefix = points.shape[:-1]
        unit = self.normalize(points.reshape(-1, 3))
        coords = unit[:, self._plane_axes(unit.device)]
        # 2. one pass over the three stacked tables (rows of plane p start at p * rows)
        encoders = (self.encoder_xy, self.encoder_yz, self.encoder_xz)
        table = torch.cat([enc.embeddings for enc in encoders], dim=0)
        rows = self.encoder_xy.embeddings.shape[0]
        if triton_kernels.use_triton("TriPlaneEncoder", (coords, table), self.backend):
            out = _encode_triton(table, coords, self.encoder_xy.tables(unit.device, torch.float32), rows)
        else:
            index, weights = hash_grid_corners(coords, self.encoder_xy.tables(unit.device, unit.dtype), rows)
            out = interpolate_table(table, index, weights, unit.requires_grad)    # (N, 3 * L * F)
        return out.reshape(*prefix, self.output_dim)

    def _plane_axes(self, device) -> torch.Tensor:
        return torch.tensor([axes for _, axes in PLANES], device=device)
