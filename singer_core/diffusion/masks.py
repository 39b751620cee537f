"""Hallo's face-locator image and full/face/lip region masks (hallo/utils/util.py `get_mask`), made from a
face box (and optional 68-point landmarks) instead of MediaPipe's 478 landmarks.

Hallo: face rectangle = the silhouette landmarks' box expanded by face_expand_ratio (1.2) -> the face-locator
image (binary, 3 channels, image size); lip rectangle = the lip landmarks' box expanded by 2.0; both resized
to the latent size (64 x 64) and Gaussian-blurred (kernel 51 and 31 at 64 px), min-max normalised; then
full = 1 - blurred face ("background"), face = blurred face - blurred lip (clipped at 0), lip = blurred lip.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from ..face.crop import HALLO_EXPAND_RATIO
from .audio_modules import RegionMasks

logger = logging.getLogger(__name__)

LIP_EXPAND_RATIO = 2.0  # Hallo's expansion of the lip landmarks' box
FACE_BLUR_AT_64 = 51  # Gaussian kernel of the face mask at a 64-pixel latent (scaled with the latent side)
LIP_BLUR_AT_64 = 31  # Gaussian kernel of the lip mask at a 64-pixel latent
# mouth box inside a face box as fractions (x0, y0, x1, y1) when no landmarks are known: the ArcFace template's
# mouth corners (x 0.371 .. 0.630, y 0.824) with a lip height of 0.1 of the face box
BOX_LIP_FRACTIONS = (0.371, 0.774, 0.630, 0.874)


@dataclasses.dataclass(frozen=True)
class FaceMasks:
    """Masks of one portrait crop.

    locator_image: (1, 3, S, S) float32 0/1 face rectangle for the face locator (S = 8 x latent side);
    full, face, lip: (1, 1, h, w) float32 in [0, 1] at latent resolution (Hallo's sep_background,
    sep_face, sep_lip); face_box, lip_box: the rectangles (x0, y0, x1, y1) in crop pixels.
    """

    locator_image: torch.Tensor
    full: torch.Tensor
    face: torch.Tensor
    lip: torch.Tensor
    face_box: tuple[float, float, float, float]
    lip_box: tuple[float, float, float, float]

    def region_masks(self, frames: int) -> RegionMasks:
        """The audio modules' RegionMasks for a clip of `frames` frames (the same masks every frame)."""
        full, face, lip = (m.expand(-1, frames, -1, -1) for m in (self.full, self.face, self.lip))
        return RegionMasks.from_latent_masks(full, face, lip)


def _expand(x0: float, y0: float, x1: float, y1: float, ratio: float) -> tuple[float, float, float, float]:
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * ratio / 2, (y1 - y0) * ratio / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def _rectangle(box: tuple[float, float, float, float], size: int, scale: float) -> np.ndarray:
    """(size, size) float32 0/1 rectangle of `box` (crop pixels) drawn at `scale` output pixels per crop pixel;
    pixel (i, j) is inside when its centre is."""
    centres = (np.arange(size) + 0.5) / scale
    cols = (centres >= box[0]) & (centres < box[2])
    rows = (centres >= box[1]) & (centres < box[3])
    return (rows[:, None] & cols[None, :]).astype(np.float32)


def _blurred(rect: np.ndarray, kernel: int) -> np.ndarray:
    import cv2

    kernel = max(1, kernel) | 1
    blurred = cv2.GaussianBlur(rect, (kernel, kernel), 0) if kernel > 1 else rect
    low, high = float(blurred.min()), float(blurred.max())
    if high - low < 1e-6:  # constant (box covers all or nothing): keep as is, as min-max cannot scale it
        return blurred
    return (blurred - low) / (high - low)


def face_masks(crop_size: int, latent_size: int, face_box, *, landmarks=None, lip_box=None,
               face_expand_ratio: float = HALLO_EXPAND_RATIO, lip_expand_ratio: float = LIP_EXPAND_RATIO,
               locator_size: int | None = None) -> FaceMasks:
    """Hallo's face-locator image and full/face/lip masks for a square crop.

    crop_size: side of the crop in pixels; latent_size: side of the latent (crop_size / VAE factor);
    face_box: (x, y, w, h) face box in crop pixels (a detector box; with landmarks the landmarks' box of
    points 0-26 is used instead); landmarks: optional (68, 2) crop-pixel landmarks (lip box = points 48-67);
    lip_box: optional (x, y, w, h) lip box in crop pixels (else from the landmarks, else `BOX_LIP_FRACTIONS`
    of the face box); face_expand_ratio: Hallo 1.2; lip_expand_ratio: Hallo 2.0; locator_size: side of the
    face-locator image (default 8 x latent_size).
    """
    if latent_size % 8:
        raise ValueError(f"face_masks: latent_size must be divisible by 8 (four UNet depths), got {latent_size}")
    locator_size = 8 * latent_size if locator_size is None else int(locator_size)
    if landmarks is not None:
        points = np.asarray(landmarks, dtype=np.float64)
        if points.shape != (68, 2):
            raise ValueError(f"face_masks: landmarks must be (68, 2) crop pixels, got {points.shape}")
        face = (*points[:27].min(0), *points[:27].max(0))
        lip = (*points[48:68].min(0), *points[48:68].max(0))
    else:
        x, y, w, h = (float(v) for v in tuple(face_box)[:4])
        if not (w > 0 and h > 0):
            raise ValueError(f"face_masks: face_box must have positive size, got {tuple(face_box)[:4]}")
        face = (x, y, x + w, y + h)
        fx0, fy0, fx1, fy1 = BOX_LIP_FRACTIONS
        lip = (x + fx0 * w, y + fy0 * h, x + fx1 * w, y + fy1 * h)
    if lip_box is not None:
        x, y, w, h = (float(v) for v in tuple(lip_box)[:4])
        lip = (x, y, x + w, y + h)
    face = _expand(*face, face_expand_ratio)
    lip = _expand(*lip, lip_expand_ratio)
    # 1. the face locator's binary rectangle at its own resolution
    locator = _rectangle(face, locator_size, locator_size / crop_size)
    # 2. blurred, normalised region masks at latent resolution (kernels scaled from Hallo's 64-px sizes)
    scale = latent_size / crop_size
    face_soft = _blurred(_rectangle(face, latent_size, scale), round(FACE_BLUR_AT_64 * latent_size / 64))
    lip_soft = _blurred(_rectangle(lip, latent_size, scale), round(LIP_BLUR_AT_64 * latent_size / 64))
    full = 1.0 - face_soft
    face_only = np.clip(face_soft - lip_soft, 0.0, 1.0)

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]

    return FaceMasks(locator_image=as_tensor(locator).expand(-1, 3, -1, -1).contiguous(), full=as_tensor(full),
                     face=as_tensor(face_only), lip=as_tensor(lip_soft), face_box=tuple(map(float, face)),
                     lip_box=tuple(map(float, lip)))
