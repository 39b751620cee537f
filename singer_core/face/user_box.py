"""Face boxes that do not come from a detector: typed by the user ("x,y,w,h" pixels), the bounding box of a
painted mask (ComfyUI's mask editor), or the box of known 68-point landmarks (the SynthSinger renderer's), so
cropping and sampling never depend on a detector being installed."""

from __future__ import annotations

import logging
import math

import numpy as np

from .detect import Box

logger = logging.getLogger(__name__)

BOX_TEXT_HELP = "write it as 'x, y, w, h' in pixels of the image (left, top, width, height), e.g. '120, 80, 260, 300'"


def check_box(box: Box, width: int, height: int, who: str) -> Box:
    """The box unchanged if it has positive size and overlaps the width x height image; ValueError otherwise."""
    values = tuple(float(v) for v in tuple(box)[:4])
    if not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"{who}: the face box {values} needs finite numbers and a positive width and height; "
                         + BOX_TEXT_HELP)
    x, y, w, h = values
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"{who}: the face box {values} lies outside the {width}x{height} image; "
                         + BOX_TEXT_HELP)
    return Box(x, y, w, h, float(tuple(box)[4]) if len(tuple(box)) > 4 else 1.0)


def parse_box_text(text: str | None, width: int, height: int, who: str) -> Box | None:
    """A face box from "x, y, w, h" (pixels; commas, spaces or semicolons between; brackets allowed); None for
    an empty text. width, height: the image's size, which the box must overlap."""
    if text is None or not str(text).strip():
        return None
    cleaned = str(text).strip().strip("()[]").replace(";", ",").replace(" ", ",")
    parts = [part for part in cleaned.split(",") if part]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"{who}: cannot read the face box {text!r}; {BOX_TEXT_HELP}") from None
    if len(values) != 4:
        raise ValueError(f"{who}: the face box {text!r} has {len(values)} numbers, needs 4; {BOX_TEXT_HELP}")
    return check_box(Box(*values), width, height, who)


def box_from_mask(mask, who: str, threshold: float = 0.5) -> Box:
    """The bounding box (pixels, x1 = last column + 1) of mask > threshold.

    mask: (H, W) float 0..1 (numpy or torch; (1, H, W) accepted). An empty mask is an error saying how to paint one.
    """
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().float().numpy()
    mask = np.asarray(mask, dtype=np.float32)
    mask = mask[0] if mask.ndim == 3 and mask.shape[0] == 1 else mask
    if mask.ndim != 2:
        raise ValueError(f"{who}: the face mask must be one (H, W) mask, got shape {mask.shape}")
    rows = np.flatnonzero((mask > threshold).any(axis=1))
    cols = np.flatnonzero((mask > threshold).any(axis=0))
    if rows.size == 0:
        raise ValueError(f"{who}: the face mask is empty (no pixel above {threshold}); paint over the face in the "
                         "mask editor (right-click the image in Load Image > Open in MaskEditor) or disconnect it")
    return Box(float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0]))


def box_from_landmarks(landmarks) -> Box:
    """The box of 68-point (iBUG) landmarks' jaw line and brows (points 0-26), as the face masks use it.

    landmarks: (68, 2) pixels (x, y).
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise ValueError(f"box_from_landmarks: landmarks must be (68, 2) finite pixels, got {points.shape}")
    (x0, y0), (x1, y1) = points[:27].min(0), points[:27].max(0)
    return Box(float(x0), float(y0), float(max(x1 - x0, 1e-3)), float(max(y1 - y0, 1e-3)))


__all__ = ["BOX_TEXT_HELP", "box_from_landmarks", "box_from_mask", "check_box", "parse_box_text"]
