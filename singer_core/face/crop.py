"""Face crop and paste-back for portraits and videos: box expansion (Hallo's face expand ratio 1.2), square
crops with an exact pixel transform, temporal box smoothing over missed detections, and feathered paste-back
of a generated face into the full image."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from .detect import Box

logger = logging.getLogger(__name__)

HALLO_EXPAND_RATIO = 1.2  # Hallo's face_expand_ratio


@dataclasses.dataclass(frozen=True)
class CropTransform:
    """Where a square crop came from: the crop's `size` x `size` pixels cover the image square
    [x0, x0 + side) x [y0, y0 + side) (integer image pixels, possibly past the image edge).

    Pixel centres follow OpenCV's resize convention: crop pixel centre u lies at image coordinate
    x = x0 + (u + 0.5) * side / size - 0.5 (and likewise for y).
    """

    x0: int  # left column of the square in image pixels (negative: starts left of the image)
    y0: int  # top row of the square in image pixels
    side: int  # side of the square in image pixels
    size: int  # side of the crop in crop pixels
    image_height: int  # H of the image it was cut from
    image_width: int  # W of the image it was cut from

    @property
    def scale(self) -> float:
        """Image pixels per crop pixel."""
        return self.side / self.size

    def to_image(self, points) -> np.ndarray:
        """Crop pixel coordinates (..., 2) as (x, y) -> image pixel coordinates (..., 2), float64."""
        points = np.asarray(points, dtype=np.float64)
        origin = np.array([self.x0, self.y0], dtype=np.float64)
        return origin + (points + 0.5) * self.scale - 0.5

    def to_crop(self, points) -> np.ndarray:
        """Image pixel coordinates (..., 2) as (x, y) -> crop pixel coordinates (..., 2), float64."""
        points = np.asarray(points, dtype=np.float64)
        origin = np.array([self.x0, self.y0], dtype=np.float64)
        return (points - origin + 0.5) / self.scale - 0.5

    def xyxy(self) -> tuple[int, int, int, int]:
        """The crop square in image pixels as (x0, y0, x1, y1), x1 = x0 + side."""
        return self.x0, self.y0, self.x0 + self.side, self.y0 + self.side


def expand_box(box, ratio: float = HALLO_EXPAND_RATIO) -> Box:
    """Scale a box about its centre.

    Args:
        box: Box or (x, y, w, h[, score]).
        ratio: factor on width and height (> 0): 1.2 is Hallo's face expansion; 1 / 0.8 = 1.25 gives the
            SINGER crop where the face spans 0.8 of the crop side.

    Returns:
        Box with the same centre and score, w and h times ratio.
    """
    box = _as_box(box, "expand_box")
    if not ratio > 0:
        raise ValueError(f"expand_box: ratio must be > 0, got {ratio!r}")
    cx, cy = box.center
    w, h = box.w * ratio, box.h * ratio
    return Box(cx - w / 2, cy - h / 2, w, h, box.score)


def square_box(box) -> Box:
    """The square with the box's centre and side max(w, h)."""
    box = _as_box(box, "square_box")
    side = max(box.w, box.h)
    cx, cy = box.center
    return Box(cx - side / 2, cy - side / 2, side, side, box.score)


def crop_transform(box, size: int, image_shape: Sequence[int]) -> CropTransform:
    """The CropTransform square_crop uses for `box`: side round(max(w, h)) (at least 1), centred on the box
    centre, its corner rounded to whole image pixels (so the crop is exact, off the box by <= 0.5 px).

    Args:
        box: Box or (x, y, w, h[, score]) in image pixels.
        size: crop side in pixels (>= 1).
        image_shape: (H, W, ...) of the image.
    """
    box = _as_box(box, "crop_transform")
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"crop_transform: size must be a positive integer, got {size!r}")
    height, width = int(image_shape[0]), int(image_shape[1])
    side = max(1, int(round(max(box.w, box.h))))
    cx, cy = box.center
    x0, y0 = int(np.floor(cx - side / 2 + 0.5)), int(np.floor(cy - side / 2 + 0.5))
    if x0 >= width or y0 >= height or x0 + side <= 0 or y0 + side <= 0:
        raise ValueError(f"crop_transform: the box {tuple(round(v, 1) for v in box[:4])} lies entirely outside "
                         f"the {width}x{height} image; check the box coordinates (x, y, w, h in pixels)")
    return CropTransform(x0=x0, y0=y0, side=side, size=int(size), image_height=height, image_width=width)


def square_crop(image: np.ndarray, box, size: int, *, pad: str | Sequence[float] = "replicate"
                ) -> tuple[np.ndarray, CropTransform]:
    """Cut the square around a box and resize it to size x size.

    The square is crop_transform(box): side max(w, h), centred on the box. Parts past the image edge are
    filled by repeating the edge pixels (pad="replicate") or with a colour (pad=(r, g, b) in the image's
    value range). Downscaling uses area averaging (no aliasing), upscaling bilinear interpolation.

    Args:
        image: (H, W, C) uint8 or float32 numpy array.
        box: Box or (x, y, w, h[, score]) in image pixels.
        size: output side in pixels.
        pad: "replicate" or a colour with C values.

    Returns:
        crop (size, size, C) of the image's dtype, and the CropTransform that maps it back.
    """
    import cv2

    image = _as_image(image, "square_crop")
    transform = crop_transform(box, size, image.shape)
    region = _cut(cv2, image, transform, pad)
    return _resize(cv2, region, transform.size), transform


def paste_back(image: np.ndarray, generated_crop: np.ndarray, transform: CropTransform, *,
               feather: float = 0.1, mask: np.ndarray | None = None) -> np.ndarray:
    """Blend a (generated) crop back into the image it was cut from, with a feathered square mask.

    The crop is resized to the square's side in image pixels and blended as
    out = image * (1 - m) + crop * m, where m is the product of two smoothstep ramps (one per axis) that rise
    from 0 at the square's edge to 1 at `feather` * side inside it, times the optional `mask`. m is
    continuous (C1) and 0 on the square's border, so the result is continuous with the untouched image;
    pasting the unmodified crop reproduces the image up to the crop's resampling error (exactly when
    side == size).

    Args:
        image: (H, W, C) uint8 or float32, the image square_crop cut from (H, W as in transform).
        generated_crop: (S, S, C) of the image's dtype; any S (resized to transform.side).
        transform: the CropTransform returned by square_crop.
        feather: ramp width as a share of the square's side (0 .. 0.5; 0 = hard edge).
        mask: optional (S, S) or (S, S, 1) float in 0..1 in crop pixels (e.g. a face mask), multiplied in.

    Returns:
        A new (H, W, C) image of the input's dtype.
    """
    import cv2

    image = _as_image(image, "paste_back")
    crop = _as_image(generated_crop, "paste_back")
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"paste_back: feather must be in [0, 0.5], got {feather!r}")
    if image.shape[:2] != (transform.image_height, transform.image_width):
        raise ValueError(f"paste_back: image is {image.shape[1]}x{image.shape[0]} but the crop was cut from a "
                         f"{transform.image_width}x{transform.image_height} image")
    if crop.dtype != image.dtype:
        raise ValueError(f"paste_back: generated_crop is {crop.dtype} but the image is {image.dtype}; convert "
                         "one (uint8 holds 0..255, float32 0..1 or the image's own float range)")
    if crop.shape[0] != crop.shape[1] or crop.shape[2] != image.shape[2]:
        raise ValueError(f"paste_back: generated_crop must be square with {image.shape[2]} channels, got shape "
                         f"{crop.shape}")

    # 1. the crop and its mask in image pixels over the square
    side = transform.side
    resized = _resize(cv2, crop, side).astype(np.float32)
    weight = _feather_ramp(side, feather)
    weight = weight[:, None] * weight[None, :]
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float32)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
            raise ValueError(f"paste_back: mask must be (S, S) or (S, S, 1), got shape {mask.shape}")
        weight = weight * np.clip(_resize(cv2, mask[..., None], side)[..., 0], 0.0, 1.0)

    # 2. blend where the square overlaps the image
    out = image.copy()
    x0, y0 = max(0, transform.x0), max(0, transform.y0)
    x1 = min(transform.image_width, transform.x0 + side)
    y1 = min(transform.image_height, transform.y0 + side)
    rows = slice(y0 - transform.y0, y1 - transform.y0)
    cols = slice(x0 - transform.x0, x1 - transform.x0)
    m = weight[rows, cols, None]
    blended = image[y0:y1, x0:x1].astype(np.float32) * (1.0 - m) + resized[rows, cols] * m
    if image.dtype == np.uint8:
        blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = blended.astype(image.dtype, copy=False)
    return out


def smooth_boxes(boxes, window: int = 7) -> np.ndarray:
    """Temporally smooth a box track with missed detections.

    1. Rows that are NaN (missed detections) are filled by linear interpolation between the nearest
       detected frames; leading and trailing gaps repeat the first / last detection.
    2. Each column is averaged over a centred window of `window` frames; near the ends the window shrinks
       symmetrically (to 2 * distance + 1 frames), so a box moving at constant velocity is unchanged and
       the track is not pulled towards its end points.
    The columns are smoothed independently, so any linear box parametrisation works ((x, y, w, h),
    (x0, y0, x1, y1), (cx, cy, side, ...)).

    Args:
        boxes: (T, K) float, one box per frame (K = 4 typically), NaN rows for frames without a detection.
        window: frames in the moving average (odd, >= 1; 1 only fills gaps).

    Returns:
        (T, K) float64.
    """
    boxes = np.array(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[0] == 0:
        raise ValueError(f"smooth_boxes: boxes must be (T, K) with T >= 1, got shape {boxes.shape}")
    if isinstance(window, bool) or int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"smooth_boxes: window must be an odd integer >= 1, got {window!r}")
    found = ~np.isnan(boxes).any(axis=1)
    if not found.any():
        raise ValueError("smooth_boxes: no frame has a box (every row is NaN); nothing to interpolate")

    # 1. fill gaps by interpolation
    frames = np.arange(boxes.shape[0])
    for column in range(boxes.shape[1]):
        boxes[:, column] = np.interp(frames, frames[found], boxes[found, column])

    # 2. centred moving average with symmetric shrinking at the ends (prefix sums)
    half = window // 2
    count = boxes.shape[0]
    reach = np.minimum(half, np.minimum(frames, count - 1 - frames))
    prefix = np.concatenate([np.zeros((1, boxes.shape[1])), np.cumsum(boxes, axis=0)])
    return (prefix[frames + reach + 1] - prefix[frames - reach]) / (2 * reach + 1)[:, None]


# --------------------------------------------------------------------------------------------------------
# helpers


def _as_box(box, who: str) -> Box:
    if isinstance(box, Box):
        return box
    values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
    if len(values) not in (4, 5) or not np.isfinite(values).all():
        raise ValueError(f"{who}: box must be (x, y, w, h) or (x, y, w, h, score) of finite numbers, got {box!r}")
    if values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"{who}: box width and height must be > 0, got w={values[2]}, h={values[3]}")
    return Box(*values)


def _as_image(image, who: str) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{who}: image must be (H, W, C), got shape {image.shape}")
    if image.dtype not in (np.uint8, np.float32):
        raise ValueError(f"{who}: image must be uint8 or float32, got {image.dtype}; convert it with "
                         "image.astype(np.float32) (values 0..1) or to uint8 (0..255)")
    return image


def _cut(cv2, image: np.ndarray, transform: CropTransform, pad) -> np.ndarray:
    """The (side, side, C) image square, padded past the edges."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = transform.xyxy()
    inner = image[max(0, y0):min(height, y1), max(0, x0):min(width, x1)]
    borders = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    if not any(borders):
        return inner
    if isinstance(pad, str):
        if pad != "replicate":
            raise ValueError(f"square_crop: pad must be 'replicate' or a colour tuple, got {pad!r}")
        region = cv2.copyMakeBorder(inner, *borders, cv2.BORDER_REPLICATE)
    else:
        colour = [float(v) for v in np.asarray(pad, dtype=np.float64).reshape(-1)]
        if len(colour) != image.shape[2]:
            raise ValueError(f"square_crop: pad colour needs {image.shape[2]} values, got {pad!r}")
        region = cv2.copyMakeBorder(inner, *borders, cv2.BORDER_CONSTANT, value=colour)
    return region.reshape(transform.side, transform.side, image.shape[2])


def _resize(cv2, image: np.ndarray, size: int) -> np.ndarray:
    """Square (S, S, C) -> (size, size, C): area averaging down, bilinear up, untouched when equal."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    channels = image.shape[2]
    interpolation = cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interpolation)
    return out.reshape(size, size, channels)


def _feather_ramp(side: int, feather: float) -> np.ndarray:
    """(side,) weights: smoothstep from 0 at the square's edges to 1 at feather * side inside."""
    if feather <= 0:
        return np.ones(side, dtype=np.float32)
    ramp = feather * side
    centres = np.arange(side, dtype=np.float64) + 0.5
    distance = np.minimum(centres, side - centres)  # to the nearest edge, in pixels
    t = np.clip(distance / ramp, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)
