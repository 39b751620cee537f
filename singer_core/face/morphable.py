"""3D morphable face model (3DMM) in the Deep3DFaceRecon coefficient layout (Deng et al. 2019,
"Accurate 3D Face Reconstruction with Weakly-Supervised Learning"; github sicxu/Deep3DFaceRecon_pytorch,
``models/bfm.py``): shape = mean + id basis * id + exp basis * exp, albedo = mean + tex basis * tex,
pose by Euler angles and a translation, and a pinhole camera at distance 10 with focal 1015 at 224 px.

Frames and conventions
----------------------
* **Model / world frame** (what :meth:`MorphableModel.vertices` and :func:`transform` return): right
  handed, x to the image right, y up, z towards the camera; the face looks along +z. Units are
  Deep3DFaceRecon's decimetres (a face is about 1.6 wide).
* **Rotation**: :func:`euler_to_rotation` returns R = Rz(roll) @ Ry(yaw) @ Rx(pitch) acting on column
  vectors (p' = R p). Deep3DFaceRecon's ``compute_rotation`` returns the transpose of the same matrix
  for row vectors (``points @ rot``); the resulting poses are identical. Positive pitch turns the nose
  down, positive yaw turns it to the image right, positive roll turns the face counter-clockwise as
  seen in the image.
* **Camera frame** (:func:`to_camera`, what the rasteriser takes): x right, y up, z = distance in front
  of the camera = ``camera.distance - z_world`` (Deep3DFaceRecon's ``to_camera``).
* **Pixels** (:func:`project`): x to the right, y down, pixel centres at integer coordinates (pixel
  (row i, column j) is centred on (x=j, y=i)); the principal point is the image centre
  ((S-1)/2, (S-1)/2) and the focal length in pixels is ``camera.focal * S / camera.image_size``.
  (Deep3DFaceRecon puts the principal point at (112, 111) of a 224 image in these coordinates; ours
  is symmetric, half a pixel away from theirs in x.)
* **Triangles** are counter-clockwise when seen from outside the surface (from the camera, for
  front-facing triangles) in the model frame, hence clockwise in pixel coordinates (y down). This
  is the BFM's winding: Deep3DFaceRecon's normal cross(v1 - v2, v2 - v3) points outwards.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import torch
from torch import Tensor

from ..io.config import JsonConfig

logger = logging.getLogger(__name__)

COEFF_SLICES: dict[str, slice] = {
    "id": slice(0, 80), "exp": slice(80, 144), "tex": slice(144, 224), "angle": slice(224, 227),
    "gamma": slice(227, 254), "trans": slice(254, 257),
}  # Deep3DFaceRecon layout, 257 coefficients in all
COEFF_SIZES: dict[str, int] = {name: part.stop - part.start for name, part in COEFF_SLICES.items()}
NUM_COEFFS = 257

EXPRESSION_UNITS: dict[str, int] = {
    "jaw_open": 0, "lip_round": 1, "lip_spread": 2, "smile": 3, "brow_raise": 4, "blink": 5,
}  # indices into the 64 exp coefficients of the procedural model; 1.0 = a full, natural action

# iBUG 68-point groups (0-based, inclusive ranges as Python ranges)
LANDMARK_GROUPS: dict[str, range] = {
    "jaw": range(0, 17), "brow_right": range(17, 22), "brow_left": range(22, 27),
    "nose_bridge": range(27, 31),
    "nose_base": range(31, 36), "eye_right": range(36, 42), "eye_left": range(42, 48),
    "mouth_outer": range(48, 60), "mouth_inner": range(60, 68),
}  # "right" is the subject's right, i.e. the image left in a frontal view


# ----------------------------------------------------------------------------- coefficients


def split_coeffs(coeffs: Tensor) -> dict[str, Tensor]:
    """Split Deep3DFaceRecon coefficients into their parts (views, no copy).

    Args:
        coeffs: (..., 257) coefficients.

    Returns:
        {"id": (..., 80), "exp": (..., 64), "tex": (..., 80), "angle": (..., 3), "gamma": (..., 27),
        "trans": (..., 3)}.
    """
    if not isinstance(coeffs, Tensor) or coeffs.dim() < 1 or coeffs.shape[-1] != NUM_COEFFS:
        shape = tuple(coeffs.shape) if isinstance(coeffs, Tensor) else type(coeffs).__name__
        raise ValueError(f"split_coeffs: coefficients must be a tensor shaped (..., {NUM_COEFFS}) in the "
                         f"Deep3DFaceRecon layout (id 80, exp 64, tex 80, angle 3, gamma 27, trans 3); "
                         f"got {shape}")
    return {name: coeffs[..., part] for name, part in COEFF_SLICES.items()}


def join_coeffs(*, id: Tensor, exp: Tensor, tex: Tensor, angle: Tensor, gamma: Tensor,  # noqa: A002
                trans: Tensor) -> Tensor:
    """Concatenate the parts into (..., 257) Deep3DFaceRecon coefficients.

    Args:
        id: (..., 80) identity; exp: (..., 64) expression; tex: (..., 80) albedo; angle: (..., 3)
            pitch/yaw/roll radians; gamma: (..., 27) spherical-harmonics lighting; trans: (..., 3).
            All parts need the same leading shape (expand a shared part first), dtype and device.

    Returns:
        (..., 257) tensor.
    """
    parts = {"id": id, "exp": exp, "tex": tex, "angle": angle, "gamma": gamma, "trans": trans}
    lead = None
    for name, value in parts.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"join_coeffs: '{name}' must be a tensor shaped (..., {COEFF_SIZES[name]}), "
                             f"got {type(value).__name__}")
        if value.dim() < 1 or value.shape[-1] != COEFF_SIZES[name]:
            raise ValueError(f"join_coeffs: '{name}' must be shaped (..., {COEFF_SIZES[name]}), "
                             f"got {tuple(value.shape)}")
        if lead is None:
            lead = value.shape[:-1]
        elif value.shape[:-1] != lead:
            raise ValueError(f"join_coeffs: '{name}' has leading shape {tuple(value.shape[:-1])} but 'id' "
                             f"has {tuple(lead)}; expand shared parts (e.g. id.expand(frames, 80)) first")
    dtype = functools.reduce(torch.promote_types, (value.dtype for value in parts.values()))
    return torch.cat([parts[name].to(dtype) for name in COEFF_SLICES], dim=-1)


def zero_coeffs(*batch_shape: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Neutral coefficients (mean face, neutral expression, frontal, default light): zeros (*batch, 257)."""
    return torch.zeros(*batch_shape, NUM_COEFFS, dtype=dtype, device=device)


def _check_batch(name: str, value: Tensor, size: int, where: str) -> None:
    if not isinstance(value, Tensor) or value.dim() != 2 or value.shape[1] != size:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{where}: {name} must be shaped (B, {size}), got {shape}")


# ----------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class MorphableModel:
    """A linear face model with Deep3DFaceRecon-sized bases (tensors; move with :meth:`to`).

    Fields:
        mean_shape: (V, 3) mean vertex positions, model frame (decimetres).
        id_basis: (V, 3, 80) identity (shape) basis, scaled so coefficients are ~N(0, 1).
        exp_basis: (V, 3, 64) expression basis.
        mean_tex: (V, 3) mean albedo, RGB in 0..1.
        tex_basis: (V, 3, 80) albedo basis in 0..1 units.
        triangles: (T, 3) int64 vertex ids, counter-clockwise seen from outside (see module docstring).
        landmarks68: (68,) int64 vertex ids in the iBUG 68-point order (jaw 0-16, brows 17-26,
            nose 27-35, eyes 36-47, mouth 48-67).
        name: what the model is, e.g. "procedural(seed=0, detail=1)" or "BFM_model_front".
    """

    mean_shape: Tensor
    id_basis: Tensor
    exp_basis: Tensor
    mean_tex: Tensor
    tex_basis: Tensor
    triangles: Tensor
    landmarks68: Tensor
    name: str = "morphable"

    def __post_init__(self):
        vertices = self.mean_shape.shape[0] if self.mean_shape.dim() == 2 else -1
        expected = {
            "mean_shape": (vertices, 3), "id_basis": (vertices, 3, 80), "exp_basis": (vertices, 3, 64),
            "mean_tex": (vertices, 3), "tex_basis": (vertices, 3, 80),
        }
        for field, shape in expected.items():
            value = getattr(self, field)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape or vertices <= 0:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"MorphableModel '{self.name}': {field} must be shaped {shape} (V = number "
                                 f"of vertices from mean_shape (V, 3)), got {got}")
        if self.triangles.dim() != 2 or self.triangles.shape[1] != 3 or self.triangles.dtype != torch.int64:
            raise ValueError(f"MorphableModel '{self.name}': triangles must be int64 shaped (T, 3), got "
                             f"{self.triangles.dtype} {tuple(self.triangles.shape)}")
        if tuple(self.landmarks68.shape) != (68,) or self.landmarks68.dtype != torch.int64:
            raise ValueError(f"MorphableModel '{self.name}': landmarks68 must be int64 shaped (68,), got "
                             f"{self.landmarks68.dtype} {tuple(self.landmarks68.shape)}")
        for field in ("triangles", "landmarks68"):
            ids = getattr(self, field)
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vertices):
                raise ValueError(f"MorphableModel '{self.name}': {field} holds vertex ids outside "
                                 f"[0, {vertices})")

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def device(self) -> torch.device:
        return self.mean_shape.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean_shape.dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> MorphableModel:
        """A copy on `device` with floating tensors in `dtype` (index tensors stay int64)."""
        changes = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Tensor):
                floating = value.is_floating_point()
                changes[field.name] = value.to(device=device, dtype=dtype if floating else None)
        return dataclasses.replace(self, **changes)

    def vertices(self, id_coeff: Tensor, exp_coeff: Tensor) -> Tensor:
        """Shape in the model frame.

        Args:
            id_coeff: (B, 80) identity coefficients.
            exp_coeff: (B, 64) expression coefficients.

        Returns:
            (B, V, 3) vertex positions.
        """
        _check_batch("id_coeff", id_coeff, 80, "MorphableModel.vertices")
        _check_batch("exp_coeff", exp_coeff, 64, "MorphableModel.vertices")
        if id_coeff.shape[0] != exp_coeff.shape[0]:
            raise ValueError(f"MorphableModel.vertices: id_coeff has batch {id_coeff.shape[0]} but exp_coeff "
                             f"has {exp_coeff.shape[0]}")
        count = self.num_vertices
        dtype = self.dtype
        offsets = (id_coeff.to(dtype) @ self.id_basis.reshape(count * 3, 80).T
                   + exp_coeff.to(dtype) @ self.exp_basis.reshape(count * 3, 64).T)
        return self.mean_shape + offsets.reshape(-1, count, 3)

    def albedo(self, tex_coeff: Tensor) -> Tensor:
        """Per-vertex albedo.

        Args:
            tex_coeff: (B, 80) texture coefficients.

        Returns:
            (B, V, 3) RGB clamped to 0..1.
        """
        _check_batch("tex_coeff", tex_coeff, 80, "MorphableModel.albedo")
        count = self.num_vertices
        offsets = tex_coeff.to(self.dtype) @ self.tex_basis.reshape(count * 3, 80).T
        return (self.mean_tex + offsets.reshape(-1, count, 3)).clamp(0.0, 1.0)

    def vertex_normals(self, vertices: Tensor) -> Tensor:
        """Unit vertex normals: the normalised sum of the unit normals of the adjacent triangles (as
        Deep3DFaceRecon's ``compute_norm``), pointing outwards.

        Args:
            vertices: (B, V, 3) positions (any rigid frame; normals come out in the same frame).

        Returns:
            (B, V, 3) unit normals (zero for a vertex in no triangle).
        """
        return vertex_normals(vertices, self.triangles)

    def landmarks3d(self, vertices: Tensor) -> Tensor:
        """(B, V, 3) vertices -> (B, 68, 3) landmark vertices."""
        return vertices[:, self.landmarks68]


def vertex_normals(vertices: Tensor, triangles: Tensor) -> Tensor:
    """Unit vertex normals of a mesh with outward counter-clockwise triangles.

    Args:
        vertices: (B, V, 3) positions.
        triangles: (T, 3) int64 vertex ids.

    Returns:
        (B, V, 3) normalised sum of the adjacent triangles' unit normals (~zero where undefined).
        CPU tensors that need no gradient go through a compiled numba loop (same result).

    A triangle's normal is cross / max(|cross|, 1e-6) (F.normalize with a larger eps than
    Deep3DFaceRecon's 1e-12; a 1-2 mm BFM triangle has |cross| ~ 1e-4 dm^2): slivers such as closed
    mouth rows or shut eyelids, whose cross products are rounding noise, then add next to nothing
    instead of a unit vector in an arbitrary direction.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertex_normals: vertices must be shaped (B, V, 3), got {tuple(vertices.shape)}")
    needs_grad = torch.is_grad_enabled() and vertices.requires_grad
    if vertices.device.type == "cpu" and vertices.dtype in (torch.float32, torch.float64) and not needs_grad:
        kernel = _normals_kernel()
        if kernel is not None:
            out = torch.zeros_like(vertices, memory_format=torch.contiguous_format)
            kernel(vertices.detach().contiguous().numpy(), triangles.to(torch.int64).contiguous().numpy(),
                   _SLIVER, out.numpy())
            return out
    corners = vertices[:, triangles]  # (B, T, 3, 3)
    face = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)
    face = face / face.norm(dim=-1, keepdim=True).clamp(min=_SLIVER)
    summed = torch.zeros_like(vertices)
    for corner in range(3):
        summed.index_add_(1, triangles[:, corner], face)
    return summed / summed.norm(dim=-1, keepdim=True).clamp(min=0.1)  # ~0 where all neighbours are slivers


@functools.lru_cache(maxsize=1)
def _normals_kernel():
    """Compiled vertex-normal loop (numba, imported and compiled on first use), or None."""
    try:
        from numba import njit
    except Exception as error:  # ImportError or a broken llvmlite
        logger.info("numba unavailable (%s); vertex normals use torch", error)
        return None

    @njit(cache=False, nogil=True)  # serial: see render._numba_kernels on numba's threading layers
    def normals(vertices, triangles, sliver, out):
        for b in range(vertices.shape[0]):
            for t in range(triangles.shape[0]):
                i0, i1, i2 = triangles[t, 0], triangles[t, 1], triangles[t, 2]
                ux = vertices[b, i1, 0] - vertices[b, i0, 0]
                uy = vertices[b, i1, 1] - vertices[b, i0, 1]
                uz = vertices[b, i1, 2] - vertices[b, i0, 2]
                vx = vertices[b, i2, 0] - vertices[b, i0, 0]
                vy = vertices[b, i2, 1] - vertices[b, i0, 1]
                vz = vertices[b, i2, 2] - vertices[b, i0, 2]
                nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
                length = max(np.sqrt(nx * nx + ny * ny + nz * nz), sliver)
                nx, ny, nz = nx / length, ny / length, nz / length
                for i in (i0, i1, i2):
                    out[b, i, 0] += nx
                    out[b, i, 1] += ny
                    out[b, i, 2] += nz
            for v in range(vertices.shape[1]):
                length = max(np.sqrt(out[b, v, 0] ** 2 + out[b, v, 1] ** 2 + out[b, v, 2] ** 2), 0.1)
                out[b, v, 0] /= length
                out[b, v, 1] /= length
                out[b, v, 2] /= length

    return normals


_SLIVER = 1e-6  # |cross product| (twice the area) below which a triangle's normal is scaled down


# ----------------------------------------------------------------------------- pose and camera


def euler_to_rotation(angles: Tensor) -> Tensor:
    """Rotation matrices from Deep3DFaceRecon Euler angles.

    Args:
        angles: (B, 3) radians (pitch about x, yaw about y, roll about z).

    Returns:
        (B, 3, 3) R = Rz(roll) @ Ry(yaw) @ Rx(pitch), acting on column vectors (p' = R p).
    """
    if not isinstance(angles, Tensor) or angles.dim() != 2 or angles.shape[1] != 3:
        shape = tuple(angles.shape) if isinstance(angles, Tensor) else type(angles).__name__
        raise ValueError(f"euler_to_rotation: angles must be shaped (B, 3) (pitch, yaw, roll in radians), "
                         f"got {shape}")
    cos, sin = torch.cos(angles), torch.sin(angles)
    cx, cy, cz = cos.unbind(-1)
    sx, sy, sz = sin.unbind(-1)
    # Rz @ Ry @ Rx written out
    rows = [
        cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
        sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
        -sy, cy * sx, cy * cx,
    ]
    return torch.stack(rows, dim=-1).reshape(-1, 3, 3)


def transform(vertices: Tensor, angle: Tensor, trans: Tensor) -> Tensor:
    """Rigid pose: rotate about the model origin, then translate (Deep3DFaceRecon ``transform``).

    Args:
        vertices: (B, V, 3) model-frame positions.
        angle: (B, 3) pitch, yaw, roll in radians.
        trans: (B, 3) translation (model units).

    Returns:
        (B, V, 3) posed positions in the world frame (x right, y up, z towards the camera).
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"transform: vertices must be shaped (B, V, 3), got {tuple(vertices.shape)}")
    _check_batch("trans", trans, 3, "transform")
    if angle.shape[0] != vertices.shape[0] or trans.shape[0] != vertices.shape[0]:
        raise ValueError(f"transform: batch sizes differ: vertices {vertices.shape[0]}, angle "
                         f"{angle.shape[0]}, trans {trans.shape[0]}")
    rotation = euler_to_rotation(angle).to(vertices.dtype)
    return vertices @ rotation.transpose(1, 2) + trans.to(vertices.dtype)[:, None, :]


@dataclasses.dataclass(frozen=True)
class Camera(JsonConfig):
    """Pinhole camera looking down -z of the world frame from (0, 0, distance) (Deep3DFaceRecon)."""

    focal: float = 1015.0  # focal length in pixels at image_size (Deep3DFaceRecon: 1015 at 224)
    image_size: int = 224  # reference size of `focal`: at size S the focal length is focal * S / image_size
    distance: float = 10.0  # camera distance from the world origin along +z (model units)

    def __post_init__(self):
        if not (self.focal > 0 and self.image_size > 0 and self.distance > 0):
            raise ValueError(f"Camera: focal, image_size and distance must be positive, got {self}")

    def focal_pixels(self, image_size: int) -> float:
        """Focal length in pixels for an image of `image_size` pixels."""
        return self.focal * image_size / self.image_size


def to_camera(vertices: Tensor, camera: Camera | None = None) -> Tensor:
    """World frame -> camera frame: (x, y, camera.distance - z), so z is the depth in front of the camera.

    Args:
        vertices: (B, V, 3) world-frame positions (the output of :func:`transform`).
        camera: the Camera (default Camera()).

    Returns:
        (B, V, 3) camera-frame positions.
    """
    camera = Camera() if camera is None else camera
    return torch.cat([vertices[..., :2], camera.distance - vertices[..., 2:3]], dim=-1)


def project_camera(points: Tensor, camera: Camera | None, image_size: int) -> tuple[Tensor, Tensor]:
    """Perspective projection of camera-frame points (see :func:`to_camera`).

    Args:
        points: (B, V, 3) camera-frame positions (z = depth > 0 in front of the camera).
        camera: the Camera (default Camera()); its focal length is scaled to `image_size`.
        image_size: output image size S in pixels.

    Returns:
        pixels (B, V, 2): x right, y down, pixel centres at integers, principal point ((S-1)/2, (S-1)/2);
        depth (B, V): the camera-frame z.
    """
    camera = Camera() if camera is None else camera
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"project: vertices must be shaped (B, V, 3), got {tuple(points.shape)}")
    focal = camera.focal_pixels(image_size)
    centre = (image_size - 1) / 2.0
    depth = points[..., 2]
    x = focal * points[..., 0] / depth + centre
    y = centre - focal * points[..., 1] / depth
    return torch.stack([x, y], dim=-1), depth


def project(vertices: Tensor, camera: Camera | None = None, image_size: int = 224) -> tuple[Tensor, Tensor]:
    """Project world-frame vertices (the output of :func:`transform`) to pixels.

    Args:
        vertices: (B, V, 3) world-frame positions.
        camera: the Camera (default Camera(): focal 1015 at 224 px, distance 10).
        image_size: output image size S in pixels.

    Returns:
        pixels (B, V, 2) with x right and y down (pixel centres at integers), and depth (B, V) in front
        of the camera (camera.distance - z).
    """
    return project_camera(to_camera(vertices, camera), camera, image_size)


def rotation_angle_deg(angles: Tensor) -> Tensor:
    """Total rotation angle in degrees of each (B, 3) Euler triple (useful for pose statistics)."""
    rotation = euler_to_rotation(angles)
    trace = rotation.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1.0, 1.0)))

